"""What the parts of the :class:`~pspnet_lib.engine.trainer.Trainer` share: its attributes (set in
``Trainer.__init__``), ``is_main`` and rank-0 logging.

The Trainer is one class assembled from parts, one concern per module: ``trainer_state``
(``CheckpointMixin``), ``trainer_report`` (``ReportMixin``) and ``trainer`` (set-up, data, the
loop), which read the attributes declared here; the optimiser step is a collaborator with explicit
inputs (``trainer_step.TrainStep``, ``Trainer.step``), BatchNorm statistics are averaged by
``distributed.average_buffers``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from . import distributed as D
from .config import TrainConfig

__all__ = ["TrainerBase"]

logger = logging.getLogger("pspnet_lib.engine.trainer")


class TrainerBase:
    """The Trainer's shared state (declared for readers and type checkers) and rank-0 logging."""

    config: TrainConfig
    dist: D.DistInfo
    device: torch.device
    model: nn.Module  # the bare model (train_model: the DDP wrapper under torchrun)
    train_model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: Any
    uses_aux: bool
    iteration: int
    best_miou: float
    history: list[dict[str, Any]]
    last_metrics: dict[str, Any] | None
    out_dir: Path
    ckpt_dir: Path
    _resume: bool | str | Path
    _restored: bool
    _saved_at: int
    _validated_at: int
    #: ``(path, iteration)`` of the newest complete numbered checkpoint (written or resumed from).
    _last_checkpoint: tuple[Path, int] | None
    # Methods one part calls on another.
    _explain_write_failure: Callable[..., contextlib.AbstractContextManager]

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _log(self, msg: str, *args: Any, level: int = logging.INFO) -> None:
        if self.is_main:
            logger.log(level, msg, *args)
