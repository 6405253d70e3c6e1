"""ADE20K SceneParsing (ADEChallengeData2016)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import ADE20K_CLASSES, ADE20K_INFO, ADE20K_PALETTE
from ..registry import register_dataset
from .base import (
    IMAGE_EXTENSIONS,
    PathLike,
    SegmentationDataset,
    Transforms,
    _first_existing,
    _show,
    reduce_zero_label,
)

__all__ = ["ADE20KDataset"]


@register_dataset("ade20k", splits=("training", "validation"), info=ADE20K_INFO)
class ADE20KDataset(SegmentationDataset):
    """ADE20K SceneParsing (``ADEChallengeData2016``), 150 classes.

    Annotation value 0 ("other objects") becomes 255 (ignored) and value k becomes class k - 1, as in
    every published ADE20K result (mmsegmentation's ``reduce_zero_label``).

    Args:
        root: ``ADEChallengeData2016`` or its parent.
        split: ``training`` (20,210 images) or ``validation`` (2,000); ``train``/``val`` also accepted.
        transforms: joint transform.
    """

    SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

    def __init__(self, root: PathLike, split: str = "training", transforms: Transforms | None = None) -> None:
        given = Path(root)
        found = _first_existing([given, given / "ADEChallengeData2016"], "images")
        if found is None or not (found / "annotations").is_dir():
            raise FileNotFoundError(
                f"no ADE20K found at {given}: expected images/{{training,validation}}/*.jpg and "
                f"annotations/{{training,validation}}/*.png in {given} or {given / 'ADEChallengeData2016'} "
                "(see docs/datasets.md)"
            )
        if split not in self.SPLITS:
            raise ValueError(f"unknown ADE20K split {split!r}; expected one of {', '.join(self.SPLITS)}")
        self.root, self.split = found, self.SPLITS[split]
        image_dir, mask_dir = found / "images" / self.split, found / "annotations" / self.split
        images = (
            sorted(p for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) if image_dir.is_dir() else []
        )
        if not images:
            raise FileNotFoundError(f"no images in {image_dir}; expected ADE_*.jpg files there")
        files = [(p, mask_dir / f"{p.stem}.png") for p in images]
        missing = [m for _, m in files if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} annotation(s) missing in {mask_dir}: {_show(missing)}")
        super().__init__(files, ADE20K_CLASSES, ADE20K_PALETTE, transforms)

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return reduce_zero_label(super().convert_mask(raw, path), self.ignore_index)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        return "ADEChallengeData2016 annotations hold 0 (other) and 1..150; this file does not look like one"
