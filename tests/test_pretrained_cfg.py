"""Typed ``pretrained_cfg``: PretrainedCfg / InferenceProtocol parse, default, validate and write back exactly."""

from __future__ import annotations

import json

import pytest
import torch

from pspnet_lib import InferenceProtocol, PretrainedCfg, load_pretrained
from pspnet_lib.core.constants import GENERIC_MEAN, GENERIC_STD, IMAGENET_MEAN, IMAGENET_STD, input_stats
from pspnet_lib.engine.evaluate import evaluate
from pspnet_lib.hub import get_weight, list_pretrained
from pspnet_lib.hub.validation import validate_pretrained_cfg
from pspnet_lib.inference.modes import infer

from .infer_utils import CLASSES, tiny_model

# What the Trainer stores (all six protocol keys, explicit None) and a user-edited dict.
TRAINER_CFG = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "classes": ["a", "b"],
    "palette": [[0, 0, 0], [255, 0, 0]],
    "ignore_index": 255,
    "inference": {"mode": "whole", "resize": None, "crop": None, "stride": None, "scales": [1.0], "flip": False},
    "adapted_from": {"name": "pspnet_r50-d8_ade20k"},
}


@pytest.mark.parametrize("name", list_pretrained())
def test_every_zoo_entry_round_trips_exactly(name):
    stored = get_weight(name).pretrained_cfg()
    cfg = PretrainedCfg.from_dict(stored, what=name)
    assert cfg.to_dict() == stored
    # same keys in the same order, same JSON: config.json and the safetensors metadata stay byte-identical
    assert json.dumps(cfg.to_dict()) == json.dumps(stored)
    assert cfg.name == name and cfg.url == stored["url"]
    if "inference" in stored:
        assert cfg.protocol.to_dict() == stored["inference"]
        assert cfg.tta.flip is True and cfg.tta.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
        assert cfg.classes == tuple(stored["classes"]) and len(cfg.palette) == len(stored["classes"])


def test_other_stored_forms_round_trip():
    for stored in (
        TRAINER_CFG,
        {},
        {"mean": [0.5], "std": [0.2]},
        {"inference": {"mode": "slide", "crop": 64, "stride": 32}},
    ):
        assert PretrainedCfg.from_dict(stored).to_dict() == stored


@pytest.mark.parametrize(
    "channels, mean, std",
    [
        (3, list(IMAGENET_MEAN), list(IMAGENET_STD)),
        (1, [GENERIC_MEAN], [GENERIC_STD]),
        (4, [GENERIC_MEAN] * 4, [GENERIC_STD] * 4),
    ],
)
def test_defaults_per_channel_count(channels, mean, std):
    cfg = PretrainedCfg.from_dict({}, channels)
    assert list(cfg.mean) == pytest.approx(mean) and list(cfg.std) == pytest.approx(std)
    assert cfg.ignore_index == 255 and cfg.reduce_zero_label is False and cfg.classes is None
    assert cfg.protocol == InferenceProtocol() and cfg.tta is None
    assert cfg.to_dict() == {}  # defaults are not written back
    assert input_stats({}, channels) == (list(cfg.mean), list(cfg.std))  # the old helper agrees


def test_single_stored_value_serves_every_channel():
    cfg = PretrainedCfg.from_dict({"mean": [0.5], "std": [0.25]}, 4)
    assert cfg.mean == (0.5,) * 4 and cfg.std == (0.25,) * 4


