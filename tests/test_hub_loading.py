"""load_pretrained: backbone files, num_classes changes, strictness, safe unpickling and every bad input's message."""

import sys
import types

import numpy as np
import pytest
import torch
import torchvision

from pspnet_lib import build_pspnet, load_pretrained
from pspnet_lib.hub import CheckpointError
from pspnet_lib.hub.formats.converters import convert_state_dict
from pspnet_lib.hub.load_report import CLASSIFIER_KEYS, load_weights
from pspnet_lib.models import ResNet

from .hub_utils import SMALL, write_mmseg_checkpoint
from .reference import relative_error


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "pspnet_r18.pth"
    data = write_mmseg_checkpoint(path)
    return path, data


# --- torchvision ImageNet ResNets into the standard-stem backbone ---


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")
def test_torchvision_resnet50_every_key_used():
    # Shapes only (meta device): the full mapping of torchvision's resnet50 onto our standard stem.
    with torch.device("meta"):
        tv = torchvision.models.resnet50()
        model = build_pspnet("resnet50", 3, stem="standard", **SMALL)
    converted = convert_state_dict(tv.state_dict(), "torchvision")
    assert len(converted) == len(tv.state_dict()) - 2  # everything but the ImageNet classifier fc.*
    backbone_keys = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(converted) == backbone_keys
    report = load_weights(model, converted, reinitialise=set(model.state_dict()) - backbone_keys)
    assert report.ok and sorted(report.loaded) == sorted(backbone_keys)


def test_torchvision_resnet18_file_gives_torchvision_features(tmp_path):
    tv = torchvision.models.resnet18().eval()
    with torch.no_grad():  # non-trivial running statistics
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)

    with pytest.raises(ValueError, match=r"backbone weights only.*pass num_classes=K"):
        load_pretrained(path)
    model = load_pretrained(path, num_classes=4, output_stride=32, **SMALL)
    report = model.load_report
    assert model.config.stem == "standard"
    assert report.ok and len(report.loaded) == len(tv.state_dict()) - 2
    assert all(k.startswith("backbone.") for k in report.loaded)
    assert report.reinitialised and all(not k.startswith("backbone.") for k in report.reinitialised)
    assert "classes" not in model.pretrained_cfg and model.pretrained_cfg["mean"] == [0.485, 0.456, 0.406]

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model.backbone(x)[3]
        theirs = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
    torch.testing.assert_close(ours, theirs)

    # the same file as build_pspnet(weights_backbone=...): the stem follows the weights
    built = build_pspnet("resnet18", 4, weights_backbone=path, **SMALL)
    assert built.config.stem == "standard" and built.training
    torch.testing.assert_close(built.backbone.conv1.weight, tv.conv1.weight)
    with pytest.raises(ValueError, match=r"needs stem='standard'.*preset='mmseg-b'"):
        build_pspnet("resnet18", 4, weights_backbone=path, stem="deep", **SMALL)
    with pytest.raises(ValueError, match=r"holds a resnet18 but the model is a resnet50"):
        build_pspnet("resnet50", 4, weights_backbone=path, **SMALL)
    # the width is read from the weights: a half-width model cannot take full-width weights
    with pytest.raises(ValueError, match=r"needs base_channels=64 but base_channels=32 was set"):
        build_pspnet("resnet18", 4, weights_backbone=path, base_channels=32, **SMALL)


def test_mmseg_v1c_backbone_file(tmp_path):
    # mmcv's resnet*_v1c files: ResNetV1c keys (stem.0, stem.1, ...) without any prefix.
    backbone = ResNet(18, stem="deep")
    path = tmp_path / "resnet18_v1c.pth"
    torch.save(
        {"state_dict": {**backbone.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}},
        path,
    )
    model = build_pspnet("resnet18", 6, weights_backbone=path, **SMALL)
    assert model.load_report.ok and model.config.stem == "deep"
    torch.testing.assert_close(model.backbone.stem[0].weight, backbone.stem[0].weight)


# --- num_classes, aux, strictness ---


def test_num_classes_override_report(r18_file):
    path, data = r18_file
    original = load_pretrained(path)
    model = load_pretrained(path, num_classes=9)
    report = model.load_report
    assert sorted(report.reinitialised) == sorted(CLASSIFIER_KEYS)
    assert len(report.loaded) == len(original.state_dict()) - 4
    assert not (report.missing or report.unexpected or report.mismatched)
    assert model.decode_head.classifier.weight.shape[0] == 9
    torch.testing.assert_close(model.decode_head.bottleneck.conv.weight, original.decode_head.bottleneck.conv.weight)
    with torch.no_grad():
        main, aux = model(data["input"], return_aux=True)
    assert main.shape[1] == aux.shape[1] == 9
    assert "classes" not in model.pretrained_cfg and "adapted_from" in model.pretrained_cfg
    assert "reinitialised" in str(report)


def test_same_num_classes_is_a_plain_load(r18_file):
    path, data = r18_file
    model = load_pretrained(path, num_classes=5)
    assert not model.load_report.reinitialised
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4


def test_aux_false_discards_aux_head(r18_file):
    path, data = r18_file
    model = load_pretrained(path, aux=False)
    assert model.aux_head is None
    assert sorted(model.load_report.discarded) == sorted(
        k for k, *_ in data["keys"] if k.startswith("auxiliary_head.")
    ) or all(k.startswith("aux_head.") for k in model.load_report.discarded)
    assert len(model.load_report.discarded) == sum(1 for k, *_ in data["keys"] if k.startswith("auxiliary_head."))
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4


def test_strict_mismatch_lists_keys_and_shapes(r18_file):
    path, _ = r18_file
    with pytest.raises(ValueError) as info:
        load_pretrained(path, head_channels=64)
    message = str(info.value)
    assert "decode_head.bottleneck.conv.weight: checkpoint [128, 1024, 3, 3] vs model [64, 1024, 3, 3]" in message
    assert "strict=False" in message
    model = load_pretrained(path, head_channels=64, strict=False)
    assert ("decode_head.bottleneck.conv.weight", (128, 1024, 3, 3), (64, 1024, 3, 3)) in model.load_report.mismatched
    assert not model.load_report.ok


