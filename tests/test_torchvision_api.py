"""torchvision's model and weights API: list_models / get_model / get_model_weights / get_weight / weights=."""

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import pspnet_lib
from pspnet_lib import build_pspnet, get_model, get_model_weights, get_weight, list_models, list_pretrained
from pspnet_lib.hub import Weights, register_weights, unregister_weights
from pspnet_lib.hub.zoo_stats import count_stats
from pspnet_lib.models import variants

from .hub_utils import SMALL, serve_directory, write_mmseg_checkpoint
from .reference import relative_error

REPO = str(Path(__file__).resolve().parents[1])
NAME = "test_pspnet_r18-d8_tvapi-5cls"


def test_list_models_is_one_scheme_with_the_zoo_and_hubconf():
    names = list_models()
    assert names == sorted(v.name for v in variants.VARIANTS.values())
    assert "pspnet_r50_d8" in names and list_models("*r18*") == ["pspnet_r18_d8", "pspnet_r18b_d8"]
    # every segmentation entry of the zoo belongs to a listed model, named by its prefix
    for name in list_pretrained(task="semantic-segmentation"):
        model = get_weight(name).meta["model"]
        assert model in names
        assert name.startswith(model.replace("_", "-").replace("pspnet-", "pspnet_"))


@pytest.mark.parametrize("name", list_models())
def test_get_model_every_name_random_init(name):
    with torch.device("meta"):
        model = get_model(name, weights=None, num_classes=5)
    assert isinstance(model, pspnet_lib.PSPNet) and model.num_classes == 5 and model.training
    variant = variants.get_variant(name)
    for key, value in variant.architecture.items():
        assert getattr(model.config, key) == value


def test_get_model_unknown_name_and_bad_weights():
    with pytest.raises(ValueError, match=r"unknown model 'pspnet_r50_d9'.*Did you mean 'pspnet_r50_d8'"):
        get_model("pspnet_r50_d9")
    with pytest.raises(TypeError, match=r"not a bool"):
        get_model("pspnet_r18_d8", weights=True)
    with pytest.raises(ValueError, match=r"either weights= .* or pretrained="):
        get_model("pspnet_r18_d8", weights="DEFAULT", pretrained=True)
    with pytest.raises(ValueError, match=r"no downloadable default weights"):
        get_model("pspnet_semseg50", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"is not a pspnet_r18_d8 checkpoint"):
        get_model("pspnet_r18_d8", weights="pspnet_r50-d8_ade20k-512x512-80k")


def test_hub_load_weights_none():
    model = torch.hub.load(REPO, "pspnet_r18_d8", source="local", weights=None, num_classes=5, **SMALL)
    assert model.num_classes == 5 and model.config.stem == "deep"
    weights = torch.hub.load(REPO, "get_weight", source="local", name="pspnet_r50-d8_ade20k")
    assert weights.name == "pspnet_r50-d8_ade20k-512x512-160k"
    assert "pspnet_r50_d8" in torch.hub.load(REPO, "list_models", source="local")


def test_weights_meta_has_torchvision_fields():
    voc = get_weight("pspnet_r50-d8_voc12aug-512x512-20k")
    # mmsegmentation's R50-D8 with the aux head for 21 classes
    assert voc.meta["num_params"] == 48_977_034
    for name in ("pspnet_r50-d8_ade20k-512x512-80k", "pspnet_r18-d8_cityscapes-512x1024-80k"):
        w = get_weight(name)
        with torch.device("meta"):
            model = pspnet_lib.PSPNet(pspnet_lib.PSPNetConfig.from_dict(w.config))
        assert w.meta["num_params"] == sum(p.numel() for p in model.parameters())
        size = tuple(w.meta["crop_size"])
        assert w.meta["_ops_size"] == list(size)
        assert {k: w.meta[k] for k in ("num_params", "_ops", "_file_size")} == count_stats(w.config, size)
    r50 = get_weight("pspnet_r50-d8_cityscapes-512x1024-80k").meta
    # mmsegmentation's get_flops reports ~357 GFLOPs for PSPNet R-50-D8 at 512x1024
    assert 340 < r50["_ops"] < 370 and 190 < r50["_file_size"] < 200
    assert r50["min_size"] == (1, 1) and r50["recipe"] == "cityscapes-mmseg-80k"
    assert "pspnet train --recipe cityscapes-mmseg-80k" in r50["_docs"] and "78.55" in r50["_docs"]
    assert get_weight("pspnet_r101-d8_ade20k").meta["recipe"] == "ade20k-mmseg-160k"
    assert "--backbone resnet101" in get_weight("pspnet_r101-d8_ade20k").meta["_docs"]
    assert get_weight("pspnet_r50-d8_loveda-512x512-80k").meta["recipe"] is None
    from pspnet_lib.recipes import list_recipes

    for name in list_pretrained(task="semantic-segmentation"):
        meta = get_weight(name).meta
        assert meta["num_params"] and meta["_ops"] and meta["_file_size"], (
            f"{name}: run python -m pspnet_lib.hub.zoo_stats --write"
        )
        assert meta["recipe"] is None or meta["recipe"] in list_recipes()


