"""Saving a trained model for use elsewhere, and loading models named on the command line.

The final model of a training run is exported with ``model.save_pretrained(directory)`` (the
Hugging Face Hub mixin: ``config.json`` + ``model.safetensors``) when the model class has it.
Otherwise an equivalent directory is written here with safetensors directly: ``config.json``
(the :class:`~pspnet_lib.PSPNetConfig` fields), ``pretrained_cfg.json`` (normalisation, classes,
palette, inference protocol) and ``model.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import atomic_write_bytes

__all__ = ["save_trained_model", "load_model_dir", "load_model", "is_model_dir", "load_backbone_weights"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
PRETRAINED_CFG_NAME = "pretrained_cfg.json"
WEIGHTS_NAME = "model.safetensors"


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def save_trained_model(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model`` (a PSPNet) to ``directory`` so that it can be loaded without the training code.

    Uses ``model.save_pretrained`` when available; otherwise writes ``config.json``,
    ``pretrained_cfg.json`` and ``model.safetensors`` itself, each file atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
        return directory
    from safetensors.torch import save

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError("save_trained_model expects a PSPNet (a model with a PSPNetConfig in .config)")
    # Contiguous, unshared CPU tensors: what safetensors requires (channels_last weights are strided).
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    pretrained_cfg = _json_safe(getattr(model, "pretrained_cfg", {}) or {})
    atomic_write_bytes(directory / PRETRAINED_CFG_NAME, (json.dumps(pretrained_cfg, indent=2) + "\n").encode())
    return directory


def is_model_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def load_model_dir(directory: str | os.PathLike) -> nn.Module:
    """Load a directory written by :func:`save_trained_model` (the fallback layout)."""
    from safetensors.torch import load_file

    from ..models import PSPNet, PSPNetConfig

    directory = Path(directory)
    if not is_model_dir(directory):
        raise FileNotFoundError(f"{directory} does not hold {CONFIG_NAME} and {WEIGHTS_NAME}")
    config = json.loads((directory / CONFIG_NAME).read_text())
    if isinstance(config.get("config"), dict):  # a save_pretrained layout that nests the architecture
        pretrained_cfg = config.get("pretrained_cfg") or {}
        config = config["config"]
    else:
        pretrained_cfg = {}
    cfg_file = directory / PRETRAINED_CFG_NAME
    if cfg_file.is_file():
        pretrained_cfg = json.loads(cfg_file.read_text())
    model = PSPNet(PSPNetConfig.from_dict(config), pretrained_cfg=pretrained_cfg)
    model.load_state_dict(load_file(directory / WEIGHTS_NAME))
    return model


def _load_training_checkpoint(path: Path) -> nn.Module:
    from ..models import PSPNet, PSPNetConfig
    from .checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if not state.get("model_config"):
        raise ValueError(f"{path} does not record the model's architecture (model_config); it cannot be rebuilt")
    model = PSPNet(PSPNetConfig.from_dict(state["model_config"]), pretrained_cfg=state.get("pretrained_cfg") or {})
    model.load_state_dict(state["model"])
    return model


def load_model(spec: str | os.PathLike, num_classes: int | None = None) -> nn.Module:
    """A PSPNet from a training checkpoint (``.pt``), a saved model directory, or a zoo name / Hub id / file.

    Names, Hub ids, ImageNet backbones (e.g. ``resnet50_v1c``) and other checkpoint layouts go
    through :func:`pspnet_lib.load_pretrained` (the weights hub). With ``num_classes``, the
    classifiers are replaced by fresh ones when the weights were trained for another number
    of classes (fine-tuning); everything else is loaded.
    """
    path = Path(spec)
    model = _load_training_checkpoint(path) if _is_training_checkpoint(path) else None
    if model is None:
        try:
            from .. import load_pretrained  # type: ignore[attr-defined]
        except ImportError:
            if not is_model_dir(path):
                raise RuntimeError(
                    f"cannot load {str(spec)!r}: it is not a training checkpoint or a saved model directory, and "
                    "pspnet_lib.load_pretrained (zoo names, Hub ids, other checkpoint formats) is not available "
                    "in this installation"
                ) from None
            model = load_model_dir(path)
        else:
            return load_pretrained(str(spec), num_classes=num_classes)
    if num_classes is not None and model.config.num_classes != num_classes:
        logger.info("replacing the %d-class classifiers of %s with fresh %d-class ones", model.config.num_classes,
                    spec, num_classes)
        model.reset_classifier(num_classes)
    return model


def _is_training_checkpoint(path: Path) -> bool:
    """A file written by the Trainer (cheap check: torch's zip format holding our marker)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # torch.save's archive format
            return False
    from .checkpoint import CHECKPOINT_FORMAT

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Initialise ``model.backbone`` from an ImageNet checkpoint file; returns the loaded key names.

    Accepts torchvision ResNets (7x7 stem: build with ``preset="mmseg-b"``), mmsegmentation's
    ResNetV1c (``open-mmlab://resnet50_v1c``; ``preset="mmseg"``) and the author's deep-base
    ResNets (``resnet50_v2.pth``; ``preset="semseg"``), wrapped in ``state_dict``/``model`` or not.
    """
    from ..hub.converters import convert_state_dict, detect_format, strip_prefix

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = strip_prefix(state)
    layout = detect_format(state)
    converted = {k: v for k, v in convert_state_dict(state, layout).items() if k.startswith("backbone.")}
    own = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    missing = sorted(set(own) - set(converted))
    mismatched = [k for k in own if k in converted and tuple(converted[k].shape) != tuple(own[k].shape)]
    if missing or mismatched:
        stems = {"torchvision": "mmseg-b (7x7 stem)", "mmseg_backbone": "mmseg (deep stem 32-32-64)",
                 "semseg_backbone": "semseg (deep stem 64-64-128)"}
        hint = f"; these {layout} weights fit --preset {stems[layout]}" if layout in stems else ""
        detail = missing[:3] if missing else [f"{k}: {tuple(converted[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:3]]
        raise ValueError(
            f"backbone weights {path} do not fit this model's {getattr(getattr(model, 'config', None), 'backbone', 'backbone')} "
            f"({len(missing)} missing, {len(mismatched)} of another shape, e.g. {detail}){hint}"
        )
    model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in converted.items()})
    return sorted(converted)