def test_missing_keys_are_listed(r18_file, tmp_path):
    path, _ = r18_file
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["decode_head.bottleneck.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(checkpoint, broken)
    with pytest.raises(
        ValueError,
        match=r"1 key\(s\) missing from the checkpoint, e.g. decode_head.bottleneck.conv.weight \[128, 1024, 3, 3\]",
    ):
        load_pretrained(broken)


def test_overrides_the_weights_cannot_tell(r18_file):
    path, _ = r18_file
    model = load_pretrained(path, align_corners=True, output_stride=32, dilations=[1, 1, 2, 4])
    assert model.config.align_corners and model.config.output_stride == 32 and model.config.dilations == [1, 1, 2, 4]
    assert model.load_report.ok


# --- safe unpickling ---


def _fake_module(name: str, **attrs):
    """Make classes defined in a test look like ``name.<Class>`` to pickle."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attrs.items():
        value.__module__ = name
        value.__qualname__ = key
        setattr(sys.modules[name], key, value)


def _drop_fake(prefix: str):
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]


def test_openmmlab_and_numpy_metadata_load_with_weights_only(r18_file, tmp_path):
    path, data = r18_file
    sd = torch.load(path, weights_only=True)["state_dict"]

    class HistoryBuffer:  # what mmengine keeps in "message_hub"
        def __init__(self):
            self.data = np.arange(3.0)

    _fake_module("mmengine.logging.history_buffer", HistoryBuffer=HistoryBuffer)
    try:
        meta = {"seed": np.int64(3), "best": np.float64(0.5), "hist": HistoryBuffer(), "dt": np.dtype("float32")}
        torch.save({"meta": meta, "message_hub": {"x": HistoryBuffer()}, "state_dict": sd}, tmp_path / "mm.pth")
    finally:
        _drop_fake("mmengine")
    model = load_pretrained(tmp_path / "mm.pth")  # mmengine is not importable here: placeholders stand in
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4


def test_arbitrary_pickle_is_refused_and_never_run(r18_file, tmp_path):
    path, _ = r18_file
    sd = torch.load(path, weights_only=True)["state_dict"]
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file when unpickled

    _fake_module("evil.tools", Payload=Payload)
    try:
        torch.save({"meta": {"x": Payload()}, "state_dict": sd}, tmp_path / "evil.pth")
    finally:
        _drop_fake("evil")
    # (open pickles as io.open, and as _io.open from Python 3.12)
    with pytest.raises(
        CheckpointError, match=r"refusing to unpickle .*evil.pth: it needs _?io\.open.*trust_pickle=True"
    ):
        load_pretrained(tmp_path / "evil.pth")
    assert not marker.exists()
    model = load_pretrained(tmp_path / "evil.pth", trust_pickle=True)  # the explicit opt-in
    assert marker.exists() and model.load_report.ok


def test_legacy_serialization_format(r18_file, tmp_path):
    path, data = r18_file
    sd = torch.load(path, weights_only=True)["state_dict"]
    legacy = tmp_path / "legacy.pth"
    torch.save({"meta": {"iter": np.int64(5)}, "state_dict": sd}, legacy, _use_new_zipfile_serialization=False)
    with torch.no_grad():
        assert relative_error(load_pretrained(legacy)(data["input"]).numpy(), data["out"]) <= 1e-4


# --- bad inputs ---


def test_corrupt_and_truncated_files(r18_file, tmp_path):
    path, _ = r18_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*truncated.pth.*truncated or corrupt"):
        load_pretrained(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"garbage.pth.*not a PyTorch checkpoint"):
        load_pretrained(garbage)
    with pytest.raises(CheckpointError, match=r"garbage.pth.*not a PyTorch checkpoint"):
        load_pretrained(str(garbage))  # a string path too
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"cannot read safetensors file .*bad.safetensors"):
        load_pretrained(bad_st)


@pytest.mark.parametrize(
    "source, kwargs, error, message",
    [
        # the name once, then the advice (close zoo names, where to list them)
        (
            "pspnet_r50-d8_ade20k-512x512-8k",
            {},
            ValueError,
            r"^cannot load 'pspnet_r50-d8_ade20k-512x512-8k': it is not a zoo name, [^']*'hf-hub:' id\. "
            r"Did you mean 'pspnet_r50-d8_ade20k-512x512-80k'[^']*(?:'[^']*'[^']*)*See pspnet_lib.list_pretrained\(\)",
        ),
        ("no/such/file.pth", {}, ValueError, r"not a zoo name, an existing file or folder, a URL"),
        ("pspnet_r50-d8_ade20k", {"format": "mmseg"}, ValueError, r"format= applies to checkpoint files"),
        ("pspnet_r50-d8_ade20k", {"revision": "main"}, ValueError, r"revision= applies to 'hf-hub:' sources only"),
        ("pspnet_r50-d8_ade20k", {"dilation": 2}, ValueError, r"unknown load_pretrained option\(s\) \['dilation'\]"),
        ("pspnet_r50-d8_ade20k", {"num_classes": 0}, ValueError, r"num_classes must be a positive integer"),
        (123, {}, TypeError, r"source must be a zoo name"),
    ],
)
def test_bad_arguments(source, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_pretrained(source, **kwargs)


def test_files_without_weights_or_unknown_layout(tmp_path):
    torch.save({"epoch": 3, "notes": "hello"}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"holds no tensors where weights are expected.*'epoch'"):
        load_pretrained(tmp_path / "empty.pth")
    torch.save({"encoder.w": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"cannot recognise the checkpoint layout.*pass format="):
        load_pretrained(tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"unknown format 'detectron'"):
        load_pretrained(tmp_path / "other.pth", format="detectron")
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"not a save_pretrained folder: expected config.json and model.safetensors"
    ):
        load_pretrained(tmp_path / "folder")


def test_half_width_weights_load_from_their_shapes_and_refuse_another_width(tmp_path):
    """base_channels is read from the tensors like every width; a width asked for must fit the weights."""
    half = build_pspnet("resnet18", 3, stem_channels=32, base_channels=32, head_channels=32, aux_channels=16)
    torch.save(half.state_dict(), tmp_path / "half.pth")  # no config: only the shapes tell
    loaded = load_pretrained(tmp_path / "half.pth")
    assert (loaded.config.base_channels, loaded.config.stem_channels) == (32, 32)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), half.eval()(x))
    full = build_pspnet("resnet18", 3, head_channels=32, aux_channels=16)
    full.save_pretrained(tmp_path / "full")
    with pytest.raises(
        ValueError, match=r"do not fit the model.*backbone\.layer1\.0\.\S+: checkpoint \[64\] vs model \[32\]"
    ):
        build_pspnet("resnet18", base_channels=32, weights=tmp_path / "full")  # was: silently 64 wide


def test_zoo_weights_refuse_a_layout_they_lack_before_any_download():
    import pspnet_lib

    name = "pspnet_r18-d8_cityscapes-512x1024-80k"
    for kwargs, field in (
        (dict(weights="DEFAULT", base_channels=32), "base_channels=32"),
        (dict(pretrained=True, stem_channels=32), "stem_channels=32"),
        (dict(weights=name, output_stride=16), "output_stride=16"),
    ):
        with pytest.raises(ValueError, match=rf"weights '{name}' are for a .* model, but {field} was asked for"):
            pspnet_lib.get_model("pspnet_r18_d8", **kwargs)
    # ImageNet backbones of the zoo: their layout is known before the download
    with pytest.raises(
        ValueError, match=r"weights_backbone='resnet18_v1c' needs base_channels=64 but base_channels=32"
    ):
        build_pspnet("resnet18", 3, base_channels=32, weights_backbone="resnet18_v1c")
    with pytest.raises(
        ValueError, match=r"weights_backbone='resnet50_v1c' needs stem_channels=64 but stem_channels=32"
    ):
        pspnet_lib.get_model("pspnet_r50_d8", weights_backbone=True, stem_channels=32, num_classes=3)
