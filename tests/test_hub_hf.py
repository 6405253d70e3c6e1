"""Hugging Face Hub: save_pretrained / from_pretrained, and hf-hub: sources through the real client's cache."""

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from pspnet_lib import PSPNet, build_pspnet, load_pretrained
from pspnet_lib.hub import OfflineError

from .hub_utils import SMALL, make_hf_cache

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
CLASSES = ["sky", "road", "car"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model with non-trivial weights and a pretrained_cfg, saved with save_pretrained."""
    torch.manual_seed(3)
    model = build_pspnet("resnet18", 3, stem="standard", output_stride=16, **SMALL).train()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values
        model(x)
    model.eval()
    model.pretrained_cfg = {
        "name": "toy-pspnet",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "classes": CLASSES,
        "palette": [[0, 0, 255], [128, 64, 128], [0, 0, 142]],
        "ignore_index": 255,
        "dataset": "toy",
        "inference": {"mode": "slide", "resize": [2048, 1024], "crop": [769, 769], "stride": [513, 513]},
        "tta": {"scales": [0.5, 1.0], "flip": True},
        "metrics": {"mIoU": 55.5, "mIoU_ms_flip": 56.25, "split": "val", "source": "https://example.org/zoo"},
        "license": "Apache-2.0",
        "source": "https://example.org/zoo",
    }
    folder = tmp_path_factory.mktemp("saved") / "toy"
    model.save_pretrained(folder)
    with torch.no_grad():
        expected = model(torch.randn(1, 3, 37, 45, generator=torch.Generator().manual_seed(0)), return_aux=True)
    return {"model": model, "folder": folder, "expected": expected}


def _outputs(model):
    with torch.no_grad():
        return model(torch.randn(1, 3, 37, 45, generator=torch.Generator().manual_seed(0)), return_aux=True)


def _same(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_save_pretrained_files(trained):
    folder = trained["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["config"] == trained["model"].config.to_dict()
    assert config["pretrained_cfg"]["classes"] == CLASSES and config["library"] == "pspnet_lib"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["pspnet_lib.config"]) == config["config"]
        assert set(f.keys()) == set(trained["model"].state_dict())


def test_model_card_has_classes_preprocessing_metrics_license_source(trained):
    text = (trained["folder"] / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "apache-2.0" and header["library_name"] == "pspnet_lib"
    assert header["pipeline_tag"] == "image-segmentation"
    results = header["model-index"][0]["results"]
    values = sorted(m["value"] for r in results for m in r["metrics"])
    assert values == [55.5, 56.25]
    assert results[0]["task"]["type"] == "image-segmentation" and results[0]["dataset"]["type"] == "toy"
    assert "| 2 | car | (0, 0, 142) |" in text
    assert "mean [0.485, 0.456, 0.406]" in text and "769x769 windows every 513x513" in text
    assert "https://example.org/zoo" in text


def test_from_pretrained_folder_rebuilds_exactly(trained):
    model = PSPNet.from_pretrained(trained["folder"])
    assert model.config == trained["model"].config and not model.training
    assert model.pretrained_cfg == trained["model"].pretrained_cfg
    _same(_outputs(model), trained["expected"])
    _same(_outputs(load_pretrained(trained["folder"])), trained["expected"])
    single = load_pretrained(trained["folder"] / "model.safetensors")  # config from the file's metadata
    assert single.config == trained["model"].config
    _same(_outputs(single), trained["expected"])


def test_hf_hub_source_from_prepopulated_cache(trained, tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    make_hf_cache(cache, "someone/pspnet-toy", trained["folder"], COMMIT_A)
    model = load_pretrained("hf-hub:someone/pspnet-toy", cache_dir=cache, local_files_only=True)
    _same(_outputs(model), trained["expected"])
    assert model.pretrained_cfg["classes"] == CLASSES and model.pretrained_cfg["hf_hub_id"] == "someone/pspnet-toy"

    via_mixin = PSPNet.from_pretrained("someone/pspnet-toy", cache_dir=cache, local_files_only=True)
    _same(_outputs(via_mixin), trained["expected"])

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline mode alone, without local_files_only
    _same(_outputs(load_pretrained("hf-hub:someone/pspnet-toy", cache_dir=cache)), trained["expected"])
    _same(_outputs(load_pretrained(f"hf-hub:someone/pspnet-toy@{COMMIT_A}", cache_dir=cache)), trained["expected"])


def test_hf_hub_revision_selects_snapshot(trained, tmp_path):
    cache = tmp_path / "hf"
    make_hf_cache(cache, "someone/pspnet-toy", trained["folder"], COMMIT_A)
    other = tmp_path / "other"
    changed = build_pspnet("resnet18", 4, **SMALL).eval()
    changed.save_pretrained(other)
    make_hf_cache(cache, "someone/pspnet-toy", other, COMMIT_B, refs=("v2",))
    assert load_pretrained("hf-hub:someone/pspnet-toy", cache_dir=cache, local_files_only=True).num_classes == 3
    assert load_pretrained("hf-hub:someone/pspnet-toy@v2", cache_dir=cache, local_files_only=True).num_classes == 4
    assert (
        load_pretrained("hf-hub:someone/pspnet-toy", revision="v2", cache_dir=cache, local_files_only=True).num_classes
        == 4
    )


def test_hf_hub_num_classes_override(trained, tmp_path):
    cache = tmp_path / "hf"
    make_hf_cache(cache, "someone/pspnet-toy", trained["folder"], COMMIT_A)
    model = load_pretrained("hf-hub:someone/pspnet-toy", num_classes=7, cache_dir=cache, local_files_only=True)
    assert model.num_classes == 7 and "classes" not in model.pretrained_cfg
    assert sorted(model.load_report.reinitialised) == sorted(
        [
            "decode_head.classifier.weight",
            "decode_head.classifier.bias",
            "aux_head.classifier.weight",
            "aux_head.classifier.bias",
        ]
    )


def test_hf_hub_not_cached_offline_message(tmp_path):
    with pytest.raises(
        OfflineError, match=r"hf-hub:nobody/nothing is not in the Hugging Face cache.*hf download nobody/nothing"
    ):
        load_pretrained("hf-hub:nobody/nothing", cache_dir=tmp_path, local_files_only=True)


@pytest.mark.parametrize(
    "source, kwargs, message",
    [
        ("hf-hub:justaname", {}, "malformed Hub source"),
        ("hf-hub:a/b@v1", {"revision": "v2"}, "names revision 'v1' but revision='v2'"),
        ("hf-hub:a/b", {"format": "mmseg"}, "format= applies to checkpoint files"),
    ],
)
def test_bad_hf_sources(source, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_pretrained(source, **kwargs)


def test_from_pretrained_folder_without_config(tmp_path):
    build_pspnet("resnet18", 2, **SMALL).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json with a pspnet_lib config"):
        PSPNet.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a save_pretrained folder"):
        load_pretrained(tmp_path / "m")


def test_model_card_repo_id(tmp_path):
    model = build_pspnet("resnet18", 2, **SMALL)
    model.save_pretrained(tmp_path / "m", model_card_kwargs={"repo_id": "my-org/pspnet-x"})
    text = (tmp_path / "m" / "README.md").read_text()
    assert 'load_pretrained("hf-hub:my-org/pspnet-x")' in text and "license" not in text.split("---")[1]
