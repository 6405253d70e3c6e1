"""Segmentation metrics from a confusion matrix accumulated over a whole dataset."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..core.constants import IGNORE_INDEX
from ..core.escape import printable

__all__ = ["ConfusionMatrix", "format_metrics_table", "metrics_to_json"]


class ConfusionMatrix:
    """Counts ``(target, prediction)`` pairs over every scored pixel of a dataset.

    Per-class IoU = TP / (TP + FP + FN), per-class accuracy = TP / (TP + FN); mIoU and mAcc
    average the classes present in the ground truth or the predictions (a class absent from
    both is NaN and skipped, as mmsegmentation does); aAcc = correct pixels / scored pixels.
    Pixels whose target is ``ignore_index`` are not scored.

    A prediction outside ``[0, num_classes)`` (a model with more outputs than the dataset has
    classes, a corrupted map) is a miss for its pixel's true class: it adds to that class's
    ground-truth count (lowering its IoU and accuracy) and to no class's prediction count, as
    mmsegmentation's ``intersect_and_union`` does (its histograms drop out-of-range
    predictions). Such pixels are kept in :attr:`out_of_range` (one count per true class), not
    in :attr:`matrix`, so they never shift another class's row or column.

    Attributes:
        matrix: ``(num_classes, num_classes)`` int64 counts, ``[target, prediction]``.
        out_of_range: ``(num_classes,)`` int64 counts of out-of-range predictions per target class.

    Args:
        num_classes: number of classes.
        ignore_index: target value to skip.
        device: where the counts live (the model's device avoids copies).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        self.ignore_index = ignore_index
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.out_of_range = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor | Sequence[int], target: torch.Tensor | Sequence[int]) -> None:
        """Add a batch: ``prediction`` and ``target`` are integer maps (tensors or sequences) of the same shape.

        Raises ``ValueError`` for differing shapes and for target values outside
        ``[0, num_classes)`` other than ``ignore_index`` (a wrong ``num_classes`` or label
        convention, which must not be scored silently). Out-of-range predictions are misses
        (see the class docstring).
        """
        prediction = torch.as_tensor(prediction)
        target = torch.as_tensor(target)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        target = target.to(self.matrix.device).long()
        prediction = prediction.to(self.matrix.device).long()
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= self.num_classes))
        if bad.any():
            values = sorted(torch.unique(target[bad]).tolist())[:10]
            raise ValueError(
                f"target holds values {values} outside [0, {self.num_classes}) that are not the ignore index "
                f"{self.ignore_index}; check num_classes and the dataset's label convention"
            )
        target, prediction = target[valid], prediction[valid]
        outside = (prediction < 0) | (prediction >= self.num_classes)
        if outside.any():
            self.out_of_range += torch.bincount(target[outside], minlength=self.num_classes)
            target, prediction = target[~outside], prediction[~outside]
        index = target * self.num_classes + prediction
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def all_reduce(self) -> None:
        """Sum the counts over all processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
            dist.all_reduce(self.out_of_range, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """Metrics as plain Python numbers (fractions in [0, 1]; NaN for classes never seen), and
        ``"confusion_matrix"``: the counts as a list of rows (``[target][prediction]``)."""
        m = self.matrix.double().cpu()
        missed = self.out_of_range.double().cpu()
        tp = m.diag()
        gt = m.sum(1) + missed
        pred = m.sum(0)
        union = gt + pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        total = m.sum() + missed.sum()
        return {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "aAcc": float(tp.sum() / total) if total > 0 else math.nan,
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
            "pixels": int(total),
            "out_of_range": int(missed.sum()),
            "confusion_matrix": self.matrix.cpu().tolist(),
        }


def _nanmean(values: torch.Tensor) -> float:
    present = values[~torch.isnan(values)]
    return float(present.mean()) if present.numel() else math.nan


def format_metrics_table(metrics: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """A per-class table (IoU and Acc in percent) followed by the summary line.

    Class names (which may come from a stranger's file) are shown through
    :func:`~pspnet_lib.core.escape.printable`. When no pixel was scored (every mask pixel is the ignore
    value) the metrics are NaN, and a last line says why.
    """
    n = len(metrics["IoU"])
    names = [printable(s, 60) for s in class_names] if class_names is not None else [str(i) for i in range(n)]
    width = max([len("class")] + [len(s) for s in names])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
    for name, iou, acc in zip(names, metrics["IoU"], metrics["Acc"]):
        lines.append(f"{name:<{width}}  {_pct(iou):>6}  {_pct(acc):>6}")
    lines.append("-" * (width + 16))
    lines.append(f"mIoU {_pct(metrics['mIoU'])}  mAcc {_pct(metrics['mAcc'])}  aAcc {_pct(metrics['aAcc'])}")
    if not metrics.get("pixels"):
        lines.append(NOTHING_SCORED)
    return "\n".join(lines)


#: The explanation of NaN metrics when no pixel was scored.
NOTHING_SCORED = (
    "no pixel was scored (nan): every mask pixel holds the ignore value (255); check the masks, e.g. binary "
    "masks saved as 0/255 need --label-map 255:1"
)


def _pct(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def metrics_to_json(metrics: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """JSON with per-class entries keyed by class name (NaN written as null); when the metrics say
    it, the ``"precision"`` the model ran in (``evaluate``'s ``"fp32"``/``"bf16"``/``"fp16"``); when
    ``metrics`` has it, the confusion matrix: ``{"rows": "ground truth", "columns": "prediction",
    "classes": [...], "counts": [[...], ...]}`` (pixel counts; a row's sum plus its out-of-range
    predictions is the class's ground-truth pixels)."""
    n = len(metrics["IoU"])
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]

    def clean(v: float) -> float | None:
        return None if v is None or math.isnan(v) else v

    payload = {
        "mIoU": clean(metrics["mIoU"]),
        "mAcc": clean(metrics["mAcc"]),
        "aAcc": clean(metrics["aAcc"]),
        **({"precision": metrics["precision"]} if "precision" in metrics else {}),
        "pixels": metrics["pixels"],
        "per_class": {
            name: {"IoU": clean(i), "Acc": clean(a)} for name, i, a in zip(names, metrics["IoU"], metrics["Acc"])
        },
    }
    if "confusion_matrix" in metrics:
        payload["confusion_matrix"] = {
            "rows": "ground truth",
            "columns": "prediction",
            "classes": names,
            "counts": metrics["confusion_matrix"],
        }
    return json.dumps(payload, indent=2)
