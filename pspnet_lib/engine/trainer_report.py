"""The Trainer's reports: validation, the training log and curve, the final metrics and model."""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from .._files import ensure_dir
from ..inference.visualize import draw_confusion_matrix
from . import distributed as D
from .checkpoint import atomic_write_bytes, checkpoint_name, get_rng_state, set_rng_state, state_nbytes
from .evaluate import evaluate
from .metrics import format_metrics_table, metrics_to_json
from .sampler import usable_workers
from .trainer_base import TrainerBase

__all__ = ["Meter", "ReportMixin"]

logger = logging.getLogger("pspnet_lib.engine.trainer")


class Meter:
    """Averages of the loss terms and throughput over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, terms: Mapping[str, float], images: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}

    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0


class ReportMixin(TrainerBase):
    """Validation, logging and the end of a run of :class:`~pspnet_lib.engine.trainer.Trainer`."""

    def validate(self) -> dict[str, Any]:
        """Evaluate the current model on the validation set with the configured protocol."""
        if self.val_dataset is None:
            raise ValueError("validate() needs a val_dataset")
        c = self.config
        D.average_buffers(self.model, self.dist)
        rng = get_rng_state()  # evaluation draws from the global RNG; keep training's stream unchanged
        # Full precision unless asked (val_amp): the numbers are then pspnet eval's.
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp) if c.val_amp else None
        try:
            metrics = evaluate(
                self.model,
                self.val_dataset,
                num_classes=getattr(getattr(self.model, "config", None), "num_classes", None),
                protocol=c.eval_protocol(),
                ignore_index=c.ignore_index,
                device=self.device,
                amp_dtype=amp_dtype,
                num_workers=usable_workers(min(c.num_workers, 2)),
                progress=c.progress,
            )
        finally:
            set_rng_state(rng)
        self.last_metrics = metrics
        self._validated_at = self.iteration
        if self.is_main:
            self._write_class_report(metrics)
        entry = {"iter": self.iteration, "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"]}
        self.history.append({"type": "val", **entry})
        self._log(
            "iter %d validation (%s): mIoU %.2f  mAcc %.2f  aAcc %.2f",
            self.iteration,
            metrics["precision"],
            100 * metrics["mIoU"],
            100 * metrics["mAcc"],
            100 * metrics["aAcc"],
        )
        return metrics

    def _write_class_report(self, metrics: dict[str, Any]) -> None:
        """``validation/iter_XXXXXXXX.json`` (per-class IoU/Acc and the confusion matrix) and
        ``validation/iter_XXXXXXXX_confusion.png`` (the row-normalised matrix) of this evaluation."""
        classes = getattr(self.val_dataset, "classes", None)
        if classes is not None and len(classes) != len(metrics["IoU"]):
            classes = None
        payload = json.loads(metrics_to_json(metrics, classes))
        payload["iteration"] = self.iteration
        picture = io.BytesIO()
        title = f"Confusion matrix at iteration {self.iteration} (mIoU {100 * metrics['mIoU']:.2f})"
        draw_confusion_matrix(metrics["confusion_matrix"], classes, title).save(picture, format="PNG")
        stem = self.out_dir / "validation" / checkpoint_name(self.iteration).removesuffix(".pt")
        files = (
            (stem.with_name(stem.name + ".json"), (json.dumps(payload, indent=2) + "\n").encode(), "per-class metrics"),
            (stem.with_name(stem.name + "_confusion.png"), picture.getvalue(), "confusion matrix picture"),
        )
        ensure_dir(stem.parent)
        for path, data, what in files:
            with self._explain_write_failure(path, nbytes=len(data), what=what):
                atomic_write_bytes(path, data)

    def _log_window(self, meter: Meter, lr: float) -> None:
        means = meter.means()
        if self.dist.distributed:  # the average over all processes' batches
            keys = sorted(means)
            values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            means = dict(zip(keys, (values / self.dist.world_size).tolist()))
        speed = meter.images_per_second()
        entry = {"type": "train", "iter": self.iteration, "lr": lr, "img_per_s": speed, **means}
        self.history.append(entry)
        parts = " ".join(f"{k} {v:.4f}" for k, v in means.items() if k != "loss")
        remaining = (self.config.iters - self.iteration) * meter.images / max(meter.steps, 1) / max(speed, 1e-9)
        self._log(
            "iter %d/%d  loss %.4f (%s)  lr %.3e  %.1f img/s  eta %s",
            self.iteration,
            self.config.iters,
            means.get("loss", math.nan),
            parts,
            lr,
            speed,
            time.strftime("%H:%M:%S", time.gmtime(remaining)),
        )

    def _finish(self) -> str | None:
        """Final metrics file and model export (rank 0)."""
        if not self.is_main:
            return None
        if self.last_metrics is not None:
            classes = getattr(self.val_dataset, "classes", None)
            payload = json.loads(metrics_to_json(self.last_metrics, classes))
            payload["iteration"] = self._validated_at
            report = (json.dumps(payload, indent=2) + "\n").encode()
            with self._explain_write_failure(self.out_dir / "metrics.json", nbytes=len(report), what="metrics"):
                atomic_write_bytes(self.out_dir / "metrics.json", report)
            logger.info(
                "validation at iteration %d:\n%s", self._validated_at, format_metrics_table(self.last_metrics, classes)
            )
        if not self.config.export:
            return None
        directory = self.out_dir / "model"
        with self._explain_write_failure(
            directory / "model.safetensors", nbytes=state_nbytes(self.model.state_dict()), what="final model"
        ):
            getattr(self.model, "save_pretrained")(
                directory
            )  # config.json + model.safetensors + model card, written atomically
        logger.info("final model written to %s", directory)
        return str(directory)
