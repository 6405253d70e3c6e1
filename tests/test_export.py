"""Export with dynamic sizes: the pooling rewrite, ONNX (+ ONNX Runtime), torch.export, TorchScript, torch.compile."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from pspnet_lib import predict
from pspnet_lib.cli import main
from pspnet_lib.inference.export import (
    ExportWrapper,
    check_onnx,
    export_onnx,
    export_program,
    export_torchscript,
    exportable_pooling,
    make_exportable,
    min_input_size,
    save_program,
)
from pspnet_lib.models.ppm import MatmulAdaptiveAvgPool2d, adaptive_pool_matrix, pyramid_adaptive_avg_pool2d

from .infer_utils import CLASSES, save_model_dir, tiny_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Three sizes, two of them not divisible by 8, and a batch size other than the example's.
SIZES = [(1, 64, 80), (1, 57, 91), (3, 33, 47)]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


# ---------------------------------------------------------------- pooling rewrite


@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 3)])
def test_matmul_pooling_equals_adaptive_avg_pool(bins):
    heights = list(range(1, 21)) + [31, 33, 64, 97]
    widths = [1, 2, 3, 5, 6, 7, 12, 13, 61]
    reference, rewrite = nn.AdaptiveAvgPool2d(bins), MatmulAdaptiveAvgPool2d(bins)
    for h in heights:
        for w in widths:
            x = torch.randn(2, 3, h, w, dtype=torch.float64)
            expected = reference(x)
            got = rewrite(x)
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, rtol=0, atol=1e-12), (bins, h, w)
    x32 = torch.randn(2, 4, 45, 59)
    assert torch.allclose(rewrite(x32), reference(x32), rtol=1e-6, atol=1e-6)
    # 16-bit inputs: as close to the float32 mean as AdaptiveAvgPool2d in that dtype is (within 2x)
    for dtype in (torch.float16, torch.bfloat16):
        x16 = x32.to(dtype)
        got, exact = rewrite(x16), reference(x16.float())
        assert got.dtype == dtype
        own_error = float((reference(x16).float() - exact).abs().max())
        assert float((got.float() - exact).abs().max()) <= 2 * own_error + 1e-6, dtype


def test_pyramid_pooling_all_bins_at_once():
    # one pair of products for every bin of the pyramid (what captured graphs run), 3-D input too
    x = torch.randn(2, 3, 17, 23, dtype=torch.float64)
    sizes = [1, 2, 3, 6, (2, 5)]
    for got, size in zip(pyramid_adaptive_avg_pool2d(x, sizes), sizes):
        assert torch.allclose(got, nn.AdaptiveAvgPool2d(size)(x), rtol=0, atol=1e-12)
    (got,) = pyramid_adaptive_avg_pool2d(x[0], [6])
    assert torch.allclose(got, nn.AdaptiveAvgPool2d(6)(x[0]), rtol=0, atol=1e-12)
    for bad in (0, (2, 0), (1, 2, 3), 2.5):
        with pytest.raises(ValueError, match="output_size must be a positive int or a pair"):
            pyramid_adaptive_avg_pool2d(x, [bad])


def test_pooling_matrix_bins_are_adaptive_avg_pool_bins():
    for size in (1, 2, 5, 6, 7, 13):
        for bins in (1, 2, 3, 6):
            matrix = adaptive_pool_matrix(size, bins, dtype=torch.float64)
            assert matrix.shape == (bins, size)
            assert torch.allclose(matrix.sum(1), torch.ones(bins, dtype=torch.float64))
            for i in range(bins):
                start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
                support = matrix[i].nonzero().flatten().tolist()
                assert support == list(range(start, end)), (size, bins, i)


def test_matmul_pooling_gradients_match():
    x = torch.randn(1, 2, 11, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    (grad_ref,) = torch.autograd.grad((nn.AdaptiveAvgPool2d(3)(x) * weights).sum(), x)
    (grad_new,) = torch.autograd.grad((MatmulAdaptiveAvgPool2d(3)(x) * weights).sum(), x)
    assert torch.allclose(grad_new, grad_ref, atol=1e-12)


def test_make_exportable_keeps_outputs_and_weights():
    model = tiny_model()
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        before = model(x)
    keys = list(model.state_dict())
    with exportable_pooling(model):
        assert all(isinstance(b.pool, MatmulAdaptiveAvgPool2d) for b in model.decode_head.ppm.branches)
        with torch.no_grad():
            inside = model(x)
    assert all(isinstance(b.pool, nn.AdaptiveAvgPool2d) for b in model.decode_head.ppm.branches)
    make_exportable(model)
    with torch.no_grad():
        after = model(x)
    assert list(model.state_dict()) == keys
    assert _relative_error(inside, before) < 1e-5 and _relative_error(after, before) < 1e-5
    make_exportable(model, enable=False)
    assert all(isinstance(b.pool, nn.AdaptiveAvgPool2d) for b in model.decode_head.ppm.branches)


# ---------------------------------------------------------------- ONNX


def test_onnx_dynamic_export_serves_every_size(model, tmp_path):
    path = export_onnx(model, tmp_path / "pspnet.onnx", height=64, width=80)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 3 and isinstance(dims[2], str) and isinstance(dims[3], str)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["pspnet_lib.output"] == "logits" and '"num_classes": 5' in props["pspnet_lib.config"]
    assert not any(
        node.op_type.startswith("AdaptiveAvg") or node.op_type == "GlobalAveragePool" for node in proto.graph.node
    )

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x)
        assert got.shape == (n, 5, h, w)
        assert _relative_error(torch.from_numpy(got), expected) <= 1e-4, (n, h, w)
    assert check_onnx(path, model, [(40, 50)]) <= 1e-4


def test_onnx_torchscript_exporter_with_preprocessing_matches_predict(model, tmp_path):
    path = export_onnx(
        model, tmp_path / "labels.onnx", height=48, width=64, preprocess=True, output="labels", exporter="torchscript"
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for h, w in [(48, 64), (37, 53)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (labels,) = session.run(None, {"images": image.transpose(2, 0, 1)[None]})
        assert labels.shape == (1, h, w)
        # uint8 in, class map out: the same answer predict() gives on the picture.
        assert np.array_equal(labels[0], predict(model, image, resize=False).mask.numpy())


def test_onnx_static_export_is_fixed_to_its_size(model, tmp_path):
    path = export_onnx(
        model, tmp_path / "static.onnx", dynamic=False, height=40, width=56, batch_size=1, exporter="torchscript"
    )
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 40, 56]
    assert check_onnx(path, model, [(40, 56)]) <= 1e-4


def test_onnx_missing_dependency_message(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'pspnet-lib\[onnx\]'"):
        export_onnx(model, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_training_mode_and_bad_options(tmp_path):
    model = tiny_model().train()
    with pytest.raises(ValueError, match="model.eval()"):
        export_program(model)
    model.eval()
    with pytest.raises(ValueError, match="unknown output"):
        ExportWrapper(model, output="masks")
    with pytest.raises(ValueError, match="at least 9x9"):
        export_program(model, height=8, width=32)
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        export_onnx(model, tmp_path / "m.onnx", exporter="tf")


# ---------------------------------------------------------------- torch.export, TorchScript, torch.compile


def test_torch_export_dynamic_shapes(model, tmp_path):
    program = export_program(model, height=64, width=80)
    path = save_program(program, tmp_path / "pspnet.pt2")
    loaded = torch.export.load(str(path)).module()
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            expected = model(x)
            got = loaded(x)
        assert got.shape == (n, 5, h, w)
        assert _relative_error(got, expected) <= 1e-4, (n, h, w)
    # Below output_stride + 1 pixels the program's guard refuses the input with a message.
    assert min_input_size(model) == 9
    with pytest.raises(Exception, match=">= 9"):
        loaded(torch.randn(1, 3, 8, 40))


def test_torchscript_trace_runs_at_any_size(model, tmp_path):
    path = export_torchscript(model, tmp_path / "pspnet.pt", height=48, width=64)
    with pytest.warns(FutureWarning):  # torch.jit is deprecated upstream; it still loads and runs
        scripted = torch.jit.load(str(path))
    # Without the profiling executor's per-shape re-optimisation, which only costs test time here.
    with torch.jit.optimized_execution(False), torch.no_grad():
        for n, h, w in SIZES[1:] + [(1, 5, 3)]:
            x = torch.randn(n, 3, h, w)
            assert _relative_error(scripted(x), model(x)) <= 1e-4, (n, h, w)


def test_torch_compile_fullgraph_dynamic(model):
    # fullgraph=True fails on any graph break; the eager backend checks the capture without
    # paying for code generation (the inductor backend compiles the same graph).
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    x = torch.randn(1, 3, 57, 91)
    with torch.no_grad():
        assert _relative_error(compiled(x), model(x)) <= 1e-5
    torch._dynamo.reset()


# ---------------------------------------------------------------- pspnet export


def test_export_cli(model, tmp_path, capsys, caplog):
    model.pretrained_cfg = {"classes": CLASSES}
    try:
        weights = save_model_dir(model, tmp_path / "weights")
    finally:
        model.pretrained_cfg = {}
    out = tmp_path / "model.onnx"
    args = [
        "export",
        "--weights",
        str(weights),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--height",
        "48",
        "--width",
        "64",
    ]
    assert main(args + ["--onnx-exporter", "torchscript", "--check"]) == 0
    printed = capsys.readouterr().out
    assert "dynamic shape" in printed and "max relative error" in printed
    assert '"road"' in {p.key: p.value for p in onnx.load(str(out)).metadata_props}["pspnet_lib.pretrained_cfg"]
    assert main(args) == 1 and "--overwrite" in caplog.text
    assert (
        main(
            [
                "export",
                "--weights",
                str(weights),
                "--format",
                "torchscript",
                "--out",
                str(tmp_path / "m.pt"),
                "--opset",
                "17",
            ]
        )
        == 1
    )
    assert "--check, --opset and --onnx-exporter apply to --format onnx only" in caplog.text
