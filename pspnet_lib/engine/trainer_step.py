"""The Trainer's optimisation step: autocast, loss terms, gradient accumulation, the non-finite-loss stop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn

from . import distributed as D
from .config import TrainConfig
from .evaluate import normalize_images
from .loss import PSPNetLoss

__all__ = ["NonFiniteLossError", "TrainStep", "non_finite_message"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad step touched the weights."""


class TrainStep:
    """One optimiser step of :class:`~pspnet_lib.engine.trainer.Trainer`: autocast, the loss terms,
    gradient accumulation (``no_sync`` on all but the last micro-batch under DDP), clipping, the
    scaler, the scheduler, and the stop on a non-finite loss, with everything it uses given here.

    Args:
        config: the run's :class:`~pspnet_lib.engine.TrainConfig` (``amp``, ``grad_accum``,
            ``channels_last``, ``clip_grad_norm``).
        model: the bare model (normalisation, clipping); ``train_model`` runs the forward pass (the
            ``DistributedDataParallel`` wrapper under torchrun, else ``model``).
        optimizer, scheduler, scaler, loss_fn: the run's.
        device: where batches go; ``distributed``: several processes (they stop together).
        uses_aux: the forward pass returns the auxiliary logits too (``return_aux=True``).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module,
        train_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        loss_fn: Any,
        device: torch.device,
        distributed: bool,
        uses_aux: bool,
    ) -> None:
        self.config, self.model, self.train_model = config, model, train_model
        self.optimizer, self.scheduler, self.scaler, self.loss_fn = optimizer, scheduler, scaler, loss_fn
        self.device, self.distributed, self.uses_aux = device, distributed, uses_aux

    def autocast(self) -> contextlib.AbstractContextManager:
        amp = self.config.amp
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def loss_terms(self, outputs: Any, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(self.loss_fn, PSPNetLoss):
            return self.loss_fn.components(outputs, masks)
        result = self.loss_fn(outputs, masks)
        return dict(result) if isinstance(result, Mapping) else {"loss": result}

    def __call__(
        self,
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
        *,
        iteration: int,
        checkpoint_note: Callable[[], str],
    ) -> dict[str, float]:
        """Run step ``iteration + 1`` on the next ``grad_accum`` batches; returns the loss terms
        (floats, averaged over the micro-batches). Raises :class:`NonFiniteLossError` (its message
        ends with ``checkpoint_note()``: what was kept) before a non-finite loss touches the weights."""
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(c.grad_accum):
            images, masks = next(batches)
            images = normalize_images(images.to(self.device, non_blocking=True), self.model)
            if c.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            masks = masks.to(self.device, non_blocking=True)
            last = micro == c.grad_accum - 1
            # Under torchrun train_model is the DistributedDataParallel wrapper (it has no_sync).
            sync = contextlib.nullcontext() if last or not self.distributed else getattr(self.train_model, "no_sync")()
            with sync:
                with self.autocast():
                    outputs = self.train_model(images, return_aux=True) if self.uses_aux else self.train_model(images)
                terms = self.loss_terms(outputs, masks)
                loss = terms["loss"]
                # All processes must stop together, or the others would wait forever in backward.
                if D.any_true(~torch.isfinite(loss.detach())):
                    raise NonFiniteLossError(non_finite_message(terms, iteration, checkpoint_note()))
                self.scaler.scale(loss / c.grad_accum).backward()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / c.grad_accum
        if c.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return totals


def non_finite_message(terms: Mapping[str, torch.Tensor], iteration: int, kept: str) -> str:
    """The one-line error of a non-finite loss at step ``iteration + 1``: the terms, ``kept`` (the
    checkpoint left intact), the usual causes."""
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    return (
        f"training stopped: the loss became non-finite at iteration {iteration + 1} ({values}); {kept}. "
        "Usual causes: a learning rate too high for the batch size (lower --lr or add warm-up), fp16 overflow "
        "(use amp='bf16' or 'none'), or corrupt input data"
    )
