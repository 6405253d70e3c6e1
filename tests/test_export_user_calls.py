"""The export calls users write, exactly as they write them, on the plain model (no pspnet_lib helper).

Issue 23: ``torch.export.export(model, (x,), dynamic_shapes=...)`` with a batch-1 example and
``Dim("h", min=9)`` (the call PyTorch's own error message suggests) failed with ``Constraints
violated (h)! ... guard (512 % (512 + 512*((h-1)//8))) != 0``: the pyramid's matrix pooling,
used whenever ``torch.compiler.is_compiling()``, reshaped the feature map in a way the symbolic
solver could not prove. The library's ``export_program`` (batch-2 example) still worked, so no test
saw it. Here every route a user reaches for runs the model as built, checked against eager
PyTorch at sizes other than the example's (not multiples of 8, the smallest allowed, other batch
sizes). The library's own export functions are tested in test_export.py.
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch.export import Dim

from pspnet_lib.inference.export import min_input_size

from .infer_utils import tiny_model

# (batch, height, width): the example size, sizes that are not multiples of 8, the smallest a
# dynamic torch.export program accepts (output_stride + 1 = 9), and another batch size.
BATCH1 = [(1, 64, 64), (1, 57, 91), (1, 9, 17)]
BATCHES = BATCH1 + [(3, 33, 47)]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def expected(model):
    """Eager outputs for every shape above, computed once: ``{(n, h, w): (input, logits)}``."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        for shape in BATCHES:
            x = torch.randn(shape[0], 3, shape[1], shape[2], generator=generator)
            out[shape] = (x, model(x))
    return out


def _assert_matches(run, expected, shapes):
    for shape in shapes:
        x, logits = expected[shape]
        with torch.no_grad():
            got = torch.as_tensor(run(x))
        assert got.shape == logits.shape, shape
        error = float((got - logits).abs().max() / logits.abs().max())
        assert error <= 1e-4, (shape, error)


# ---------------------------------------------------------------- torch.export


def test_torch_export_batch1_example_dim_with_min(model, expected):
    # the regression's exact call: a batch-1 example, height and width Dim("...", min=9)
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {2: Dim("h", min=9), 3: Dim("w", min=9)}})
    _assert_matches(program.module(), expected, BATCH1)


def test_torch_export_batch_n_example_dynamic_batch(model, expected, tmp_path):
    x = torch.randn(2, 3, 64, 80)
    dynamic_shapes = {"x": {0: Dim("batch"), 2: Dim("height", min=9), 3: Dim("width", min=9)}}
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, tmp_path / "pspnet.pt2")
    _assert_matches(torch.export.load(tmp_path / "pspnet.pt2").module(), expected, BATCHES)


def test_torch_export_dims_without_min(model, expected):
    # Dim.DYNAMIC carries no minimum (and fails if anything specialises the size): export infers 9,
    # as for any stride-8 CNN
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}})
    _assert_matches(program.module(), expected, BATCH1)
    # A named Dim without min: PyTorch refuses it for every CNN that downsamples (its shape checks
    # specialise on feature maps of size 1; torchvision's resnet18 alike) and suggests the minimum;
    # the model adds no guard of its own to that suggestion (0.1.x's pooling added a modulo one).
    x = torch.randn(2, 3, 64, 80)
    with pytest.raises(Exception, match=r"Suggested fixes:\s+h = Dim\('h', min=9\)") as refusal:
        torch.export.export(model, (x,), dynamic_shapes={"x": {0: Dim("batch"), 2: Dim("h"), 3: Dim("w")}})
    assert "%" not in str(refusal.value) and min_input_size(model) == 9


# ---------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def _onnx_runner(ort, path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x.numpy()})[0]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None, reason="torch.onnx.export(dynamo=True) needs onnxscript"
)
def test_torch_onnx_export_dynamo(model, expected, ort, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    torch.onnx.export(
        model,
        (x,),
        tmp_path / "pspnet.onnx",
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: "batch", 2: "height", 3: "width"}},
    )
    _assert_matches(_onnx_runner(ort, tmp_path / "pspnet.onnx"), expected, BATCHES)


def test_torch_onnx_export_torchscript_based(model, expected, ort, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated upstream
        torch.onnx.export(
            model,
            (x,),
            tmp_path / "pspnet.onnx",
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={
                "images": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
        )
    _assert_matches(_onnx_runner(ort, tmp_path / "pspnet.onnx"), expected, BATCHES)


# ---------------------------------------------------------------- TorchScript


def test_torch_jit_trace(model, expected, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings for the model's Python input checks; jit is deprecated
        traced = torch.jit.trace(model, x)
        torch.jit.save(traced, tmp_path / "pspnet.pt")
        loaded = torch.jit.load(tmp_path / "pspnet.pt")
    with torch.jit.optimized_execution(False):  # skips the per-shape re-optimisation, test time only
        _assert_matches(loaded, expected, BATCHES)


# ---------------------------------------------------------------- a timm backbone


@pytest.mark.slow
def test_torch_export_batch1_dim_with_min_timm_convnext():
    # The same call on a timm encoder whose stages come back channels-last-strided (ConvNeXt's
    # permuted LayerNorms): the heads' stride guards at h // 8 failed with "Not all values of w ...
    # satisfy the generated guard (1 % (32*(w // 8))) != 0" before the encoder returned the input's
    # layout in captured graphs. timm's ConvNeXt class with one block per stage (export time
    # follows the graph size); its smallest input is 16 (a 4x4 patchifying stem).
    pytest.importorskip("timm")
    from pspnet_lib import PSPNet, PSPNetConfig
    from pspnet_lib.models.encoders.timm_encoder import TimmEncoder

    torch.manual_seed(0)
    encoder = TimmEncoder(
        "convnext_atto", output_stride=8, model_kwargs={"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16)}
    )
    config = PSPNetConfig(backbone="timm:convnext_atto", num_classes=2, head_channels=32, aux_channels=16)
    model = PSPNet(config, encoder=encoder).eval()
    smallest = min_input_size(model)
    assert smallest == 16
    x = torch.randn(1, 3, 64, 64)
    dynamic_shapes = {"x": {2: Dim("h", min=smallest), 3: Dim("w", min=smallest)}}
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes).module()
    for shape in ((1, 3, 57, 91), (1, 3, 16, 23)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
            assert torch.allclose(program(x), expected, atol=1e-5 * float(expected.abs().max()))
