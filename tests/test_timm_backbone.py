"""timm encoders under the pyramid (issue 25): output stride measured, weights offline, every path.

Real timm models throughout (tiny ones: convnext_atto, resnet18, efficientnet_b0,
mobilenetv3_small_050, regnety_002), random weights, 64-pixel inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

import pspnet_lib  # noqa: E402
from pspnet_lib import PSPNet, build_pspnet, load_pretrained  # noqa: E402
from pspnet_lib.hub.cache import OfflineError  # noqa: E402
from pspnet_lib.models.encoders.timm_encoder import TimmEncoder, reachable_strides  # noqa: E402

from .hub_utils import make_hf_cache  # noqa: E402

SMALL = {"head_channels": 32, "aux_channels": 16}
ROOT = Path(__file__).resolve().parents[1]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def convnext() -> PSPNet:
    torch.manual_seed(0)
    return build_pspnet("timm:convnext_atto", num_classes=3, **SMALL).eval()


@pytest.fixture(scope="module")
def tiny_convnext() -> PSPNet:
    """timm's ConvNeXt class with one block per stage (the layers of convnext_atto; export time follows the graph size)."""
    torch.manual_seed(0)
    tiny = TimmEncoder("convnext_atto", output_stride=8, model_kwargs={"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16)})
    config = pspnet_lib.PSPNetConfig(backbone="timm:convnext_atto", num_classes=2, **SMALL)
    return PSPNet(config, encoder=tiny).eval()


# ------------------------------------------------------------------ the stride, measured


@pytest.mark.parametrize(
    "name, stride",
    [
        ("convnext_atto", 8),
        ("resnet18", 8),
        ("efficientnet_b0", 8),
        ("mobilenetv3_small_050", 8),
        ("regnety_002", 8),
        ("convnext_atto", 16),
    ],
)
def test_allow_listed_family_reaches_the_output_stride(name, stride):
    model = build_pspnet(f"timm:{name}", num_classes=3, output_stride=stride, **SMALL).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        logits, aux = model(x, return_aux=True)
    # the pyramid's input, measured on a real forward pass here, independently of the build's check
    assert features[-1].shape[-2:] == (32 // stride, 64 // stride)
    assert model.feature_info[-1]["reduction"] == stride
    assert features[-1].shape[1] == model.feature_info[-1]["num_chs"] == model.decode_head.ppm.in_channels
    assert features[-2].shape[1] == model.aux_head.convs[0].conv.in_channels
    assert logits.shape == aux.shape == (1, 3, 32, 64)


@pytest.mark.parametrize(
    "name, expected",
    [
        # no output_stride option (a TypeError in timm), and a fixed input size
        ("swin_tiny_patch4_window7_224", r"family swin_transformer\) has no output_stride option .* reaches none of"),
        ("vit_tiny_patch16_224", r"family vision_transformer\) has no output_stride option .* reaches none of"),
        # an assertion in timm; its own stride works
        ("dla34", r"family dla\) rejects output_stride=8; it supports output_stride 32\. The families"),
    ],
)
def test_family_that_cannot_reach_the_stride_is_one_clear_error(name, expected):
    with pytest.raises(ValueError) as exc:
        build_pspnet(f"timm:{name}", num_classes=3)
    assert f"timm:{name}" in _one_line(exc)
    assert exc.match(expected)


@timm.models.register_model
def pspnet_test_ignores_output_stride(pretrained: bool = False, **kwargs):
    """A family that accepts output_stride and silently ignores it (as some did in older timm)."""
    kwargs.pop("output_stride", None)
    return timm.models.resnet.resnet18(pretrained=pretrained, **kwargs)


def test_family_that_ignores_the_stride_is_caught_by_the_measurement():
    with pytest.raises(ValueError) as exc:
        build_pspnet("timm:pspnet_test_ignores_output_stride", num_classes=3)
    assert exc.match(r"has its last stage at stride 32, measured, not 8 \(it ignores output_stride=8\); ")
    assert exc.match(r"it supports output_stride 32\.")
    _one_line(exc)


def test_bad_names_and_settings_are_one_line_errors(monkeypatch):
    cases = [
        (dict(backbone="timm:convnxt_tiny"), r"unknown timm model 'convnxt_tiny'.*Did you mean timm:convnext_tiny"),
        (dict(backbone="convnext_tiny"), r"for timm's model write backbone='timm:convnext_tiny'"),
        (dict(backbone="timm:convnext_atto.fb_in22k"), r"no pretrained tag 'fb_in22k'.*its tags: d2_in1k"),
        (dict(backbone="timm:../../x"), r"is not a timm model name"),
        (dict(backbone="timm:convnext_atto", stem="standard"), r"stem='standard' applies to ResNet backbones only"),
        (dict(backbone="timm:convnext_atto", base_channels=32), r"base_channels=32 applies to ResNet backbones only"),
        (dict(backbone="timm:convnext_atto", backbone_kwargs={"depths": [99]}), r"unsupported setting 'depths'"),
        (
            dict(backbone="timm:convnext_atto", backbone_kwargs={"drop_path_rate": 2}),
            r"must be a number in \[0.0, 1.0\)",
        ),
        (dict(backbone="resnet18", backbone_kwargs={"drop_path_rate": 0.1}), r"applies to timm backbones"),
    ]
    for fields, expected in cases:
        with pytest.raises(ValueError, match=expected) as exc:
            pspnet_lib.PSPNetConfig(**fields)
        _one_line(exc)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ImportError, match=r'needs timm, which is not installed: pip install "pspnet_lib\[timm\]"'):
        build_pspnet("timm:convnext_atto", num_classes=3)


def test_errors_come_before_any_weights_are_fetched(tmp_path):
    empty = tmp_path / "hf"  # nothing cached, downloads disabled: a fetch would be an OfflineError
    options = dict(weights_backbone="DEFAULT", cache_dir=empty, local_files_only=True)
    with pytest.raises(ValueError, match=r"rejects output_stride=8"):
        build_pspnet("timm:dla34", num_classes=3, **options)
    with pytest.raises(ValueError, match=r"unknown timm model"):
        build_pspnet("timm:convnxt_atto", num_classes=3, **options)
    with pytest.raises(OfflineError, match=r"timm/convnext_atto.d2_in1k is not in the Hugging Face cache"):
        build_pspnet("timm:convnext_atto", num_classes=3, **options)


def test_docs_family_table_matches_measurement():
    """Rows of docs/model.md's family table, re-measured (meta device) for a few families."""
    text = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1].startswith("`"):
            rows[cells[0]] = (cells[1].strip("`"), cells[2:])
    assert {"convnext", "resnet", "efficientnet", "regnet", "mobilenetv3", "dla", "swin_transformer"} <= set(rows)
    for family in ("convnext", "dla", "hgnet"):
        model, cells = rows[family]
        measured = reachable_strides(model)
        assert [cells[i] == "yes" for i in range(3)] == [measured[s] is None for s in (8, 16, 32)], family


# ------------------------------------------------------------------ ImageNet weights, offline


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A pre-populated Hugging Face cache holding timm's repository of convnext_atto's default tag."""
    root = tmp_path_factory.mktemp("timm_hf")
    folder = root / "repo"
    folder.mkdir()
    torch.manual_seed(1)
    full = timm.create_model("convnext_atto")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    stats = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "config.json").write_text(json.dumps({"architecture": "convnext_atto", "pretrained_cfg": stats}))
    repo = timm.models.get_pretrained_cfg("convnext_atto").hf_hub_id
    assert repo == "timm/convnext_atto.d2_in1k"
    make_hf_cache(root / "hf", repo, folder, "c" * 40)
    return root / "hf", folder / "model.safetensors", state


def test_weights_backbone_spellings_from_the_offline_hf_cache(timm_weights, monkeypatch):
    """ "DEFAULT", a tag, "<model>.<tag>" and "hf-hub:" reach the cached file; nothing is fetched.

    (The model built from them, its pretrained_cfg and training: test_trainer_journey_... below.)"""
    from pspnet_lib.hub.timm_weights import resolve_timm_weights

    cache, _, state = timm_weights
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    timm_cfg = timm.models.get_pretrained_cfg("convnext_atto.d2_in1k")
    for spelling in ("DEFAULT", "d2_in1k", "convnext_atto.d2_in1k", "hf-hub:timm/convnext_atto.d2_in1k"):
        found = resolve_timm_weights("timm:convnext_atto", spelling, cache_dir=cache)
        assert torch.equal(found.state_dict["stem.0.weight"], state["stem.0.weight"]), spelling
        if spelling.startswith("hf-hub:"):  # the repository's own config.json gives the statistics
            assert found.mean == (0.5, 0.5, 0.5) and found.std == (0.25, 0.25, 0.25)
        else:  # timm's pretrained config of the tag
            assert (found.mean, found.std) == (tuple(timm_cfg.mean), tuple(timm_cfg.std))
            assert found.description == "timm:convnext_atto.d2_in1k (hf-hub:timm/convnext_atto.d2_in1k)"


def test_weights_backbone_file_adaptation_and_mismatch(timm_weights):
    _, file, state = timm_weights
    model = build_pspnet("timm:convnext_atto", num_classes=3, weights_backbone=file, in_channels=4, **SMALL)
    stem = model.backbone.model.stem_0.weight
    assert stem.shape == (40, 4, 4, 4)  # timm adapted the RGB stem to 4 channels
    assert torch.equal(
        model.backbone.model.stages_2.blocks[0].conv_dw.weight, state["stages.2.blocks.0.conv_dw.weight"]
    )
    assert len(model.pretrained_cfg["mean"]) == 4  # generic statistics for 4 channels
    with pytest.raises(ValueError) as exc:
        build_pspnet("timm:resnet18", num_classes=3, weights_backbone=file)
    assert exc.match(r"do not fit timm:resnet18 \(timm family resnet\): \d+ of its \d+ tensors are not in them")
    _one_line(exc)
    with pytest.raises(ValueError, match=r"expected 'DEFAULT', a pretrained tag of convnext_atto \(d2_in1k\)"):
        build_pspnet("timm:convnext_atto", num_classes=3, weights_backbone="imagenet")


# ------------------------------------------------------------------ save, load, export, trace


def test_saved_model_rebuilds_from_its_folder_alone(tmp_path):
    torch.manual_seed(0)
    model = build_pspnet("timm:mobilenetv3_small_050", num_classes=3, backbone_kwargs={"drop_path_rate": 0.1})
    model.eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        expected = model(x)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    stored = json.loads((folder / "config.json").read_text())["config"]
    assert stored["backbone"] == "timm:mobilenetv3_small_050" and stored["output_stride"] == 8
    assert stored["backbone_kwargs"] == {"drop_path_rate": 0.1} and stored["ppm_channels"] == 288 // 4
    make_hf_cache(tmp_path / "hf", "me/pspnet-mnv3", folder, "d" * 40)
    rng = torch.random.get_rng_state()
    loads = (
        load_pretrained(folder),
        load_pretrained("hf-hub:me/pspnet-mnv3", cache_dir=tmp_path / "hf", local_files_only=True),
    )
    assert torch.equal(torch.random.get_rng_state(), rng)  # built on the meta device: no init to overwrite (issue 23)
    for loaded in loads:
        assert loaded.config.backbone == "timm:mobilenetv3_small_050"
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    result = loaded.predict((torch.rand(3, 40, 48) * 255).to(torch.uint8))  # pictures in, labels out
    assert result.mask.shape == (40, 48)


def test_onnx_at_two_sizes_matches_eager(tiny_convnext, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from pspnet_lib.inference.export import export_onnx

    path = export_onnx(tiny_convnext, tmp_path / "m.onnx", height=64, width=64, exporter="torchscript")
    session = ort.InferenceSession(str(path))
    for shape in ((1, 3, 64, 64), (2, 3, 48, 88)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = tiny_convnext(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4


@pytest.mark.slow
def test_torch_export_dynamic_sizes_of_a_dilated_convnext(tiny_convnext):
    """ConvNeXt at output stride 8 has a "SAME"-padded dilated convolution and a stem that rounds down:
    the export keeps height and width dynamic from the smallest size the encoder takes (16)."""
    from pspnet_lib.inference.export import export_program, min_input_size

    model = tiny_convnext
    assert min_input_size(model) == 16 and model.backbone.min_input_size(1) == 8
    program = export_program(model, height=32, width=32)
    for shape in ((1, 3, 16, 16), (2, 3, 40, 72)):
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"needs inputs of at least 8x8 pixels"):
        model(torch.randn(1, 3, 7, 40))


def test_static_same_padding_equals_timm():
    from timm.layers import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    from pspnet_lib.models.encoders.static_padding import make_same_padding_static

    modules = torch.nn.ModuleList(
        [Conv2dSame(3, 4, 2, dilation=2), Conv2dSame(3, 4, 3, stride=2), AvgPool2dSame(2, 1), MaxPool2dSame(3, 1)]
    )
    x = torch.randn(1, 3, 11, 8)
    with torch.no_grad():
        before = [m(x) for m in modules]
        assert make_same_padding_static(modules) == 3  # the strided convolution keeps timm's computation
        after = [m(x) for m in modules]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert type(modules[1]) is Conv2dSame and "same_pad" in vars(modules[0])


def test_fx_feature_extraction(convnext):
    from timm.models import create_feature_extractor

    extractor = create_feature_extractor(convnext, {"backbone.model.stages_3": "last", "decode_head.ppm": "ppm"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        assert torch.equal(out["last"], convnext.forward_features(x)[-1])
    assert out["ppm"].shape == (1, 320 + 4 * 80, 8, 8)


# ------------------------------------------------------------------ optimize_for_inference


def test_optimize_for_inference_convnext_agrees_with_eager(convnext):
    from pspnet_lib._testing import smooth_image
    from pspnet_lib.runtime import agreement_stats, native_dtype_support, optimize_for_inference

    dtype = torch.bfloat16 if native_dtype_support(torch.bfloat16, torch.device("cpu"))[0] else torch.float32
    fast = optimize_for_inference(convnext, dtype)
    assert fast.encoder is not None and fast.stem is None  # the generic path
    x = smooth_image(2, 72, 64, seed=3)
    with torch.no_grad():
        stats = agreement_stats(convnext(x), fast(x))
    assert stats["argmax_agreement"] >= 0.995, stats


def test_optimize_for_inference_folds_timm_batchnorms():
    from pspnet_lib._testing import randomize_batchnorm_, smooth_image
    from pspnet_lib.runtime import agreement_stats, optimize_for_inference

    model = randomize_batchnorm_(build_pspnet("timm:mobilenetv3_small_050", num_classes=3, **SMALL)).eval()
    fast = optimize_for_inference(model, torch.float32)
    assert fast.encoder.folded > 20  # BatchNormAct2d after every convolution (fused, activation kept)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.encoder.encoder.modules())
    x = smooth_image(1, 64, 80, seed=4)
    with torch.no_grad():
        stats = agreement_stats(model(x), fast(x))
    assert stats["max_rel_err"] < 1e-4 and stats["argmax_agreement"] == 1.0


# ------------------------------------------------------------------ training


def test_grad_checkpointing_same_gradients_and_batchnorm_statistics_once():
    import copy

    torch.manual_seed(0)
    plain = build_pspnet("timm:mobilenetv3_small_050", num_classes=3, **SMALL)
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout draws
        main, aux = model.train()(x, return_aux=True)
        (torch.nn.functional.cross_entropy(main, y) + 0.4 * torch.nn.functional.cross_entropy(aux, y)).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(a, b), name  # running statistics updated once, not again in the recomputation
    assert all(m.momentum == 0.1 for m in ckpt.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.slow
def test_trainer_journey_imagenet_weights_amp_checkpointing_then_load(timm_weights, tmp_path, monkeypatch):
    """The library's trainer on a timm backbone: ImageNet weights from the offline cache, bf16 AMP,
    gradient checkpointing, two steps, and the saved model rebuilds from its folder."""
    from pspnet_lib.data.synthetic import write_synthetic_dataset
    from pspnet_lib.engine.run import TrainingRun

    cache, _, state = timm_weights
    data = tmp_path / "data"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 1.0})
    settings = {
        "dataset": "folder",
        "model": {"backbone": "timm:convnext_atto", **SMALL},
        "augment": {"crop_size": [24, 24], "scale_range": [1.0, 1.0]},
        "train": {
            "batch_size": 2,
            "iters": 2,
            "amp": "bf16",
            "grad_checkpointing": True,
            "num_workers": 0,
            "log_interval": 1,
            "out_dir": str(tmp_path / "run"),
        },
    }
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time: never the network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # the default cache, as HF_HUB_CACHE would set it
    run = TrainingRun.from_settings(settings, data, weights_backbone="DEFAULT", validate=False)
    built = run.model
    assert torch.equal(built.backbone.model.stem_0.weight, state["stem.0.weight"])
    assert torch.equal(
        built.backbone.model.stages_3.blocks[1].mlp.fc2.weight, state["stages.3.blocks.1.mlp.fc2.weight"]
    )
    timm_cfg = timm.models.get_pretrained_cfg("convnext_atto.d2_in1k")
    assert built.pretrained_cfg["mean"] == list(timm_cfg.mean) and built.pretrained_cfg["std"] == list(timm_cfg.std)
    assert built.pretrained_cfg["backbone_weights"] == "timm:convnext_atto.d2_in1k (hf-hub:timm/convnext_atto.d2_in1k)"
    assert built.load_report.reinitialised and not built.load_report.missing
    summary = run.fit()
    assert summary["iteration"] == 2
    trained = load_pretrained(tmp_path / "run" / "model")
    assert trained.config.backbone == "timm:convnext_atto"
    assert trained.pretrained_cfg["mean"] == list(timm.models.get_pretrained_cfg("convnext_atto").mean)
    assert not torch.equal(trained.backbone.model.stem_0.weight, state["stem.0.weight"])  # it trained


def test_amp_step_and_every_parameter_used():
    """A bf16 autocast step; every parameter gets a gradient from model(x) (DDP's default needs that)."""
    model = build_pspnet("timm:mobilenetv3_small_050", num_classes=3, **SMALL).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_resnet_path_does_not_import_timm(monkeypatch):
    """No module of the package imports timm at module level, and the ResNet path never at call time."""
    import ast

    for path in (ROOT / "pspnet_lib").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "timm" for n in names), path
    monkeypatch.setitem(sys.modules, "timm", None)  # any `import timm` now raises ImportError
    model = build_pspnet("resnet18", num_classes=2, head_channels=8, aux_channels=8).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    model.group_matcher(), model.no_weight_decay(), pspnet_lib.list_models()
    pspnet_lib.get_model("pspnet_r18_d8", num_classes=2)
