"""Loading the models named on the command line: training checkpoints, or anything ``load_pretrained`` reads.

A training run's final model is written with ``model.save_pretrained`` (``config.json`` +
``model.safetensors``), which :func:`pspnet_lib.load_pretrained` reads back; the Trainer's own
``.pt`` checkpoints (model, optimiser and RNG state) are read here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["load_model"]

logger = logging.getLogger(__name__)


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
    if not _is_training_checkpoint(path):
        from ..hub.loading import load_pretrained

        return load_pretrained(str(spec), num_classes=num_classes)
    model = _load_training_checkpoint(path)
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
    from ..core.constants import CHECKPOINT_FORMAT

    from ..hub.serialization import CheckpointError, read_checkpoint

    try:
        state = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return False
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT
