"""PASCAL Context: 60 classes (background included) or 59 (background ignored) on VOC2010 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.text import read_lines
from ..metadata import PASCAL_CONTEXT_59_INFO, PASCAL_CONTEXT_INFO
from ..prepare.pascal_context import prepare_pascal_context
from ..registry import register_dataset
from .base import (
    PathLike,
    Transforms,
    ZooLabelConvention,
    _first_existing,
    _require_files,
)

__all__ = ["PascalContextDataset", "PascalContext59Dataset"]


@register_dataset("pascal-context", splits=("train", "val"), info=PASCAL_CONTEXT_INFO, prepare=prepare_pascal_context)
class PascalContextDataset(ZooLabelConvention):
    """PASCAL Context with 60 classes: class 0 is ``background``, a scored class (mmseg's ``PascalContextDataset``).

    Layout (``pspnet prepare pascal-context`` or mmsegmentation's ``pascal_context.py``)::

        VOC2010/JPEGImages/<id>.jpg
        VOC2010/SegmentationClassContext/<id>.png     values 0..59 (0 = background)
        VOC2010/ImageSets/SegmentationContext/{train,val}.txt

    Args:
        root: ``VOC2010``, or a folder holding ``VOC2010/`` or ``VOCdevkit/VOC2010/``.
        split: ``train`` (4,996 images) or ``val`` (5,104).
        transforms: joint transform.
    """

    SPLITS = ("train", "val")

    def __init__(self, root: PathLike, split: str = "train", transforms: Transforms | None = None) -> None:
        given = Path(root)
        found = _first_existing([given, given / "VOC2010", given / "VOCdevkit" / "VOC2010"], "SegmentationClassContext")
        prepare = f"prepare it with `{self.prepare_command} SRC DST` (see docs/datasets.md)"
        if found is None:
            raise FileNotFoundError(
                f"no PASCAL Context found at {given}: expected JPEGImages/, SegmentationClassContext/ and "
                f"ImageSets/SegmentationContext/ in {given}, {given / 'VOC2010'} or {given / 'VOCdevkit' / 'VOC2010'}; {prepare}"
            )
        if split not in self.SPLITS:
            raise ValueError(f"unknown PASCAL Context split {split!r}; expected one of {', '.join(self.SPLITS)}")
        self.root, self.split = found, split
        list_file = found / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"split list {list_file} does not exist; {prepare}")
        names = [line for line in read_lines(list_file) if line]
        if not names:
            raise ValueError(f"split list {list_file} is empty")
        files = [(found / "JPEGImages" / f"{n}.jpg", found / "SegmentationClassContext" / f"{n}.png") for n in names]
        _require_files(files, str(list_file), prepare)
        super().__init__(files, self.info.classes, self.info.palette, transforms, self.info.ignore_index)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        return (
            "SegmentationClassContext masks store 0 (background) and 1..59; this file was not written by "
            "`pspnet prepare pascal-context` or mmsegmentation's converter (the 459-class .mat labels need that conversion)"
        )


@register_dataset(
    "pascal-context-59", splits=("train", "val"), info=PASCAL_CONTEXT_59_INFO, prepared_with="pascal-context"
)
class PascalContext59Dataset(PascalContextDataset):
    """PASCAL Context with 59 classes: the same files, background (stored 0) ignored and stored k read as class k - 1
    (``reduce_zero_label``, mmseg's ``PascalContextDataset59``)."""
