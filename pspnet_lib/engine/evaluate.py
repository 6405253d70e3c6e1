"""Dataset evaluation: mIoU / mAcc / aAcc with any inference protocol, single- or multi-process."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._progress import progress_bar
from ..core.bands import normalise
from ..core.constants import IGNORE_INDEX
from ..core.inference_protocol import InferenceProtocol, protocol_from_keywords
from ..core.pretrained_cfg import PretrainedCfg
from ..inference.modes import infer
from .metrics import NOTHING_SCORED, ConfusionMatrix

__all__ = ["evaluate", "normalize_images", "precision_name"]

logger = logging.getLogger(__name__)


def normalize_images(images: torch.Tensor, model: nn.Module, cfg: PretrainedCfg | None = None) -> torch.Tensor:
    """Turn a batch of stored values into the float input the model expects (its ``pretrained_cfg``):
    uint8 pictures by mean/std, integer bands by the band spec (:func:`pspnet_lib.core.bands.normalise`).

    A floating-point batch is taken to be normalised already and returned unchanged (datasets of
    float bands normalise in their transforms: ``eval_transforms(mean, std, band_spec=...)``). Raises
    ``ValueError`` when the stored mean/std do not have one value per input channel, or the batch's
    bit depth is not the band spec's. ``cfg``: ``PretrainedCfg.of(model)`` when the caller has it
    already (parsed once per evaluation).
    """
    if images.is_floating_point():
        return images
    return normalise(images, cfg if cfg is not None else PretrainedCfg.of(model), what="the batch")


def _check_class_counts(model: nn.Module, dataset: Dataset, num_classes: int | None) -> int:
    """The number of classes to score; one clear error when model, dataset and argument disagree."""
    model_classes = getattr(getattr(model, "config", None), "num_classes", None)
    data_classes = getattr(dataset, "num_classes", None)
    name = type(dataset).__name__
    if num_classes is not None and model_classes is not None and num_classes != model_classes:
        raise ValueError(
            f"evaluate(num_classes={num_classes}) but the model predicts {model_classes} classes; evaluate a model "
            f"trained for {num_classes} classes, or load it with load_pretrained(..., num_classes={num_classes}) and fine-tune it"
        )
    if model_classes is not None and isinstance(data_classes, int) and data_classes != model_classes:
        raise ValueError(
            f"the model predicts {model_classes} classes but the dataset ({name}) has {data_classes}; "
            "evaluate on the dataset the model was trained for"
        )
    num_classes = num_classes or model_classes or (data_classes if isinstance(data_classes, int) else None)
    if num_classes is None:
        raise ValueError("evaluate() needs num_classes for a model without a PSPNet config")
    return num_classes


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How metrics files name the precision a model ran in: ``"fp32"`` (no autocast), ``"bf16"``, ``"fp16"``."""
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    if amp_dtype not in names:
        raise ValueError(f"amp_dtype must be None, torch.bfloat16 or torch.float16, got {amp_dtype!r}")
    return names[amp_dtype]


def _ignore_index(dataset: Dataset, ignore_index: int | None) -> int:
    theirs = getattr(dataset, "ignore_index", None)
    if ignore_index is None:
        return theirs if isinstance(theirs, int) else IGNORE_INDEX
    if isinstance(theirs, int) and theirs != ignore_index:
        raise ValueError(
            f"evaluate(ignore_index={ignore_index}) but the dataset ({type(dataset).__name__}) marks unscored pixels "
            f"{theirs}; leave ignore_index out to use the dataset's"
        )
    return ignore_index


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int | None = None,
    protocol: InferenceProtocol | None = None,
    mode: str | None = None,
    resize: Sequence[int] | None = None,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    ignore_index: int | None = None,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on every sample of ``dataset``.

    Args:
        model: the network (put in eval mode here, restored afterwards).
        dataset: yields ``(image, mask)``: image ``(C, H, W)`` (uint8, normalised here with the
            model's ``pretrained_cfg``, or float already normalised), mask ``(H, W)`` integer
            with ``ignore_index`` for unscored pixels. Images may differ in size.
        num_classes: classes to score (default: the model's). It must equal the model's class
            count and the dataset's (``dataset.num_classes`` when it has one): otherwise
            ``ValueError`` before anything runs, since scoring K-class predictions against
            another class list gives meaningless numbers.
        protocol: the test protocol (e.g. ``PretrainedCfg.of(model).protocol``); None: the whole
            image at its own size. See :func:`pspnet_lib.inference.modes.infer`.
        mode, resize, crop, stride, scales, flip: deprecated (0.3; removed in the next release):
            the protocol's fields as keywords.
        ignore_index: mask value not scored; default the dataset's ``ignore_index`` (255 for a
            dataset without one). A value other than the dataset's is a ``ValueError``.
        device: where to run (default: the model's device).
        amp_dtype: run the model under ``torch.autocast`` with this dtype (e.g. bfloat16); the
            result's ``"precision"`` says which (``"fp32"`` without).
        num_workers: DataLoader workers.
        progress: a tqdm bar (rank 0 only): None = on a terminal only, True = always, False = never.

    Under torch.distributed each process scores a disjoint share of the samples and the
    confusion matrices are summed, so every rank returns the metrics of the whole dataset.
    Returns the :meth:`ConfusionMatrix.compute` dict plus ``"precision"`` (``"fp32"``, ``"bf16"``
    or ``"fp16"``: what the model ran in) and ``"classes"`` when the dataset has them.
    """
    num_classes = _check_class_counts(model, dataset, num_classes)
    ignore_index = _ignore_index(dataset, ignore_index)
    protocol = protocol_from_keywords(
        protocol,
        {"mode": mode, "resize": resize, "crop": crop, "stride": stride, "scales": scales, "flip": flip},
        where="evaluate",
    )
    if device is None:
        device = next(model.parameters()).device
    rank, world = _rank_and_world()
    # Map-style datasets define __len__; torch's Dataset type does not declare it.
    size = len(dataset)  # type: ignore[arg-type]
    shard = Subset(dataset, range(rank, size, world)) if world > 1 else dataset
    loader = DataLoader(shard, batch_size=1, shuffle=False, num_workers=num_workers)
    confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
    typed_cfg = PretrainedCfg.of(model)
    was_training = model.training
    model.eval()
    try:
        with progress_bar(loader, desc="eval", leave=False, progress=progress if rank == 0 else False) as bar:
            for image, mask in bar:
                image = normalize_images(image.to(device), model, typed_cfg)
                mask = mask.to(device)
                if mask.ndim == 4:  # (N, 1, H, W) masks from some transforms
                    mask = mask[:, 0]
                with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    scores = infer(model, image, protocol=protocol)
                if scores.shape[1] != num_classes:
                    raise ValueError(
                        f"the model returned {scores.shape[1]} class scores but {num_classes} classes are being scored; "
                        "pass the num_classes the model was trained for"
                    )
                confusion.update(scores.argmax(dim=1), mask)
    finally:
        model.train(was_training)
    confusion.all_reduce()
    metrics = confusion.compute()
    metrics["precision"] = precision_name(amp_dtype)
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        metrics["classes"] = list(classes)
    if not metrics["pixels"]:
        logger.warning("evaluated %d images: %s", size, NOTHING_SCORED)
    logger.info(
        "evaluated %d images (%s): mIoU %.2f, mAcc %.2f, aAcc %.2f",
        size,
        metrics["precision"],
        100 * metrics["mIoU"],
        100 * metrics["mAcc"],
        100 * metrics["aAcc"],
    )
    return metrics
