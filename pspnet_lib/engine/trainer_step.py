"""The Trainer's optimisation step: autocast, loss terms, gradient accumulation, the non-finite-loss stop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

from . import distributed as D
from .evaluate import normalize_images
from .loss import PSPNetLoss
from .trainer_base import TrainerBase

__all__ = ["NonFiniteLossError", "StepMixin"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad step touched the weights."""


class StepMixin(TrainerBase):
    """One optimiser step of :class:`~pspnet_lib.engine.trainer.Trainer` (its ``_step`` and helpers)."""

    def _autocast(self) -> contextlib.AbstractContextManager:
        amp = self.config.amp
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def _loss_terms(self, outputs: Any, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(self.loss_fn, PSPNetLoss):
            return self.loss_fn.components(outputs, masks)
        result = self.loss_fn(outputs, masks)
        return dict(result) if isinstance(result, Mapping) else {"loss": result}

    def _step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
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
            sync = (
                contextlib.nullcontext()
                if last or not self.dist.distributed
                else getattr(self.train_model, "no_sync")()
            )
            with sync:
                with self._autocast():
                    outputs = self.train_model(images, return_aux=True) if self.uses_aux else self.train_model(images)
                terms = self._loss_terms(outputs, masks)
                loss = terms["loss"]
                # All processes must stop together, or the others would wait forever in backward.
                if D.any_true(~torch.isfinite(loss.detach())):
                    raise NonFiniteLossError(self._non_finite_message(terms))
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

    def _non_finite_message(self, terms: Mapping[str, torch.Tensor]) -> str:
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        latest = self.ckpt_dir / "latest.pt"
        kept = (
            (
                f"the last good checkpoint {latest} (iteration {self._saved_at}) is intact; resume from it with "
                "resume=True / --resume after changing the settings"
            )
            if self._saved_at >= 0 or latest.is_file()
            else "no checkpoint had been written yet"
        )
        return (
            f"training stopped: the loss became non-finite at iteration {self.iteration + 1} ({values}); {kept}. "
            "Usual causes: a learning rate too high for the batch size (lower --lr or add warm-up), fp16 overflow "
            "(use amp='bf16' or 'none'), or corrupt input data"
        )

    def _sync_buffers(self) -> None:
        """Average BatchNorm statistics over processes (each saw different batches when not synchronised)."""
        if not self.dist.distributed:
            return
        world = self.dist.world_size
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(world)
            else:
                dist.broadcast(buffer, src=0)
