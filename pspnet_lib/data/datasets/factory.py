"""Datasets by name: the registry ``pspnet train/eval --dataset`` reads."""

from __future__ import annotations

from typing import Any

from .ade20k import ADE20KDataset
from .base import PathLike, SegmentationDataset, Transforms
from .cityscapes import CityscapesDataset
from .folder import FolderDataset
from .voc import VOCAugDataset

__all__ = ["DATASETS", "DEFAULT_SPLITS", "build_dataset"]


DATASETS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCAugDataset,
    "ade20k": ADE20KDataset,
    "cityscapes": CityscapesDataset,
    "folder": FolderDataset,
}

#: The usual (train, val) split names per dataset.
DEFAULT_SPLITS: dict[str, tuple[str, str]] = {
    "voc": ("train_aug", "val"),
    "ade20k": ("training", "validation"),
    "cityscapes": ("train", "val"),
    "folder": ("train", "val"),
}


def build_dataset(name: str, root: PathLike, split: str | None, transforms: Transforms | None = None, **kwargs: Any) -> SegmentationDataset:
    """Build a dataset by name: ``voc``, ``ade20k``, ``cityscapes`` or ``folder``.

    Args:
        name: dataset name (case-insensitive).
        root: its directory.
        split: split name (see :data:`DEFAULT_SPLITS` for the usual train/val names). ``None``
            means every pair for ``folder`` and the training split for the others.
        transforms: joint transform applied to ``(image, mask)``.
        kwargs: passed to the dataset class (e.g. ``classes=`` for ``folder``).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split is None and key != "folder":
        split = DEFAULT_SPLITS[key][0]
    return DATASETS[key](root, split, transforms=transforms, **kwargs)
