"""Released files recognised by what they are: zoo file name / sha256, then the mmseg meta config text."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from pspnet_lib import load_pretrained
from pspnet_lib.hub.download import sha256_file
from pspnet_lib.hub.mmseg_config import parse_config_text, read_checkpoint_config, settings_from_config
from pspnet_lib.hub.registry import Weights, get_weight, register_weights, unregister_weights

from .reference import load_case, reference_state_dict

ZOO_FILE = "pspnet_r50-d8_769x769_40k_cityscapes_20200606_112725-86638686.pth"

# Written in the form mmsegmentation 0.x stores in checkpoint["meta"]["config"] (Config.pretty_text):
# the merged config of a 769x769 Cityscapes PSPNet, every _base_ inlined.
CONFIG_0X = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='PSPHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
crop_size = (769, 769)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(2049, 1025),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img'])
        ])
]
data = dict(samples_per_gpu=2, workers_per_gpu=2, test=dict(type='CityscapesDataset', pipeline=test_pipeline))
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
runner = dict(type='IterBasedRunner', max_iters=40000)
work_dir = './work_dirs/pspnet_r50-d8_769x769_40k_cityscapes'
gpu_ids = range(0, 8)
"""

CITYSCAPES = get_weight("pspnet_r50-d8_cityscapes-769x769-40k").meta["categories"]


@pytest.fixture(scope="module")
def r50_cityscapes(tmp_path_factory):
    """Random weights of the 769x769 R-50-D8 Cityscapes model in mmseg's layout, under the zoo file name."""
    data = load_case("mmseg_r50_d8")
    keys = [[k, [19, *shape[1:]] if ".conv_seg." in k else shape, dtype] for k, shape, dtype in data["keys"]]
    state_dict = reference_state_dict(keys, 0)
    folder = tmp_path_factory.mktemp("zoo")
    path = folder / ZOO_FILE
    torch.save({"meta": {"mmseg_version": "0.11.0", "iter": 40000}, "state_dict": state_dict}, path)
    neutral = folder / "my_cityscapes_model.pth"
    meta = {
        "mmseg_version": "0.11.0",
        "config": CONFIG_0X,
        "CLASSES": tuple(CITYSCAPES),
        "PALETTE": [[128, 64, 128]] * 19,
    }
    torch.save({"meta": meta, "state_dict": state_dict}, neutral)
    return path, neutral, state_dict


def _same_weights(model, other) -> bool:
    theirs = other.state_dict()
    return all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_zoo_file_name_gives_the_entry_protocol(r50_cityscapes, caplog):
    path, _, _ = r50_cityscapes
    caplog.set_level(logging.INFO, logger="pspnet_lib.hub")
    model = load_pretrained(path)
    assert model.config.align_corners is True
    assert model.pretrained_cfg["inference"] == {
        "mode": "slide",
        "resize": [2049, 1025],
        "crop": [769, 769],
        "stride": [513, 513],
    }
    assert (
        model.pretrained_cfg["classes"] == CITYSCAPES
        and model.pretrained_cfg["name"] == "pspnet_r50-d8_cityscapes-769x769-40k"
    )
    assert "by its file name as the zoo entry pspnet_r50-d8_cityscapes-769x769-40k" in caplog.text
    assert (
        model.load_report.settings["align_corners"] == "zoo entry pspnet_r50-d8_cityscapes-769x769-40k (by file name)"
    )
    # explicit arguments win
    plain = load_pretrained(path, align_corners=False)
    assert plain.config.align_corners is False and plain.load_report.settings["align_corners"] == "argument"
    assert plain.pretrained_cfg["inference"]["mode"] == "slide" and _same_weights(model, plain)


def test_meta_config_text_gives_the_same_settings(r50_cityscapes, caplog):
    path, neutral, _ = r50_cityscapes
    caplog.set_level(logging.INFO, logger="pspnet_lib.hub")
    model = load_pretrained(neutral)
    zoo = load_pretrained(path)
    assert model.config.align_corners is True and model.config.to_dict() == zoo.config.to_dict()
    inference = model.pretrained_cfg["inference"]
    assert inference == {"mode": "slide", "crop": [769, 769], "stride": [513, 513], "resize": [2049, 1025]}
    assert model.pretrained_cfg["classes"] == CITYSCAPES
    assert model.pretrained_cfg["mean"] == pytest.approx([0.485, 0.456, 0.406]) and model.pretrained_cfg[
        "std"
    ] == pytest.approx([0.229, 0.224, 0.225])
    assert model.load_report.settings["align_corners"] == "checkpoint meta config"
    assert model.load_report.settings["classes"] == "checkpoint meta CLASSES/PALETTE"
    # the log line names the common source once, the others after their setting
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"settings of {neutral}"))
    assert "from checkpoint meta config" in line and "align_corners=True," in line
    assert "classes=19 names (checkpoint meta CLASSES/PALETTE)" in line
    assert _same_weights(model, zoo)
    assert load_pretrained(neutral, align_corners=False).config.align_corners is False


def test_renamed_zoo_file_recognised_by_sha256(r50_cityscapes, tmp_path):
    path, _, _ = r50_cityscapes
    digest = sha256_file(path)
    entry = get_weight("pspnet_r50-d8_cityscapes-769x769-40k")
    fake = Weights(
        "test-sha-entry",
        f"https://example.invalid/x/released-{digest[:8]}.pth",
        digest[:8],
        "mmseg",
        entry.config,
        entry.meta,
    )
    register_weights(fake)
    try:
        renamed = tmp_path / "renamed.pth"
        shutil.copyfile(path, renamed)
        model = load_pretrained(renamed)
        assert model.load_report.settings["align_corners"] == "zoo entry test-sha-entry (by sha256)"
        assert model.config.align_corners is True and model.pretrained_cfg["inference"]["mode"] == "slide"
    finally:
        unregister_weights("test-sha-entry")


def test_config_text_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = (
        CONFIG_0X + f"\nx = __import__('pathlib').Path({str(marker)!r}).touch()\nmodel2 = open({str(marker)!r}, 'w')\n"
    )
    parsed = parse_config_text(text)
    assert not marker.exists() and "x" not in parsed and "gpu_ids" not in parsed
    assert parsed["model"]["decode_head"]["norm_cfg"] == {"type": "SyncBN", "requires_grad": True}  # names resolve
    with pytest.raises(ValueError, match="more than"):
        parse_config_text("a = 1\n" * 200_000)
    with pytest.raises(ValueError, match="not valid Python"):
        parse_config_text("model = dict(")
    assert read_checkpoint_config({"config": "model = dict("}) is None  # ignored with a warning, weights still load


def test_mmseg_1x_config_and_d32_backbone():
    text = """model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    backbone=dict(type='ResNet', depth=18, dilations=(1, 1, 2, 4), strides=(1, 2, 2, 2), contract_dilation=True),
    decode_head=dict(type='PSPHead', num_classes=150, align_corners=False, pool_scales=(1, 2, 3, 6)),
    test_cfg=dict(mode='whole'))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(2048, 512), keep_ratio=True)]
"""
    config, extra = settings_from_config(parse_config_text(text))
    assert config == {
        "align_corners": False,
        "num_classes": 150,
        "bins": [1, 2, 3, 6],
        "backbone": "resnet18",
        "stem": "standard",
        "contract_dilation": True,
        "output_stride": 32,
        "dilations": [1, 1, 2, 4],
    }
    assert extra["inference"] == {"mode": "whole", "resize": [2048, 512]}
    assert extra["mean"] == pytest.approx([0.485, 0.456, 0.406])