@pytest.mark.parametrize(
    "stored, message",
    [
        (
            {"mean": [0.5, 0.5]},
            r"x.json: pretrained_cfg mean must be 3 numbers \(one per input channel\), got \[0.5, 0.5\]",
        ),
        ({"std": [0.2, 0, 0.2]}, r"x.json: pretrained_cfg std must be positive numbers"),
        ({"mean": ["a"]}, r"pretrained_cfg mean must be a list of finite numbers"),
        ({"mean": [0.5] * 3, "std": [0.2] * 1}, None),  # one std value is fine
        ({"classes": [1, 2]}, r"pretrained_cfg classes must be a list of class names \(strings\), got \[1, 2\]"),
        ({"palette": [[0, 0, 300]]}, r"pretrained_cfg palette must be a list of \[r, g, b\] colours"),
        ({"ignore_index": "255"}, r"pretrained_cfg ignore_index must be an integer, got '255'"),
        ({"reduce_zero_label": 1}, r"pretrained_cfg reduce_zero_label must be true or false, got 1"),
        ({"inference": {"mode": "tile"}}, r"pretrained_cfg inference.mode must be one of whole, slide, got 'tile'"),
        ({"inference": {"resize": [100000, 100000]}}, r"inference.resize must be a pair of integers in \[1, 8192\]"),
        ({"inference": {"resize": 512}}, r"inference.resize must be a pair of integers"),
        ({"inference": {"crop": "big"}}, r"pretrained_cfg inference.crop must be an integer or a pair"),
        ({"inference": {"mode": "slide", "crop": 64}}, r"inference.stride must be a window size for mode 'slide'"),
        ({"inference": {"mode": "slide", "crop": 64, "stride": 65}}, r"inference.stride must be at most the crop"),
        ({"tta": {"scales": [0.5, 100]}}, r"pretrained_cfg tta.scales must be a list of 1 to 16 numbers in \(0, 8\]"),
        ({"tta": {"flip": "yes"}}, r"pretrained_cfg tta.flip must be true or false, got 'yes'"),
        ({"tta": {"flip": True, "size": 3}}, r"pretrained_cfg tta has unknown key\(s\) \['size'\]; expected only mode"),
        ({"inference": [1]}, r"pretrained_cfg inference must be a mapping"),
        ({"license": 5}, r"pretrained_cfg license must be a string, got 5"),
        ({"metrics": [1]}, r"pretrained_cfg metrics must be a mapping"),
    ],
)
def test_validation_errors_are_one_line(stored, message):
    if message is None:
        PretrainedCfg.from_dict(stored, what="x.json")
        return
    with pytest.raises(ValueError, match=message) as info:
        PretrainedCfg.from_dict(stored, what="x.json")
    assert "\n" not in str(info.value) and str(info.value).startswith("x.json: ")
    with pytest.raises(ValueError, match=message):  # the hub's public check is the same one
        validate_pretrained_cfg(stored, "x.json", in_channels=3)


def test_not_a_mapping_and_channel_mismatch_messages():
    with pytest.raises(ValueError, match=r"x: pretrained_cfg must be a JSON object / mapping, got list"):
        PretrainedCfg.from_dict([1], what="x")
    with pytest.raises(
        ValueError, match=r"takes 4 input channel\(s\) \(config.in_channels\) but pretrained_cfg\['mean'\] has 3"
    ):
        PretrainedCfg.from_dict({"mean": [0.5] * 3}, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="tiles"), r"InferenceProtocol: mode must be one of whole, slide, got 'tiles'"),
        (dict(mode="slide", crop=8), r"InferenceProtocol: stride must be a window size for mode 'slide'"),
        (dict(resize=(9000, 512)), r"InferenceProtocol: resize must be a pair of integers in \[1, 8192\]"),
        (dict(scales=()), r"InferenceProtocol: scales must be a list of 1 to 16 numbers"),
        (dict(flip=1), r"InferenceProtocol: flip must be true or false, got 1"),
    ],
)
def test_protocol_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferenceProtocol(**kwargs)


def test_protocol_forms():
    p = InferenceProtocol(mode="slide", crop=64, stride=(32, 48), scales=[0.5, 1], flip=True)
    assert p.crop == (64, 64) and p.stride == (32, 48) and p.scales == (0.5, 1.0) and p.runs == 4
    assert p.to_dict() == {"mode": "slide", "crop": [64, 64], "stride": [32, 48], "scales": [0.5, 1.0], "flip": True}
    assert set(p.to_dict(full=True)) == {"mode", "resize", "crop", "stride", "scales", "flip"}
    assert p.infer_kwargs()["crop"] == (64, 64)
    # a short-side-only resize (predict(size=512)) leaves the long side unlimited
    assert InferenceProtocol(resize=(1 << 30, 512)).resize == (1 << 30, 512)
    stored = InferenceProtocol.from_dict({"mode": "whole", "resize": [2048, 512]})
    changed = stored.replace(flip=True)
    assert changed.to_dict() == {"mode": "whole", "resize": [2048, 512], "flip": True}
    with pytest.raises(ValueError, match="resize must be"):
        stored.replace(resize=(0, 1))


