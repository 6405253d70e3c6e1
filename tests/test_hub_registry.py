"""The zoo: every entry listed with complete, consistent metadata; names, aliases, transforms."""

import re

import pytest
import torch
from torchvision import tv_tensors

import pspnet_lib
from pspnet_lib import PSPNet, PSPNetConfig, get_weight, list_pretrained
from pspnet_lib.hub import DATASET_INFO, Weights, register_weights, unregister_weights
from pspnet_lib.inference.modes import MODES

SEGMENTATION = list_pretrained(task="semantic-segmentation")
BACKBONES = list_pretrained(task="backbone")


def test_required_entries_exist():
    for depth in (18, 50, 101):
        for crop in ("512x1024", "769x769"):
            assert f"pspnet_r{depth}-d8_cityscapes-{crop}-80k" in SEGMENTATION
    for depth in (50, 101):
        for crop in ("512x1024", "769x769"):
            assert f"pspnet_r{depth}-d8_cityscapes-{crop}-40k" in SEGMENTATION
        for schedule in ("80k", "160k"):
            assert f"pspnet_r{depth}-d8_ade20k-512x512-{schedule}" in SEGMENTATION
        for schedule in ("20k", "40k"):
            assert f"pspnet_r{depth}-d8_voc12aug-512x512-{schedule}" in SEGMENTATION
    datasets = {get_weight(n).meta["dataset"] for n in SEGMENTATION}
    assert datasets == set(DATASET_INFO)
    assert {
        "pspnet_r50-d32_cityscapes-512x1024-80k",
        "pspnet_r50b-d32_cityscapes-512x1024-80k",
        "pspnet_r18b-d8_cityscapes-769x769-80k",
    } <= set(SEGMENTATION)
    assert BACKBONES == sorted(f"resnet{d}_{k}" for d in (18, 50, 101) for k in ("v1c", "torchvision"))
    assert len(SEGMENTATION) == 54


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_entry_is_complete_and_consistent(name):
    w = get_weight(name)
    assert w.url.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/")
    assert w.url.endswith(f"-{w.sha256}.pth") and re.fullmatch(r"[0-9a-f]{8}", w.sha256)
    assert w.format == "mmseg"
    meta = w.meta
    dataset = DATASET_INFO[meta["dataset"]]
    assert (
        meta["num_classes"]
        == len(meta["categories"])
        == len(meta["palette"])
        == w.config["num_classes"]
        == dataset.num_classes
    )
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta["palette"])
    assert meta["ignore_index"] == 255 and isinstance(meta["reduce_zero_label"], bool)
    assert meta["license"] == "Apache-2.0" and meta["source"].startswith("https://github.com/open-mmlab/mmsegmentation")
    assert meta["upstream_config"].endswith(meta["upstream_name"] + ".py")
    metrics = meta["metrics"]
    assert 20 < metrics["mIoU"] < 90 and (metrics["mIoU_ms_flip"] is None or 20 < metrics["mIoU_ms_flip"] < 90)
    protocol = meta["inference"]
    assert protocol["mode"] in MODES and len(protocol["resize"]) == 2
    if protocol["mode"] == "slide":
        assert 0 < protocol["stride"][0] <= protocol["crop"][0]
    assert meta["tta"] == {"scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}
    # the recorded architecture builds (on the meta device: no memory, no compute)
    with torch.device("meta"):
        model = PSPNet(PSPNetConfig.from_dict(w.config))
    assert model.num_classes == meta["num_classes"]
    code = name.split("_")[1]
    assert model.config.stem == ("standard" if re.match(r"r\d+b-", code) else "deep")
    assert model.config.output_stride == (32 if "-d32" in code else 8)
    assert model.config.align_corners == (meta["crop_size"] == [769, 769])
    cfg = w.pretrained_cfg()
    for key in ("mean", "std", "classes", "palette", "ignore_index", "inference", "name", "url", "sha256", "license"):
        assert key in cfg


def test_known_facts():
    ade = get_weight("pspnet_r50-d8_ade20k-512x512-80k")
    assert ade.sha256 == "15a8b914" and ade.meta["metrics"]["mIoU"] == 41.13
    assert ade.meta["categories"][:3] == ["wall", "building", "sky"] and ade.meta["categories"][7] == "bed"
    assert ade.meta["reduce_zero_label"]
    cs769 = get_weight("pspnet_r101-d8_cityscapes-769x769-80k")
    assert cs769.url.startswith("https://download.openmmlab.com/")  # not the metafile's misspelled host
    assert cs769.config["align_corners"] and cs769.meta["inference"]["mode"] == "slide"
    assert get_weight("pspnet_r50-d8_voc12aug-512x512-20k").meta["categories"][0] == "background"
    assert DATASET_INFO["cityscapes"].classes[-1] == "bicycle" and DATASET_INFO["pascal-context-59"].num_classes == 59
    assert DATASET_INFO["coco-stuff164k"].num_classes == 171 and DATASET_INFO["isaid"].num_classes == 16
    d32 = get_weight("pspnet_r50-d32_cityscapes-512x1024-80k").config
    assert d32["output_stride"] == 32 and d32["dilations"] == [1, 1, 2, 4]


def test_backbone_entries():
    tv = get_weight("resnet50_torchvision")
    assert tv.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth" and tv.format == "torchvision"
    assert tv.config["stem"] == "standard" and tv.task == "backbone"
    v1c = get_weight("resnet101_v1c")
    assert v1c.sha256 == "e67eebb6" and v1c.config == {"backbone": "resnet101", "stem": "deep", "stem_channels": 64}


def test_aliases_point_to_best_single_scale():
    assert get_weight("pspnet_r50-d8_ade20k").name == "pspnet_r50-d8_ade20k-512x512-160k"
    assert get_weight("pspnet_r101-d8_cityscapes").name == "pspnet_r101-d8_cityscapes-769x769-80k"
    aliases = set(list_pretrained(include_aliases=True)) - set(list_pretrained())
    for alias in aliases:
        target = get_weight(alias)
        siblings = [get_weight(n) for n in SEGMENTATION if n.startswith(alias + "-") and n.rsplit("-", 2)[0] == alias]
        assert target.meta["metrics"]["mIoU"] == max(s.meta["metrics"]["mIoU"] for s in siblings)


def test_list_filter_and_unknown_names():
    assert list_pretrained("*ADE20K*") == [n for n in SEGMENTATION if "ade20k" in n]
    assert list_pretrained("nothing*") == []
    with pytest.raises(ValueError, match=r"Did you mean 'pspnet_r18-d8_loveda-512x512-80k'"):
        get_weight("pspnet_r18-d8_loveda-512x512-8k")
    with pytest.raises(ValueError, match="unknown task"):
        list_pretrained(task="detection")


def test_register_validates():
    w = Weights(
        "my-model", "https://example.org/my-model-abcdef12.pth", "abcdef12", "pspnet_lib", {"backbone": "resnet18"}
    )
    register_weights(w)
    try:
        assert get_weight("my-model") is w and "my-model" in list_pretrained()
        with pytest.raises(ValueError, match="already exists"):
            register_weights(w)
    finally:
        unregister_weights("my-model")
    assert "my-model" not in list_pretrained()
    with pytest.raises(ValueError, match="sha256 must be 8 to 64 lowercase hex"):
        register_weights(Weights("x", "https://e/x.pth", "XYZ", "mmseg", {}))


def test_transforms_resize_and_normalise():
    ade = get_weight("pspnet_r50-d8_ade20k-512x512-80k").transforms()
    image = torch.randint(0, 256, (3, 600, 900), dtype=torch.uint8)
    out = ade(image)
    assert out.dtype == torch.float32 and out.shape == (3, 512, 768)  # short side 512 (long side <= 2048)
    expected = (image[:, :1, :1].float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(3, 1, 1)
    unresized = get_weight("pspnet_r50-d8_ade20k-512x512-80k").transforms(resize=False)(image)
    torch.testing.assert_close(unresized[:, :1, :1], expected)

    potsdam = get_weight("pspnet_r18-d8_potsdam-512x512-80k").transforms()
    img, mask = potsdam(
        tv_tensors.Image(torch.zeros(3, 1000, 600, dtype=torch.uint8)),
        tv_tensors.Mask(torch.arange(6).repeat(1000, 100)),
    )
    assert img.shape == (3, 512, 307) and mask.shape == (512, 307)
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) <= set(range(6))  # nearest: no new labels

    cityscapes = get_weight("pspnet_r18-d8_cityscapes-512x1024-80k").transforms()
    assert cityscapes(torch.zeros(3, 1024, 2048, dtype=torch.uint8)).shape == (3, 1024, 2048)  # already fits


def test_get_weights_is_a_deprecated_alias_of_get_weight():
    with pytest.warns(DeprecationWarning, match="use pspnet_lib.get_weight"):
        old = pspnet_lib.get_weights("pspnet_r50-d8_ade20k")
    assert old is get_weight("pspnet_r50-d8_ade20k")
    assert "get_weights" not in pspnet_lib.__all__ and "get_weight" in pspnet_lib.__all__
