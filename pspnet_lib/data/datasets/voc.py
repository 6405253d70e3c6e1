"""Pascal VOC 2012 with the SBD augmented training set."""

from __future__ import annotations

from pathlib import Path

from ...core.text import read_lines
from ..metadata import VOC12AUG_INFO, VOC_CLASSES, VOC_PALETTE
from ..registry import register_dataset
from .base import PathLike, SegmentationDataset, Transforms, _first_existing, _require_files

__all__ = ["VOCAugDataset"]


@register_dataset("voc", splits=("train_aug", "val"), info=VOC12AUG_INFO)
class VOCAugDataset(SegmentationDataset):
    """Pascal VOC 2012 with the SBD augmented training set (21 classes, 255 = object borders).

    Args:
        root: the ``VOC2012`` directory (``VOCdevkit/VOC2012``), or a directory holding
            ``VOC2012/`` or ``VOCdevkit/VOC2012/``.
        split: a list in ``ImageSets/Segmentation``: ``train_aug`` (10,582 images; mmsegmentation's
            ``aug.txt`` is used when ``train_aug.txt`` is absent), ``val`` (1,449), ``train``, ``trainval``.
            Lines are image names (``2007_000032``) or ``image_path mask_path`` pairs relative to root.
        transforms: joint transform called as ``transforms(image, mask)``.
        mask_dir: directory of the masks relative to root. Default: ``SegmentationClassAug`` for
            ``*aug*`` splits; otherwise ``SegmentationClass`` (paletted PNGs, read as indices) when
            present, else ``SegmentationClassAug``.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train_aug",
        transforms: Transforms | None = None,
        mask_dir: str | None = None,
    ) -> None:
        given = Path(root)
        found = _first_existing([given, given / "VOC2012", given / "VOCdevkit" / "VOC2012"], "JPEGImages")
        if found is None:
            raise FileNotFoundError(
                f"no Pascal VOC 2012 found at {given}: expected JPEGImages/, ImageSets/Segmentation/ and "
                f"SegmentationClass[Aug]/ in {given}, {given / 'VOC2012'} or {given / 'VOCdevkit' / 'VOC2012'} "
                "(see docs/datasets.md)"
            )
        self.root, self.split = found, split
        lists = found / "ImageSets" / "Segmentation"
        list_file = lists / f"{split}.txt"
        if not list_file.is_file() and split == "train_aug" and (lists / "aug.txt").is_file():
            list_file = lists / "aug.txt"
        if not list_file.is_file():
            available = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
            raise FileNotFoundError(
                f"split list {list_file} does not exist (available splits: {', '.join(available) or 'none'}); "
                "train_aug.txt comes with the SBD augmentation, see docs/datasets.md"
            )
        if mask_dir is None:
            if "aug" not in split and (found / "SegmentationClass").is_dir():
                mask_dir = "SegmentationClass"
            else:
                mask_dir = "SegmentationClassAug"
        if not (found / mask_dir).is_dir():
            raise FileNotFoundError(
                f"mask directory {found / mask_dir} does not exist; SegmentationClassAug/ is made from the SBD "
                "annotations (see docs/datasets.md)"
            )
        files = []
        for line in read_lines(list_file):
            parts = line.split()
            if not parts:
                continue
            if len(parts) >= 2:  # "JPEGImages/x.jpg SegmentationClassAug/x.png" (the author's lists)
                files.append((found / parts[0].lstrip("/"), found / parts[1].lstrip("/")))
            else:
                files.append((found / "JPEGImages" / f"{parts[0]}.jpg", found / mask_dir / f"{parts[0]}.png"))
        if not files:
            raise ValueError(f"split list {list_file} is empty")
        _require_files(files, str(list_file))
        super().__init__(files, VOC_CLASSES, VOC_PALETTE, transforms)
