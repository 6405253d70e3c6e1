"""Cityscapes fine annotations (19 trainIds) and the labelIds -> trainIds conversion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch
from PIL import Image

from ...core.constants import IGNORE_INDEX
from ..metadata import CITYSCAPES_CLASSES, CITYSCAPES_INFO, CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_PALETTE
from ..registry import register_dataset
from .base import PathLike, SegmentationDataset, Transforms, _save_png_atomically, _show, logger

__all__ = ["CityscapesDataset", "cityscapes_labelids_to_trainids", "create_cityscapes_trainids"]


@overload
def cityscapes_labelids_to_trainids(label_ids: torch.Tensor) -> torch.Tensor: ...
@overload
def cityscapes_labelids_to_trainids(label_ids: np.ndarray) -> np.ndarray: ...
def cityscapes_labelids_to_trainids(label_ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Map Cityscapes ``labelIds`` (0..33) to the 19 ``trainIds``; every other id becomes 255.

    The official mapping of cityscapesscripts' ``labels.py``; returns the same type (and for numpy
    uint8 / for torch the input dtype) as given.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        lut[label_id] = train_id
    if isinstance(label_ids, torch.Tensor):
        table = torch.from_numpy(lut.astype(np.int64)).to(label_ids.device)
        return table[label_ids.long().clamp(0, 255)].to(label_ids.dtype)
    array = np.asarray(label_ids)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"Cityscapes labelIds lie in 0..33, got values in [{array.min()}, {array.max()}]")
    return lut[array.astype(np.int64)]


def create_cityscapes_trainids(
    root: PathLike, splits: Sequence[str] = ("train", "val"), overwrite: bool = False
) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` next to every ``*_gtFine_labelIds.png`` under ``root/gtFine``.

    The same files as cityscapesscripts' ``csCreateTrainIdLabelImgs`` for the semantic labels.
    Each file is written to a temporary name and renamed, so an interrupted run leaves no broken
    file. Returns the number of files written (existing ones are skipped unless ``overwrite``).

    Raises:
        FileNotFoundError: no ``*_gtFine_labelIds.png`` under ``root/gtFine/<split>``.
        ValueError: a file that is not a readable single-channel PNG, or holds ids above 255
            (naming the file); the masks written before it are complete.
    """
    root = Path(root)
    written = 0
    for split in splits:
        sources = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
        if not sources:
            raise FileNotFoundError(f"no *_gtFine_labelIds.png files under {root / 'gtFine' / split}")
        for source in sources:
            target = source.with_name(source.name.replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"))
            if target.exists() and not overwrite:
                continue
            try:
                with Image.open(source) as picture:
                    mode, label_ids = picture.mode, np.asarray(picture)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{source}: not a readable PNG ({exc}); re-extract gtFine_trainvaltest.zip") from None
            if label_ids.ndim != 2:
                raise ValueError(
                    f"{source}: expected a single-channel labelIds PNG (mode 'L'), got mode {mode!r}; "
                    "this looks like a colour rendering: use the *_gtFine_labelIds.png of gtFine_trainvaltest.zip"
                )
            try:
                trainids = cityscapes_labelids_to_trainids(label_ids)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
            _save_png_atomically(trainids, target)
            written += 1
    logger.info("wrote %d Cityscapes trainId masks under %s", written, root / "gtFine")
    return written


_TRAINIDS_HELP = (
    "create the trainId masks with cityscapesscripts (`pip install cityscapesscripts; "
    "CITYSCAPES_DATASET={root} csCreateTrainIdLabelImgs`) or with "
    "`pspnet_lib.data.create_cityscapes_trainids('{root}')`, or read the labelIds files directly with "
    "CityscapesDataset(..., labels='labelIds')"
)


@register_dataset("cityscapes", splits=("train", "val"), info=CITYSCAPES_INFO)
class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes (trainIds; 255 = not evaluated).

    Args:
        root: the directory holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train`` (2,975 images), ``val`` (500) or ``test`` (1,525; its public masks are empty).
        transforms: joint transform.
        labels: ``"trainIds"`` reads ``*_gtFine_labelTrainIds.png``; ``"labelIds"`` reads the original
            ``*_gtFine_labelIds.png`` and maps them with :func:`cityscapes_labelids_to_trainids`.
    """

    SPLITS = ("train", "val", "test")

    def __init__(
        self, root: PathLike, split: str = "train", transforms: Transforms | None = None, labels: str = "trainIds"
    ) -> None:
        root = Path(root)
        if not (root / "leftImg8bit").is_dir() or not (root / "gtFine").is_dir():
            raise FileNotFoundError(
                f"no Cityscapes found at {root}: expected leftImg8bit/{{train,val,test}}/<city>/*_leftImg8bit.png and "
                "gtFine/{train,val,test}/<city>/*_gtFine_labelTrainIds.png there (see docs/datasets.md)"
            )
        if split not in self.SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; expected one of {', '.join(self.SPLITS)}")
        if labels not in ("trainIds", "labelIds"):
            raise ValueError(f"labels must be 'trainIds' or 'labelIds', got {labels!r}")
        self.root, self.split, self.labels = root, split, labels
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if not images:
            raise FileNotFoundError(f"no *_leftImg8bit.png images in {root / 'leftImg8bit' / split}/<city>/")
        suffix = "_gtFine_labelTrainIds.png" if labels == "trainIds" else "_gtFine_labelIds.png"
        files = []
        for image in images:
            prefix = image.name[: -len("_leftImg8bit.png")]
            files.append((image, root / "gtFine" / split / image.parent.name / f"{prefix}{suffix}"))
        missing = [m for _, m in files if not m.is_file()]
        if missing:
            message = f"{len(missing)} of {len(files)} masks missing: {_show(missing)}"
            label_ids = [m.with_name(m.name.replace(suffix, "_gtFine_labelIds.png")) for m in missing]
            if labels == "trainIds" and all(p.is_file() for p in label_ids):
                message += "; only the *_gtFine_labelIds.png files exist: " + _TRAINIDS_HELP.format(root=root)
            raise FileNotFoundError(message)
        super().__init__(files, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transforms)

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.labels == "labelIds":
            raw = cityscapes_labelids_to_trainids(super().convert_mask(raw, path).clip(0, 255))
        return super().convert_mask(raw, path)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        if self.labels == "trainIds":
            return (
                "trainIds are 0..18 and 255, so this file holds labelIds (0..33), not trainIds: "
                + _TRAINIDS_HELP.format(root=self.root)
            )
        return super().value_hint(path, bad_values)
