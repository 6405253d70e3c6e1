"""hubconf.py through torch.hub itself (source="local")."""

from pathlib import Path

import pytest
import torch

from pspnet_lib import PSPNet

from .hub_utils import SMALL, write_mmseg_checkpoint
from .reference import relative_error

REPO = str(Path(__file__).resolve().parents[1])
ENTRY_POINTS = [
    "get_weight",
    "list_models",
    "list_pretrained",
    "pspnet_convnext_tiny_d8",
    "pspnet_efficientnet_b3_d8",
    "pspnet_mobilenetv3_large_d8",
    "pspnet_r101_d8",
    "pspnet_r101b_d8",
    "pspnet_r18_d8",
    "pspnet_r18b_d8",
    "pspnet_r50_d32",
    "pspnet_r50_d8",
    "pspnet_r50b_d32",
    "pspnet_r50b_d8",
    "pspnet_regnety_040_d8",
    "pspnet_semseg101",
    "pspnet_semseg50",
]


@pytest.fixture
def github_checkout(monkeypatch):
    """torch.hub's GitHub path with the download step answered by this checkout (no network)."""
    calls = []

    def fake_get_cache_or_reload(github, *args, **kwargs):
        calls.append(github)
        return REPO

    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", fake_get_cache_or_reload)
    return calls


def test_only_public_builders_are_listed(github_checkout):
    assert sorted(torch.hub.list("owner/pspnet_lib", trust_repo=True)) == ENTRY_POINTS
    assert github_checkout == ["owner/pspnet_lib"]


def test_github_style_load(github_checkout):
    model = torch.hub.load("owner/pspnet_lib", "pspnet_r18_d8", trust_repo=True, num_classes=2, **SMALL)
    assert isinstance(model, PSPNet) and model.num_classes == 2


def test_help_documents_arguments(github_checkout):
    doc = torch.hub.help("owner/pspnet_lib", "pspnet_r50_d8", trust_repo=True)
    assert "pretrained" in doc and "num_classes" in doc and "pspnet_r50-d8_ade20k-512x512-160k" in doc
    assert "mmsegmentation R-50-D8" in doc


@pytest.mark.parametrize(
    "entry, stem, output_stride, stem_channels",
    [("pspnet_r18_d8", "deep", 8, 64), ("pspnet_r18b_d8", "standard", 8, 64)],
)
def test_build_random_init(entry, stem, output_stride, stem_channels):
    model = torch.hub.load(REPO, entry, source="local", pretrained=False, num_classes=3, **SMALL)
    assert isinstance(model, PSPNet)
    cfg = model.config
    assert (cfg.stem, cfg.output_stride, cfg.stem_channels, cfg.num_classes) == (stem, output_stride, stem_channels, 3)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 33, 33)).shape == (1, 3, 33, 33)


def test_d32_and_semseg_families_configure_the_architecture():
    with torch.device("meta"):
        d32 = torch.hub.load(REPO, "pspnet_r50b_d32", source="local", num_classes=19, **SMALL)
        semseg = torch.hub.load(REPO, "pspnet_semseg50", source="local", num_classes=150, **SMALL)
    assert d32.config.output_stride == 32 and d32.config.dilations == [1, 1, 2, 4] and d32.config.stem == "standard"
    assert semseg.config.stem_channels == 128 and semseg.config.align_corners and not semseg.config.contract_dilation


def test_pretrained_file_and_list(tmp_path):
    path = tmp_path / "pspnet_r18.pth"
    data = write_mmseg_checkpoint(path)
    model = torch.hub.load(REPO, "pspnet_r18_d8", source="local", pretrained=str(path))
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4
    names = torch.hub.load(REPO, "list_pretrained", source="local", filter="pspnet_r18-d8_*")
    assert "pspnet_r18-d8_cityscapes-512x1024-80k" in names and all(n.startswith("pspnet_r18-d8_") for n in names)


def test_pretrained_errors():
    with pytest.raises(ValueError, match=r"'pspnet_r50-d8_ade20k-512x512-80k' is not a pspnet_r18_d8 checkpoint"):
        torch.hub.load(REPO, "pspnet_r18_d8", source="local", pretrained="pspnet_r50-d8_ade20k-512x512-80k")
    with pytest.raises(ValueError, match=r"no downloadable default weights.*pretrained='path/to/checkpoint.pth'"):
        torch.hub.load(REPO, "pspnet_semseg50", source="local", pretrained=True)
