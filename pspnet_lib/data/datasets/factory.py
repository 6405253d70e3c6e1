"""Datasets by name: the registry ``pspnet train/eval --dataset`` reads."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .ade20k import ADE20KDataset
from .base import PathLike, SegmentationDataset, Transforms
from .cityscapes import CityscapesDataset
from .coco_stuff import COCOStuff10kDataset, COCOStuff164kDataset
from .folder import FolderDataset
from .isaid import ISAIDDataset
from .isprs import PotsdamDataset, VaihingenDataset
from .loveda import LoveDADataset
from .pascal_context import PascalContext59Dataset, PascalContextDataset
from .voc import VOCAugDataset

__all__ = ["DATASETS", "DEFAULT_SPLITS", "ZOO_DATASETS", "build_dataset"]


DATASETS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCAugDataset,
    "ade20k": ADE20KDataset,
    "cityscapes": CityscapesDataset,
    "pascal-context": PascalContextDataset,
    "pascal-context-59": PascalContext59Dataset,
    "coco-stuff10k": COCOStuff10kDataset,
    "coco-stuff164k": COCOStuff164kDataset,
    "loveda": LoveDADataset,
    "potsdam": PotsdamDataset,
    "vaihingen": VaihingenDataset,
    "isaid": ISAIDDataset,
    "folder": FolderDataset,
}

#: The usual (train, val) split names per dataset.
DEFAULT_SPLITS: dict[str, tuple[str, str]] = {
    "voc": ("train_aug", "val"),
    "ade20k": ("training", "validation"),
    "cityscapes": ("train", "val"),
    "pascal-context": ("train", "val"),
    "pascal-context-59": ("train", "val"),
    "coco-stuff10k": ("train2014", "test2014"),
    "coco-stuff164k": ("train2017", "val2017"),
    "loveda": ("train", "val"),
    "potsdam": ("train", "val"),
    "vaihingen": ("train", "val"),
    "isaid": ("train", "val"),
    "folder": ("train", "val"),
}

#: The dataset (a key of :data:`DATASETS`) that scores each zoo dataset key
#: (``Weights.meta["dataset"]``, the keys of :data:`pspnet_lib.data.metadata.DATASETS`).
ZOO_DATASETS: dict[str, str] = {
    "voc12aug": "voc",
    **{
        key: key
        for key in (
            "cityscapes",
            "ade20k",
            "pascal-context",
            "pascal-context-59",
            "coco-stuff10k",
            "coco-stuff164k",
            "loveda",
            "potsdam",
            "vaihingen",
            "isaid",
        )
    },
}


def build_dataset(
    name: str, root: PathLike, split: str | None, transforms: Transforms | None = None, **kwargs: Any
) -> SegmentationDataset:
    """Build a dataset by name: a key of :data:`DATASETS` (``voc``, ``ade20k``, ``cityscapes``,
    ``pascal-context``, ``pascal-context-59``, ``coco-stuff10k``, ``coco-stuff164k``, ``loveda``,
    ``potsdam``, ``vaihingen``, ``isaid``, ``folder``).

    Args:
        name: dataset name (case-insensitive).
        root: its directory.
        split: split name (see :data:`DEFAULT_SPLITS` for the usual train/val names). ``None``
            means every pair for ``folder`` and the training split for the others.
        transforms: joint transform applied to ``(image, mask)``.
        kwargs: passed to the dataset class (e.g. ``classes=`` for ``folder``).
    """
    key = name.lower()
    key = ZOO_DATASETS.get(key, key)  # a zoo dataset key (voc12aug) names its dataset too
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split is None and key != "folder":
        split = DEFAULT_SPLITS[key][0]
    # Each dataset class has its own constructor (root, split, ...), unlike the base class's.
    dataset_class: Callable[..., SegmentationDataset] = DATASETS[key]
    params = inspect.signature(dataset_class).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:  # a typo would otherwise surface as a TypeError from deep inside the class
            valid = [n for n in params if n not in ("root", "split", "transforms")]
            raise ValueError(
                f"unknown option(s) {unknown} for the {key} dataset; it takes {', '.join(valid) or 'no options'}"
            )
    return dataset_class(root, split, transforms=transforms, **kwargs)