def test_replace_keeps_the_stored_form_of_the_rest():
    cfg = PretrainedCfg.from_dict(TRAINER_CFG)
    renamed = cfg.replace(classes=["x", "y"], protocol=cfg.protocol.replace(mode="slide", crop=8, stride=4))
    out = renamed.to_dict()
    assert list(out) == list(TRAINER_CFG) and out["classes"] == ["x", "y"]
    assert out["inference"]["mode"] == "slide" and out["inference"]["crop"] == [8, 8]
    assert {k: v for k, v in out.items() if k not in ("classes", "inference")} == {
        k: v for k, v in TRAINER_CFG.items() if k not in ("classes", "inference")
    }
    assert cfg.extra == {"adapted_from": {"name": "pspnet_r50-d8_ade20k"}}


def test_protocol_object_gives_the_same_logits_as_keywords():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    images = torch.randn(2, 3, 37, 45)
    kwargs = dict(mode="slide", resize=(60, 30), crop=(16, 16), stride=(11, 11), scales=(0.75, 1.0), flip=True)
    with pytest.warns(
        DeprecationWarning, match=r"infer\(mode=, resize=, crop=, stride=, scales=, flip=...\) is deprecated"
    ):
        expected = infer(model, images, **kwargs)  # the keyword form: deprecated alias for one release
    got = infer(model, images, protocol=InferenceProtocol(**kwargs))
    assert torch.equal(got, expected) and got.shape == (2, 4, 37, 45)
    whole = infer(model, images, protocol=InferenceProtocol())
    assert torch.equal(whole, infer(model, images))
    with pytest.raises(ValueError, match="either as protocol=InferenceProtocol"):
        infer(model, images, protocol=InferenceProtocol(), flip=True)
    dataset = [(torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8), torch.randint(0, 4, (20, 24)))]
    with pytest.warns(DeprecationWarning, match=r"evaluate\(flip=...\) is deprecated"):
        old = evaluate(model, dataset, num_classes=4, flip=True, progress=False)
    new = evaluate(model, dataset, num_classes=4, protocol=InferenceProtocol(flip=True), progress=False)
    assert (old["mIoU"], old["aAcc"]) == (new["mIoU"], new["aAcc"])


def test_saved_and_reloaded_model_has_the_same_cfg(tmp_path):
    model = tiny_model()
    model.pretrained_cfg = {
        "name": "toy",
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "classes": CLASSES,
        "palette": [[i, 2 * i, 3 * i] for i in range(5)],
        "inference": {"mode": "slide", "resize": [96, 64], "crop": [32, 32], "stride": [24, 24]},
        "tta": {"scales": [0.5, 1.0], "flip": True},
        "license": "Apache-2.0",
        "custom": {"anything": [1, 2]},
    }
    original = PretrainedCfg.of(model)
    model.save_pretrained(tmp_path / "saved")
    again = load_pretrained(tmp_path / "saved")
    assert PretrainedCfg.of(again) == original
    assert again.pretrained_cfg == model.pretrained_cfg  # the plain dict users read stays as it was
    written = json.loads((tmp_path / "saved" / "config.json").read_text())["pretrained_cfg"]
    assert written == original.to_dict()


def test_defaults_written_on_load_follow_the_channel_count(tmp_path):
    model = tiny_model(in_channels=4)
    model.pretrained_cfg = {}  # a model saved without statistics
    model.save_pretrained(tmp_path / "four")
    again = load_pretrained(tmp_path / "four")
    assert again.pretrained_cfg["mean"] == pytest.approx([GENERIC_MEAN] * 4)  # not ImageNet's three values
    assert PretrainedCfg.of(again).std == pytest.approx((GENERIC_STD,) * 4)
