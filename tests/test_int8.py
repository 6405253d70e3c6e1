"""Calibrated INT8: the quantized ONNX export, its calibration preprocessing, and optimize_for_inference(dtype="int8")."""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import build_pspnet, optimize_for_inference
from pspnet_lib._testing import randomize_batchnorm_, smooth_image
from pspnet_lib.cli import main
from pspnet_lib.runtime import FastPSPNet, compare_models

from .infer_utils import CLASSES, save_model_dir, tiny_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from pspnet_lib.inference.export import export_onnx  # noqa: E402
from pspnet_lib.inference.quantize import (  # noqa: E402
    calibration_images,
    check_int8_onnx,
    export_onnx_int8,
    load_onnx_runner,
    quantize_onnx,
)

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
RUNTIMES = [
    "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")),
]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _calibration(n=6, h=64, w=72):
    return [smooth_image(1, h, w, seed=100 + i) for i in range(n)]


@pytest.fixture(scope="module")
def fp32_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    export_onnx(model, path, height=64, width=64, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def int8_file(fp32_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "model_int8.onnx"
    quantize_onnx(fp32_file, path, _calibration())
    return path


@pytest.fixture(scope="module")
def fast_int8(model):
    """optimize_for_inference(dtype="int8") of the R18 test model, one per backend (built on first use)."""
    built = {}

    def get(backend):
        if backend not in built:
            built[backend] = optimize_for_inference(
                model, "int8", calibration=torch.cat(_calibration(4)), backend=backend
            )
        return built[backend]

    return get


def _write_pictures(folder, n, seed=0, size=(48, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        # Smooth pictures with edges, as uint8 RGB: a coarse random field upsampled, plus a box.
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.BILINEAR)
        array = np.asarray(image).copy()
        array[5:20, 8:30] = rng.integers(0, 256, 3)
        Image.fromarray(array).save(folder / f"pic_{i:02d}.png")
    return folder


# ---------------------------------------------------------------- the ONNX file


def test_int8_file_is_quantized_and_keeps_metadata(int8_file, fp32_file, model):
    proto = onnx.load(str(int8_file))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 20  # every convolution's weight is stored in int8
    # Per-channel: a convolution weight's scale has one value per output channel.
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in proto.graph.initializer if "scale" in t.name)
    # The classifier (the last convolution) keeps float weights by default; the first one is int8.
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {out: n for n in proto.graph.node for out in n.output}
    assert convs[-1].input[1] in {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert producers[convs[0].input[1]].op_type == "DequantizeLinear"
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["pspnet_lib.quantization"])["calibration_images"] == 6
    assert json.loads(props["pspnet_lib.quantization"])["float_layers"] == ["classifier"]
    assert json.loads(props["pspnet_lib.config"])["num_classes"] == model.config.num_classes
    assert int8_file.stat().st_size < 0.4 * fp32_file.stat().st_size


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_export_agrees_with_fp32_at_two_sizes(int8_file, model, runtime):
    run = load_onnx_runner(int8_file, runtime)
    for shape in [(1, 3, 64, 80), (2, 3, 97, 61)]:  # the second not a multiple of 8, batch 2
        x = smooth_image(*shape[:1], *shape[2:], seed=7)
        with torch.no_grad():
            ref = model(x)
        got = torch.from_numpy(run(x.numpy()))
        assert got.shape == ref.shape
        agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
        assert agree >= 0.98, (runtime, shape, agree)
        assert float((got - ref).abs().max() / ref.abs().max()) < 0.05


def test_static_int8_export(model, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx_int8(
        model, path, _calibration(3, 50, 70), dynamic=False, height=48, width=56, batch_size=1, exporter="torchscript"
    )
    stats = check_int8_onnx(path, model, _calibration(2, 64, 64))  # resized to the file's 48x56
    assert stats["argmax_agreement"] >= 0.98 and stats["pixels"] == 2 * 48 * 56


# ---------------------------------------------------------------- calibration preprocessing


def test_calibration_images_use_the_weights_preprocessing(model, tmp_path):
    folder = _write_pictures(tmp_path / "pics", 3)
    model.pretrained_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "inference": {"resize": [64, 32]}}
    try:
        images = calibration_images(folder, model)
    finally:
        model.pretrained_cfg = {}
    assert len(images) == 3 and images[0].shape == (1, 3, 32, 38)  # short side 40 -> 32, keep ratio
    raw = torch.from_numpy(np.array(Image.open(folder / "pic_00.png").convert("RGB"))).permute(2, 0, 1).float()
    resized = torch.nn.functional.interpolate(raw[None], size=(32, 38), mode="bilinear", align_corners=False)
    expected = (resized.round() / 255 - 0.5) / 0.25
    assert torch.allclose(images[0], expected, atol=0.02)
    assert len(calibration_images(folder, model, count=2)) == 2
    with pytest.raises(TypeError, match=r"takes the pictures first and the model second, got \(PSPNet, PosixPath\)"):
        calibration_images(model, folder)


def test_calibration_reads_arrays_of_the_models_channel_count(tmp_path):
    """N-channel models calibrate from .npy files, read as predict reads them (not only pictures)."""
    five = build_pspnet("resnet18", 2, in_channels=5).eval()
    five.pretrained_cfg = {"mean": [0.5] * 5, "std": [0.25] * 5}
    folder = tmp_path / "npy"
    folder.mkdir()
    arrays = [np.random.default_rng(i).integers(0, 256, (24, 20, 5), dtype=np.uint8) for i in range(2)]
    for i, array in enumerate(arrays):
        np.save(folder / f"{i}.npy", array)
    images = calibration_images(folder, five)
    assert len(images) == 2 and images[0].shape == (1, 5, 24, 20)
    expected = (torch.from_numpy(arrays[0]).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(images[0][0], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"calibration item 0 has shape \(1, 5, 24, 20\).*\(N, 3, H, W\)"):
        optimize_for_inference(build_pspnet("resnet18", 2).eval(), "int8", calibration=images)


def _input_scale(path) -> float:
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "images")
    init = {t.name: t for t in proto.graph.initializer}
    return float(onnx.numpy_helper.to_array(init[node.input[1]]))


def test_wrong_mean_std_changes_the_calibrated_scales(model, fp32_file, tmp_path):
    folder = _write_pictures(tmp_path / "pics", 2)
    fp32 = fp32_file
    scales = {}
    for name, cfg in {
        "right": {"mean": list(MEAN), "std": list(STD)},
        "wrong": {"mean": [0, 0, 0], "std": [1, 1, 1]},
    }.items():
        model.pretrained_cfg = cfg
        try:
            images = calibration_images(folder, model)
        finally:
            model.pretrained_cfg = {}
        quantize_onnx(fp32, tmp_path / f"{name}.onnx", images)
        scales[name] = _input_scale(tmp_path / f"{name}.onnx")
    # ImageNet-normalised pictures span about [-2.1, 2.6] (scale ~4.7/255); unnormalised 0..1 ones [0, 1].
    assert scales["right"] > 3 * scales["wrong"]
    assert 3.0 / 255 < scales["right"] < 5.0 / 255


# ---------------------------------------------------------------- the command line


def test_export_int8_cli(model, tmp_path, capsys, caplog):
    model.pretrained_cfg = {"classes": CLASSES}
    try:
        weights = save_model_dir(model, tmp_path / "weights")
    finally:
        model.pretrained_cfg = {}
    pics = _write_pictures(tmp_path / "pics", 5, size=(72, 56))
    out = tmp_path / "int8.onnx"
    argv = [
        "export",
        "--weights",
        str(weights),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--int8",
        "--calibration",
        str(pics),
        "--calibration-count",
        "3",
        "--check",
        "--onnx-exporter",
        "torchscript",
        "--height",
        "64",
        "--width",
        "64",
        "--float-layers",
        "classifier,first",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "int8 QDQ calibrated on 3 picture(s)" in text and "in float: classifier, first" in text
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(props["pspnet_lib.quantization"])["float_layers"] == ["classifier", "first"]
    assert "on 2 held-out picture(s): argmax agreement" in text
    assert out.exists()
    assert (
        main(["export", "--weights", str(weights), "--format", "onnx", "--out", str(tmp_path / "x.onnx"), "--int8"])
        == 1
    )
    assert "--int8 needs --calibration DIR" in caplog.text
    bad = ["export", "--weights", str(weights), "--format", "onnx", "--out", str(tmp_path / "x.onnx"), "--int8"]
    assert main([*bad, "--calibration", str(pics), "--float-layers", "stem"]) == 1
    assert "--float-layers 'stem': expected a comma-separated list of classifier, first, or none" in caplog.text
    assert main([*bad[:-1], "--float-layers", "none"]) == 1  # without --int8
    assert "--float-layers applies to --int8 only" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(
            [
                "export",
                "--weights",
                str(weights),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "x.onnx"),
                "--int8",
                "--calibration",
                str(empty),
            ]
        )
        == 1
    )
    assert "no pictures in" in caplog.text
    assert not (tmp_path / "x.onnx").exists()


def test_predict_fast_int8_cli(model, tmp_path, capsys, caplog, monkeypatch):
    import pspnet_lib.runtime.int8 as int8

    # The choice between the candidates is tested below; here the first one is kept untimed.
    monkeypatch.setattr(int8, "choose_fastest", lambda candidates, x, **kwargs: (next(iter(candidates)), {}))
    weights = save_model_dir(model, tmp_path / "weights")
    pics = _write_pictures(tmp_path / "pics", 3, size=(40, 33))
    (pics / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    argv = [
        "predict",
        str(pics),
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--fast",
        "--dtype",
        "int8",
        "--calibration-count",
        "4",
        "--no-resize",
    ]
    assert main(argv) == 1  # the broken file is reported and skipped (exit 1), the others are segmented
    assert "segmented 3 of 4" in capsys.readouterr().out
    mask = np.asarray(Image.open(out / "pic_00.png"))
    assert mask.shape == (33, 40) and mask.max() < 5
    assert (
        main(["predict", str(pics), "--weights", str(weights), "--out", str(tmp_path / "o2"), "--dtype", "int8"]) == 1
    )
    assert "--dtype int8 applies to --fast only" in caplog.text


# ---------------------------------------------------------------- optimize_for_inference(dtype="int8")


def _depth_model(depth):
    torch.manual_seed(0)
    return randomize_batchnorm_(
        build_pspnet(depth, num_classes=5, head_channels=32, aux_channels=16, ppm_channels=8)
    ).eval()


@pytest.mark.parametrize(
    "depth,backend",
    [
        ("resnet18", "onnxruntime"),
        pytest.param(
            "resnet18", "openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
        ),
        # ResNet-101 repeats ResNet-50's Bottleneck blocks; it is left out to keep the suite short
        # (benchmarks/deploy.py measures the real models' agreement).
        pytest.param("resnet50", "auto", marks=pytest.mark.slow),
    ],
)
def test_fast_int8_matches_fp32_at_an_odd_size(depth, backend, model, fast_int8):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if depth == "resnet18":  # the shared R18 test model
            fast = fast_int8(backend)
        else:
            model = _depth_model(depth)
            fast = optimize_for_inference(model, "int8", calibration=torch.cat(_calibration(4)), backend=backend)
    fell_back = any("falling back" in str(w.message) for w in caught)
    x = smooth_image(1, 57, 91, seed=3)
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == (1, 5, 57, 91)
    stats = compare_models(model, fast, [x])
    # The documented tolerance of the int8 path (docs/performance.md): argmax >= 98%, max rel. logit error <= 5e-2.
    assert stats["argmax_agreement"] >= 0.98, stats
    assert stats["max_rel_err"] <= 5e-2, stats
    if not fell_back:
        if backend == "auto":  # the fastest candidate, whichever it is, with what was measured
            assert fast.choice in fast.timings and fast.timings[fast.choice] == min(fast.timings.values())
        else:
            assert fast.backend == backend and fast.choice == f"{backend}-int8" and fast.timings is None
        assert fast.num_classes == 5 and fast.config.backbone == depth


def test_fast_int8_module_contract(fast_int8):
    fast = fast_int8("onnxruntime")
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()
    with pytest.raises(RuntimeError, match="cannot be moved"):
        fast.to(torch.float64)
    with pytest.raises(ValueError, match="expected an input of shape"):
        fast(torch.zeros(1, 4, 16, 16))
    result = fast.predict(np.zeros((40, 50, 3), dtype=np.uint8), resize=False)
    assert result.mask.shape == (40, 50)


def test_fast_int8_falls_back_with_a_warning_when_the_backend_is_missing(model, monkeypatch):
    import pspnet_lib.runtime.int8 as int8

    real = importlib.util.find_spec
    monkeypatch.setattr(
        int8.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.warns(RuntimeWarning, match="openvino not installed.*falling back to the bfloat16 fast path"):
        fast = optimize_for_inference(model, "int8", calibration=_calibration(1), backend="openvino")
    assert isinstance(fast, FastPSPNet) and fast.choice.startswith("fallback-") and fast.timings is None
    x = smooth_image(1, 33, 47, seed=1)
    assert compare_models(model, fast, [x])["argmax_agreement"] >= 0.98


def test_fast_int8_falls_back_without_int8_instructions(model, monkeypatch):
    import pspnet_lib.runtime.int8 as int8

    monkeypatch.setattr(int8, "native_int8_support", lambda device: (False, "no VNNI (test)"))
    with pytest.warns(RuntimeWarning, match="no VNNI"):
        fast = optimize_for_inference(model, torch.int8, calibration=_calibration(1))
    assert isinstance(fast, FastPSPNet)


def test_fast_int8_bad_arguments(model):
    with pytest.raises(ValueError, match="needs calibration images"):
        optimize_for_inference(model, "int8")
    with pytest.raises(ValueError, match="apply to dtype='int8' only"):
        optimize_for_inference(model, torch.bfloat16, calibration=_calibration(1))
    with pytest.raises(ValueError, match="expected normalised"):
        optimize_for_inference(model, "int8", calibration=[torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="backend must be one of"):
        optimize_for_inference(model, "int8", calibration=_calibration(1), backend="tensorrt")
    with pytest.raises(TypeError, match=r"calibration='pics' is a path.*calibration_images\('pics', model\)"):
        optimize_for_inference(model, "int8", calibration="pics")
    with pytest.raises(ValueError, match="unknown float layer.*'stem'"):
        quantize_onnx("unused.onnx", "unused_int8.onnx", _calibration(1), float_layers=["stem"])


def test_choose_fastest_times_interleaved_rounds_within_the_budget():
    from pspnet_lib.runtime.int8 import choose_fastest

    now = [0.0]
    calls = []

    def candidate(name, seconds):
        def run(x):
            calls.append(name)
            now[0] += seconds

        return run

    def broken(x):
        raise RuntimeError("cannot run this size")

    x = torch.zeros(1, 3, 8, 8)
    candidates = {"slow": candidate("slow", 0.5), "fast": candidate("fast", 0.2), "broken": broken}
    choice, medians = choose_fastest(candidates, x, budget_s=1.5, max_rounds=10, clock=lambda: now[0])
    assert choice == "fast" and medians == pytest.approx({"slow": 0.5, "fast": 0.2})  # "broken" left out
    # One untimed call each, then rounds of 0.7 s until 1.5 s are spent: 3 rounds, interleaved.
    assert calls == ["slow", "fast"] + ["slow", "fast"] * 3
    calls.clear()
    assert choose_fastest(candidates, x, budget_s=100.0, max_rounds=2, clock=lambda: now[0])[0] == "fast"
    assert len(calls) == 2 + 2 * 2  # max_rounds bounds it too
    calls.clear()
    choose_fastest({"slow": candidates["slow"]}, x, budget_s=0.0, clock=lambda: now[0])
    assert calls == ["slow", "slow"]  # at least one timed round
    with pytest.raises(RuntimeError, match="every candidate failed"):
        choose_fastest({"broken": broken}, x)


@pytest.mark.parametrize("winner", ["onnxruntime-int8", "fast-bf16"])
def test_auto_backend_returns_the_fastest_candidate(winner, model, fast_int8, monkeypatch):
    import pspnet_lib.runtime.int8 as int8
    import pspnet_lib.runtime.optimize as optimize

    # Deterministic: the int8 module is the one the other tests built, bf16 counts as native, and
    # the timings are given (choose_fastest's own logic is tested above).
    int8_module = copy.copy(fast_int8("onnxruntime"))  # a shallow copy: the shared module keeps its attributes
    monkeypatch.setattr(int8, "build_int8", lambda model, batches, backend: {"onnxruntime": int8_module})
    monkeypatch.setattr(optimize, "native_dtype_support", lambda dtype, device: (True, "test"))
    seen = {}

    def fake_choose(candidates, x, **kwargs):
        seen.update(candidates=set(candidates), shape=tuple(x.shape))
        timings = {name: (0.1 if name == winner else 0.3) for name in candidates}
        return winner, timings

    monkeypatch.setattr(int8, "choose_fastest", fake_choose)
    fast = optimize_for_inference(model, "int8", calibration=_calibration(2, 40, 52))
    assert seen == {"candidates": {"onnxruntime-int8", "fast-bf16"}, "shape": (1, 3, 40, 52)}  # a calibration image
    assert fast.choice == winner and fast.timings[winner] == 0.1 and set(fast.timings) == seen["candidates"]
    if winner == "fast-bf16":
        assert isinstance(fast, FastPSPNet) and fast.dtype == torch.bfloat16
    else:
        assert fast is int8_module and fast.backend == "onnxruntime"
    # An explicit back end is never timed against anything.
    monkeypatch.setattr(int8, "choose_fastest", lambda *a, **k: pytest.fail("timed an explicit backend"))
    assert (
        optimize_for_inference(model, "int8", calibration=_calibration(1), backend="onnxruntime").backend
        == "onnxruntime"
    )
