"""Class weights computed from the training masks' pixel frequencies (``class_weight="auto"``).

One streaming pass reads every training mask once (not the pictures, and without augmentation
when the dataset offers ``load_mask``, as every pspnet_lib dataset does) and counts, per class,
its pixels and the scored pixels of the images it occurs in. The weights follow one of two
published rules (:data:`CLASS_WEIGHT_RULES`; ``"auto"`` is :data:`DEFAULT_RULE`):

``inverse_log`` (ENet: Paszke et al., 2016, section 5.2; the default)
    ``p_c = n_c / sum_k n_k`` (the class's share of all scored pixels), ``w_c = 1 / ln(1.02 + p_c)``.
    Bounded by ``1 / ln(1.02) = 50.5``, so a class of 0.01% does not get a weight in the thousands
    that dominates every batch it occurs in. On 97% / 2.5% / 0.5% of three classes:
    ``[1/ln(1.99), 1/ln(1.045), 1/ln(1.025)] = [1.4532, 22.719, 40.498]``.

``median_frequency`` (median-frequency balancing: Eigen & Fergus, ICCV 2015, section 4.3, as SegNet)
    ``freq_c = n_c / P_c``, with ``P_c`` the scored pixels of the images that contain ``c``;
    ``w_c = median(freq) / freq_c``: the class of median frequency weighs 1. On masks that each
    hold 97% / 2.5% / 0.5%: ``[0.025 / 0.97, 1, 5] = [0.02577, 1, 5]``; a class of 0.01% of
    every image would weigh 250. A class that is rare because it occurs in few images, but large
    where it occurs, is not up-weighted (its frequency where present is what counts).

``n_c`` is the pixel count of class ``c``. A class with no pixel in the training masks gets weight
0 (there is nothing to balance; a warning names it). The median is taken over the classes that
occur (NumPy's median: the mean of the two middle values for an even count). The loss terms use
the weights as they are (each term's docstring says how; the cross-entropy's weighted mean does
not depend on their scale).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset

from .._progress import progress_bar
from ..core.constants import IGNORE_INDEX
from .sampler import usable_workers

__all__ = [
    "CLASS_WEIGHT_RULES",
    "DEFAULT_RULE",
    "PixelCounts",
    "class_weights_from_counts",
    "compute_class_weights",
    "count_class_pixels",
]

logger = logging.getLogger(__name__)

#: The rules ``class_weight`` may name (see the module docstring).
CLASS_WEIGHT_RULES = ("inverse_log", "median_frequency")
#: What ``class_weight="auto"`` computes.
DEFAULT_RULE = "inverse_log"
#: ENet's constant (Paszke et al. 2016): bounds the weights by 1 / ln(1.02).
ENET_C = 1.02


@dataclass(frozen=True)
class PixelCounts:
    """Pixel statistics of a set of masks.

    Attributes:
        class_pixels: ``(K,)`` int64, pixels of each class.
        image_pixels: ``(K,)`` int64, scored pixels of the masks in which each class occurs.
        images: masks read.
        ignored_pixels: pixels equal to the ignore index.
    """

    class_pixels: np.ndarray
    image_pixels: np.ndarray
    images: int
    ignored_pixels: int


class _MaskCounts(Dataset):
    """Per-sample pixel counts (computed in the DataLoader workers)."""

    def __init__(self, dataset: Dataset, num_classes: int, ignore_index: int) -> None:
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets define __len__

    def _mask(self, index: int) -> np.ndarray:
        load_mask = getattr(self.dataset, "load_mask", None)
        if callable(load_mask):
            return np.asarray(load_mask(index))
        sample = self.dataset[index]
        mask = sample["mask"] if isinstance(sample, Mapping) else sample[1]
        return np.asarray(mask)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        mask = self._mask(index).astype(np.int64, copy=False).ravel()
        valid = mask != self.ignore_index
        values = mask[valid]
        if values.size and (values.min() < 0 or values.max() >= self.num_classes):
            bad = sorted({int(v) for v in values[(values < 0) | (values >= self.num_classes)]})[:10]
            raise ValueError(
                f"the mask of training sample {index} holds value(s) {bad} outside [0, {self.num_classes}) that are "
                f"not the ignore index {self.ignore_index}"
            )
        return np.bincount(values, minlength=self.num_classes), int(mask.size - values.size)


def count_class_pixels(
    dataset: Dataset,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    *,
    num_workers: int = 0,
    progress: bool | None = None,
) -> PixelCounts:
    """Count the pixels of each class over every mask of ``dataset`` (one pass, with a progress bar).

    Masks come from ``dataset.load_mask(i)`` when it exists (untransformed), else from
    ``dataset[i]`` (the second item, or ``"mask"``). Raises ``ValueError`` for a value outside
    ``[0, num_classes)`` that is not ``ignore_index``.
    """
    counter = _MaskCounts(dataset, num_classes, ignore_index)
    loader = DataLoader(counter, batch_size=None, num_workers=usable_workers(num_workers))
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    ignored = images = 0
    with progress_bar(loader, total=len(counter), desc="class weights", leave=False, progress=progress) as bar:
        for counts, ignored_here in bar:
            counts = np.asarray(counts, dtype=np.int64)
            class_pixels += counts
            image_pixels += np.where(counts > 0, counts.sum(), 0)
            ignored += int(ignored_here)
            images += 1
    return PixelCounts(class_pixels, image_pixels, images, ignored)


def class_weights_from_counts(counts: PixelCounts, rule: str = DEFAULT_RULE) -> list[float]:
    """The weights of ``rule`` (:data:`CLASS_WEIGHT_RULES`, or ``"auto"``) from pixel counts; 0 for absent classes.

    Raises:
        ValueError: an unknown rule, or masks without any scored pixel.
    """
    rule = DEFAULT_RULE if rule == "auto" else rule
    if rule not in CLASS_WEIGHT_RULES:
        raise ValueError(f"unknown class-weight rule {rule!r}; expected auto, {', '.join(CLASS_WEIGHT_RULES)}")
    n = counts.class_pixels.astype(np.float64)
    present = n > 0
    if not present.any():
        raise ValueError(f"the {counts.images} training masks hold no scored pixel: no class weights can be computed")
    weights = np.zeros_like(n)
    if rule == "median_frequency":
        frequency = n[present] / counts.image_pixels[present]
        weights[present] = np.median(frequency) / frequency
    else:
        share = n[present] / n.sum()
        weights[present] = 1.0 / np.log(ENET_C + share)
    return [float(w) for w in weights]


def compute_class_weights(
    dataset: Dataset,
    num_classes: int | None = None,
    rule: str = "auto",
    ignore_index: int | None = None,
    *,
    num_workers: int = 0,
    progress: bool | None = None,
    class_names: Sequence[str] | None = None,
) -> list[float]:
    """Class weights for the loss from ``dataset``'s masks, by ``rule`` (see the module docstring).

    Args:
        dataset: the training samples (a pspnet_lib dataset, or any yielding ``(image, mask)``).
        num_classes: default ``dataset.num_classes``.
        rule: ``"auto"`` (= :data:`DEFAULT_RULE`, ``"inverse_log"``), ``"inverse_log"`` or ``"median_frequency"``.
        ignore_index: default ``dataset.ignore_index``, else 255.
        num_workers: DataLoader workers reading the masks.
        progress: the progress bar: None = on a terminal only, True = always, False = never.
        class_names: for the log line (default ``dataset.classes``).

    Returns one float per class. Raises ``ValueError`` for an unknown rule, a mask value outside
    the classes, masks without scored pixels, or no ``num_classes``.
    """
    if num_classes is None:
        num_classes = getattr(dataset, "num_classes", None)
        if not isinstance(num_classes, int):
            raise ValueError("compute_class_weights needs num_classes for a dataset without a num_classes attribute")
    if ignore_index is None:
        ignore_index = int(getattr(dataset, "ignore_index", IGNORE_INDEX))
    rule = DEFAULT_RULE if rule == "auto" else rule
    if rule not in CLASS_WEIGHT_RULES:  # before reading anything
        raise ValueError(f"unknown class-weight rule {rule!r}; expected auto, {', '.join(CLASS_WEIGHT_RULES)}")
    counts = count_class_pixels(dataset, num_classes, ignore_index, num_workers=num_workers, progress=progress)
    weights = class_weights_from_counts(counts, rule)
    names = list(class_names or getattr(dataset, "classes", None) or [str(c) for c in range(num_classes)])
    absent = [names[c] for c in range(num_classes) if counts.class_pixels[c] == 0]
    if absent:
        logger.warning(
            "class(es) %s have no pixel in the %d training masks: weight 0 (nothing to balance)",
            ", ".join(absent),
            counts.images,
        )
    logger.info(
        "class weights (%s over %d training masks, %d scored pixels): %s",
        rule.replace("_", "-"),
        counts.images,
        int(counts.class_pixels.sum()),
        ", ".join(f"{name} {_short(w)}" for name, w in zip(names, weights)),
    )
    return weights


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