def test_get_model_weights_enum():
    enum = get_model_weights("pspnet_r50_d8")
    assert enum.__name__ == "PSPNet_R50_D8_Weights"
    assert enum.DEFAULT.value is get_weight("pspnet_r50-d8_ade20k-512x512-160k")
    assert enum.ADE20K_512X512_80K.url.endswith("15a8b914.pth") and enum.DEFAULT.meta["num_classes"] == 150
    assert get_weight("PSPNet_R50_D8_Weights.DEFAULT") is enum.DEFAULT.value
    assert get_weight(enum.VOC12AUG_512X512_20K).name == "pspnet_r50-d8_voc12aug-512x512-20k"
    assert "RSB_CITYSCAPES_512X1024_80K" in get_model_weights("pspnet_r50b_d8").__members__
    with pytest.raises(ValueError, match=r"has no member 'NOPE'"):
        get_weight("PSPNet_R50_D8_Weights.NOPE")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    tmp = root / "tmp.pth"
    data = write_mmseg_checkpoint(tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = root / f"pspnet_r18-d8_tvapi_20240101_000000-{sha[:8]}.pth"
    tmp.rename(path)
    return {"dir": root, "path": path, "sha": sha, "data": data}


@pytest.fixture
def zoo_entry(published, monkeypatch, tmp_path):
    """A zoo entry of pspnet_r18_d8 served on 127.0.0.1 and made the model's DEFAULT."""
    with serve_directory(published["dir"]) as server:
        config = {**get_weight("pspnet_r18-d8_cityscapes-512x1024-80k").config, "num_classes": 5}
        meta = {
            **get_weight("pspnet_r18-d8_cityscapes-512x1024-80k").meta,
            "num_classes": 5,
            "categories": list("abcde"),
            "palette": [[i, i, i] for i in range(5)],
        }
        weights = register_weights(
            Weights(NAME, f"{server.url}/{published['path'].name}", published["sha"][:8], "mmseg", config, meta),
            overwrite=True,
        )
        variant = variants.VARIANTS["r18-d8"]
        monkeypatch.setitem(variants.VARIANTS, "r18-d8", dataclasses.replace(variant, default_weights=NAME))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        try:
            yield weights
        finally:
            unregister_weights(NAME)


def test_weights_argument_loads_the_same_model_every_way(zoo_entry, published, tmp_path):
    data = published["data"]
    cache = tmp_path / "cache"
    models = [
        get_model("pspnet_r18_d8", weights="DEFAULT", cache_dir=cache, progress=False),
        get_model("pspnet_r18_d8", weights=zoo_entry, cache_dir=cache),
        get_model("pspnet_r18_d8", weights=get_model_weights("pspnet_r18_d8").DEFAULT, cache_dir=cache),
        pspnet_lib.hub.entrypoints.ENTRY_POINTS["pspnet_r18_d8"](pretrained=True, cache_dir=cache),
        build_pspnet("resnet18", weights=NAME, cache_dir=cache),
        build_pspnet("resnet18", weights="DEFAULT", cache_dir=cache),
        torch.hub.load(REPO, "pspnet_r18_d8", source="local", weights=NAME, cache_dir=cache),
    ]
    for model in models:
        assert not model.training and model.num_classes == 5
        with torch.no_grad():
            assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4
    tuned = build_pspnet("resnet18", 3, weights=NAME, cache_dir=cache)
    assert tuned.num_classes == 3 and tuned.load_report.reinitialised
    with pytest.raises(ValueError, match=r"are for a backbone='resnet18' model, but backbone='resnet50'"):
        build_pspnet("resnet50", weights=NAME, cache_dir=cache)
    with pytest.raises(ValueError, match=r"are for a stem='deep'.*stem='standard'"):
        build_pspnet("resnet18", weights=NAME, preset="mmseg-b", cache_dir=cache)
    with pytest.raises(ValueError, match=r"no model of the zoo has this architecture"):
        build_pspnet("resnet34", weights="DEFAULT")
