"""Helpers shared by the inference/export tests: a tiny model and a saved model folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pspnet_lib import build_pspnet

CLASSES = ["sky", "tree", "road", "car", "person"]


def tiny_model(**overrides) -> torch.nn.Module:
    """ResNet-18 PSPNet with narrow heads, non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    options = dict(num_classes=5, head_channels=32, aux_channels=16, ppm_channels=8)
    options.update(overrides)
    model = build_pspnet("resnet18", **options)
    # Random running statistics so that outputs depend on the input in a non-degenerate way.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


def save_model_dir(model: torch.nn.Module, folder: Path) -> Path:
    """Write ``model`` as a config.json + model.safetensors folder that ``--weights`` accepts.

    Uses ``save_pretrained`` when the model has it (the hub's format); otherwise writes the same
    two files in the layout of ``PyTorchModelHubMixin`` (``__init__`` kwargs in config.json).
    """
    folder = Path(folder)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
        return folder
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"config": model.config.to_dict(), "pretrained_cfg": model.pretrained_cfg}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder
