"""Datasets by name: the registry ``pspnet train/eval --dataset`` reads."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The built-in datasets register themselves when their modules are imported: these first, in the
# order of the --dataset choices, then every other module of this package (a new dataset module
# needs no line here).
# isort: off
from . import voc, ade20k, cityscapes, pascal_context, coco_stuff, loveda, isprs, isaid, folder  # noqa: F401

# isort: on
from ..registry import DATASETS, DEFAULT_SPLITS, ZOO_DATASETS, dataset_record
from .base import PathLike, SegmentationDataset, Transforms

__all__ = ["DATASETS", "DEFAULT_SPLITS", "ZOO_DATASETS", "build_dataset"]

for _module in pkgutil.iter_modules([str(Path(__file__).parent)]):
    importlib.import_module(f"{__package__}.{_module.name}")


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
    record = dataset_record(name)  # a key, an alias or a zoo dataset key (voc12aug)
    key = record.key
    if split is None and key != "folder":
        split = record.splits[0]
    # Each dataset class has its own constructor (root, split, ...), unlike the base class's.
    dataset_class: Callable[..., SegmentationDataset] = record.dataset_class
    params = inspect.signature(dataset_class).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:  # a typo would otherwise surface as a TypeError from deep inside the class
            valid = [n for n in params if n not in ("root", "split", "transforms")]
            raise ValueError(
                f"unknown option(s) {unknown} for the {key} dataset; it takes {', '.join(valid) or 'no options'}"
            )
    return dataset_class(root, split, transforms=transforms, **kwargs)
