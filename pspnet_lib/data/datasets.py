"""Segmentation datasets: Pascal VOC 2012 + SBD, ADE20K, Cityscapes and a folder of one's own images.

Every dataset follows one contract. ``dataset[i]`` returns ``transforms(image, mask)``, where without
transforms ``image`` is a :class:`torchvision.tv_tensors.Image` (uint8, (3, H, W), RGB) and ``mask`` a
:class:`torchvision.tv_tensors.Mask` (int64, (H, W)) holding class indices ``0..num_classes-1`` and
``ignore_index`` (255) for pixels that are not scored. Attributes: ``classes`` (names), ``palette``
(one RGB tuple per class), ``num_classes``, ``ignore_index`` and ``files`` (``(image_path, mask_path)``
pairs). A mask value outside the classes is reported with the file's name when the sample is read
(:meth:`SegmentationDataset.verify` checks the whole dataset up front).

The directory layouts and how to prepare each dataset are described in docs/datasets.md.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .._files import atomic_output
from ..inference.images import pil_to_rgb
from .constants import IGNORE_INDEX
from .metadata import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
)

__all__ = [
    "SegmentationDataset",
    "VOCAugDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "FolderDataset",
    "DATASETS",
    "DEFAULT_SPLITS",
    "build_dataset",
    "cityscapes_labelids_to_trainids",
    "create_cityscapes_trainids",
    "read_classes_file",
    "read_palette_file",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
Transforms = Callable[[Any, Any], Any]
Palette = list[tuple[int, int, int]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
_LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


def _default_palette(num_classes: int) -> Palette:
    # Imported here: inference.visualize imports data.constants, so a module-level import is circular.
    from ..inference.visualize import default_palette

    return default_palette(num_classes)


def _show(paths: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in list(paths)[:limit])
    return shown + (f" ... ({len(paths)} in all)" if len(paths) > limit else "")


class SegmentationDataset(Dataset):
    """Base class: a list of ``(image_path, mask_path)`` pairs read with PIL.

    Subclasses set ``files``, ``classes`` and ``palette`` and may override :meth:`convert_mask`
    (raw pixel values -> class indices) and :meth:`value_hint` (what to say about bad values).
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        files: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        transforms: Transforms | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.files = [(Path(i), Path(m)) for i, m in files]
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ValueError("a dataset needs at least one class name")
        self.palette: Palette = [tuple(int(v) for v in c[:3]) for c in (palette or _default_palette(len(self.classes)))]
        if len(self.palette) < len(self.classes):
            raise ValueError(f"the palette has {len(self.palette)} colours for {len(self.classes)} classes")
        self.palette = self.palette[: len(self.classes)]
        self.transforms = transforms
        self.ignore_index = ignore_index

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        root = getattr(self, "root", None)
        return f"{type(self).__name__}(root={str(root)!r}, split={getattr(self, 'split', None)!r}, samples={len(self)}, classes={self.num_classes})"

    def __getitem__(self, index: int) -> Any:
        image, mask = self.load(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed sample ``index``: uint8 RGB image and int64 mask, sizes checked."""
        image_path, mask_path = self.files[index]
        image = self.read_image(image_path)
        mask = self.convert_mask(self.read_mask(mask_path), mask_path)
        if image.shape[:2] != mask.shape and image.shape[:2] == mask.shape[::-1]:
            # A phone photo stores its rotation in EXIF; masks drawn in a viewer or annotation tool
            # follow the rotated picture. Use that orientation when it is the one the mask has.
            rotated = self.read_image(image_path, exif_orientation=True)
            if rotated.shape[:2] == mask.shape:
                image = rotated
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; an image and its mask must have the same size"
            )
        self.check_mask(mask, mask_path)
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        return image_t, tv_tensors.Mask(torch.from_numpy(mask))

    @staticmethod
    def read_image(path: Path, exif_orientation: bool = False) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB array of an image file (any mode, read as ``predict`` reads it).

        With ``exif_orientation`` the rotation stored in the file's EXIF data is applied (as image
        viewers and ``predict`` do); without, the pixels are taken as stored.
        """
        try:
            with Image.open(path) as picture:
                if exif_orientation:
                    picture = ImageOps.exif_transpose(picture)
                return np.array(pil_to_rgb(picture))
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} does not exist") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {path}: {error}") from None

    @staticmethod
    def read_mask(path: Path) -> np.ndarray:
        """The stored values of a mask file: ``(H, W)`` for index masks, ``(H, W, 3)`` for colour masks."""
        try:
            with Image.open(path) as picture:
                if picture.mode == "LA":  # grey + alpha (image editors' transparent layers): alpha is not a label
                    return np.asarray(picture)[..., 0]
                if picture.mode in ("RGB", "RGBA"):
                    array = np.asarray(picture.convert("RGB"))
                    if (array == array[..., :1]).all():  # a grey mask saved as RGB
                        return array[..., 0]
                    return array
                if picture.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                    raise ValueError(
                        f"mask {path} has PIL mode {picture.mode!r}; masks must be single-channel or paletted images "
                        "holding class indices (pixel value = class index), e.g. saved as 8-bit grey PNG"
                    )
                return np.asarray(picture)
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file {path} does not exist") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read mask {path}: {error}") from None

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map stored mask values to class indices (int64 ``(H, W)``); identity by default."""
        if raw.ndim != 2:
            raise ValueError(
                f"mask {path} is a colour (RGB) image; masks must hold class indices as a single-channel or "
                "paletted PNG (pixel value = class index, 255 = ignore)"
            )
        return raw.astype(np.int64)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        """Advice appended to the error about values outside the classes."""
        return (
            f"mask values must be class indices 0..{self.num_classes - 1} or {self.ignore_index} (ignore); "
            "check the number of classes and how the masks were written"
        )

    def check_mask(self, mask: np.ndarray, path: Path) -> None:
        """Raise if ``mask`` holds a value that is neither a class index nor the ignore index."""
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bad.any():
            values = np.unique(mask[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
            raise ValueError(
                f"mask {path} holds value(s) {shown} outside the {self.num_classes} classes of {type(self).__name__}; "
                + self.value_hint(path, values)
            )

    def verify(self, max_errors: int = 20, max_images: int | None = None, warn_absent: bool = True) -> dict[str, Any]:
        """Read every sample once and report all problems together (sizes, unreadable files, bad values).

        Args:
            max_errors: stop after this many problems.
            max_images: read only this many samples, spread evenly over the dataset (a quick
                check before training, as ``pspnet train`` does); ``None`` reads all.
            warn_absent: log a warning naming the classes that never occur in what was read.

        Returns ``{"images": n read, "class_pixels": [count per class], "ignored_pixels": count}``.
        Raises ValueError listing up to ``max_errors`` problems. Logs a warning naming classes
        that never occur (often masks written with other values, e.g. 0/255 binary masks).
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        errors: list[str] = []
        indices: Sequence[int] = range(len(self))
        if max_images is not None and len(self) > max_images:
            indices = sorted({round(i * (len(self) - 1) / max(max_images - 1, 1)) for i in range(max_images)})
        for index in indices:
            try:
                _, mask = self.load(index)
            except (ValueError, FileNotFoundError) as error:
                errors.append(str(error))
                if len(errors) >= max_errors:
                    break
                continue
            values = mask.numpy().ravel()
            ignored += int((values == self.ignore_index).sum())
            counts += np.bincount(values[values != self.ignore_index], minlength=self.num_classes)[: self.num_classes]
        if len(errors) == 1:
            raise ValueError(errors[0])
        if errors:
            raise ValueError(f"{len(errors)} problem(s) in {self!r}:\n  " + "\n  ".join(errors))
        absent = [name for name, count in zip(self.classes, counts) if count == 0]
        if absent and warn_absent:
            where = f" in {len(indices)} of {len(self)} samples" if len(indices) < len(self) else ""
            hint = ""
            if ignored:
                # The usual cause: a class stored as 255 (binary 0/255 masks), which means "ignore".
                hint = (
                    f"; {ignored} pixels are {self.ignore_index} (ignored). If your masks store a class as "
                    f"{self.ignore_index} (e.g. 0/255 binary masks), remap it: label_map={{{self.ignore_index}: "
                    f"{self.classes.index(absent[-1])}}} (CLI: --label-map {self.ignore_index}:"
                    f"{self.classes.index(absent[-1])})"
                )
            logger.warning("%r: no pixel of class(es) %s%s%s", self, ", ".join(absent), where, hint)
        return {"images": len(indices), "class_pixels": counts.tolist(), "ignored_pixels": ignored}


def _common_mask_suffix(image_stems: Sequence[str], mask_stems: Sequence[str]) -> str | None:
    """The suffix that turns every unmatched image stem into an unmatched mask stem, if there is one."""
    if not image_stems or not mask_stems:
        return None
    suffixes = set()
    for mask in mask_stems:
        owners = [image for image in image_stems if mask.startswith(image) and len(mask) > len(image)]
        if not owners:
            return None
        suffixes.add(mask[len(max(owners, key=len)):])
    return suffixes.pop() if len(suffixes) == 1 else None


def has_split(root: PathLike, split: str, image_dir: str = "images", mask_dir: str = "masks") -> bool:
    """Whether a folder dataset at ``root`` defines ``split`` (a split list or sub-folders)."""
    root = Path(root)
    return (
        (root / "splits" / f"{split}.txt").is_file()
        or (root / f"{split}.txt").is_file()
        or (root / image_dir / split).is_dir()
    )


def _require_files(pairs: Sequence[tuple[Path, Path]], what: str, hint: str = "") -> None:
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) listed by {what} do not exist: {_show(missing)}" + (f"; {hint}" if hint else ""))


def _first_existing(candidates: Sequence[Path], marker: str) -> Path | None:
    for candidate in candidates:
        if (candidate / marker).is_dir():
            return candidate
    return None


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
        self, root: PathLike, split: str = "train_aug", transforms: Transforms | None = None, mask_dir: str | None = None
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
        for line in list_file.read_text().splitlines():
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
        images = sorted(p for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) if image_dir.is_dir() else []
        if not images:
            raise FileNotFoundError(f"no images in {image_dir}; expected ADE_*.jpg files there")
        files = [(p, mask_dir / f"{p.stem}.png") for p in images]
        missing = [m for _, m in files if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} annotation(s) missing in {mask_dir}: {_show(missing)}")
        super().__init__(files, ADE20K_CLASSES, ADE20K_PALETTE, transforms)

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        mask = super().convert_mask(raw, path) - 1
        mask[raw == 0] = self.ignore_index
        return mask

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        return "ADEChallengeData2016 annotations hold 0 (other) and 1..150; this file does not look like one"


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


def _save_png_atomically(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def create_cityscapes_trainids(root: PathLike, splits: Sequence[str] = ("train", "val"), overwrite: bool = False) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` next to every ``*_gtFine_labelIds.png`` under ``root/gtFine``.

    The same files as cityscapesscripts' ``csCreateTrainIdLabelImgs`` for the semantic labels.
    Each file is written to a temporary name and renamed, so an interrupted run leaves no broken
    file. Returns the number of files written (existing ones are skipped unless ``overwrite``).
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
            with Image.open(source) as picture:
                _save_png_atomically(cityscapes_labelids_to_trainids(np.asarray(picture)), target)
            written += 1
    logger.info("wrote %d Cityscapes trainId masks under %s", written, root / "gtFine")
    return written


_TRAINIDS_HELP = (
    "create the trainId masks with cityscapesscripts (`pip install cityscapesscripts; "
    "CITYSCAPES_DATASET={root} csCreateTrainIdLabelImgs`) or with "
    "`pspnet_lib.data.create_cityscapes_trainids('{root}')`, or read the labelIds files directly with "
    "CityscapesDataset(..., labels='labelIds')"
)


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


def read_classes_file(path: PathLike) -> list[str]:
    """Class names from a text file, one per line in index order (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} does not exist")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"classes file {path} lists no class names (expected one name per line)")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"classes file {path} repeats class name(s) {', '.join(duplicates)}")
    return names


def read_palette_file(path: PathLike) -> Palette:
    """Colours from a text file, one ``R G B`` (or ``R,G,B``) line per class in index order."""
    path = Path(path)
    palette = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        try:
            colour = tuple(int(v) for v in parts)
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise ValueError(f"{path}:{number}: expected 'R G B' with values 0..255, got {line.strip()!r}")
        palette.append(colour)
    return palette


class FolderDataset(SegmentationDataset):
    """One's own images and masks in a folder (the fine-tuning case).

    Layout (see docs/datasets.md)::

        root/
          classes.txt            one class name per line; line i is mask value i
          palette.txt            optional: "R G B" per class (colours; also decodes RGB masks)
          images/  a.jpg b.png ...      (or images/train/, images/val/ ...)
          masks/   a.png b.png ...      (or masks/train/, masks/val/ ...)
          splits/  train.txt val.txt    optional: image stems, one per line (or root/train.txt)

    Masks are PNG (or BMP/TIFF) files whose pixel values are class indices, single-channel or
    paletted, 255 = ignore; an image and its mask share a file stem (``a.jpg`` <-> ``a.png``,
    or ``a_mask.png`` with ``mask_suffix="_mask"``). Colour (RGB) masks are decoded with the
    palette when one is given (``palette.txt`` or ``palette=``).

    Args:
        root: the folder.
        split: ``None`` for every pair in ``images/``; otherwise a split name, found as
            ``splits/<split>.txt`` or ``<split>.txt`` in root, or as sub-folders ``images/<split>/``
            and ``masks/<split>/``, or (``train``/``val`` only) drawn with ``val_fraction``.
        classes: class names: ``None`` reads ``root/classes.txt``; a list; or a path to such a file.
        palette: colours per class; ``None`` reads ``root/palette.txt`` if present, else distinct defaults.
        transforms: joint transform.
        image_dir, mask_dir: sub-folder names.
        mask_suffix: mask stem = image stem + this suffix.
        label_map: remap stored mask values before use, e.g. ``{255: 1}`` for binary masks saved
            as 0/255 (values not in the map are kept).
        val_fraction: when the folder has no split information, hold out this fraction of the pairs
            (a fixed shuffle by ``seed``) as ``val`` and use the rest as ``train``.
        seed: seed of that shuffle.
        ignore_index: mask value not scored.
    """

    def __init__(
        self,
        root: PathLike,
        split: str | None = None,
        classes: Sequence[str] | PathLike | None = None,
        palette: Sequence[Sequence[int]] | PathLike | None = None,
        transforms: Transforms | None = None,
        *,
        image_dir: str = "images",
        mask_dir: str = "masks",
        mask_suffix: str = "",
        label_map: Mapping[int, int] | None = None,
        val_fraction: float | None = None,
        seed: int = 0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        root = Path(root)
        self.root, self.split = root, split
        images_root, masks_root = root / image_dir, root / mask_dir
        if not images_root.is_dir() or not masks_root.is_dir():
            raise FileNotFoundError(
                f"{root} is not a segmentation folder: expected {image_dir}/ (pictures) and {mask_dir}/ (PNG masks "
                f"with the same file stems) in it{'' if root.is_dir() else ' (the directory does not exist)'}; "
                "see docs/datasets.md"
            )
        names = self._resolve_classes(root, classes)
        colours, self._explicit_palette = self._resolve_palette(root, palette, len(names))
        self.mask_suffix = mask_suffix
        self.label_map = dict(label_map) if label_map else None

        image_folder, mask_folder, stems = images_root, masks_root, None
        if split is not None:
            split_file = next((p for p in (root / "splits" / f"{split}.txt", root / f"{split}.txt") if p.is_file()), None)
            if split_file is not None:
                stems = [Path(line.strip()).stem for line in split_file.read_text().splitlines() if line.strip()]
                if not stems:
                    raise ValueError(f"split file {split_file} lists no images")
            elif (images_root / split).is_dir():
                image_folder, mask_folder = images_root / split, masks_root / split
                if not mask_folder.is_dir():
                    raise FileNotFoundError(f"{image_folder} exists but {mask_folder} does not; masks of split {split!r} go there")
            elif val_fraction is not None and split in ("train", "val"):
                stems = self._holdout(self._pairs(images_root, masks_root), split, val_fraction, seed)
            else:
                raise FileNotFoundError(
                    f"no split {split!r} in {root}: expected {root / 'splits' / f'{split}.txt'} or {root / f'{split}.txt'} "
                    f"(image stems, one per line), or sub-folders {image_dir}/{split}/ and {mask_dir}/{split}/"
                    + ("; or pass val_fraction=0.1 (CLI: --val-fraction 0.1) to hold out part of the pairs as 'val'"
                       if split in ("train", "val") else "")
                    + "; or split=None for all pairs"
                )
        pairs = self._pairs(image_folder, mask_folder)
        if stems is not None:
            unknown = [s for s in stems if s not in pairs]
            if unknown:
                raise FileNotFoundError(f"split {split!r} names image(s) with no image/mask pair in {image_folder}: {_show(unknown)}")
            files = [pairs[s] for s in stems]
        else:
            files = [pairs[s] for s in sorted(pairs)]
        super().__init__(files, names, colours, transforms, ignore_index)

    @staticmethod
    def _resolve_classes(root: Path, classes: Sequence[str] | PathLike | None) -> list[str]:
        if classes is None:
            if not (root / "classes.txt").is_file():
                raise FileNotFoundError(
                    f"no class names for {root}: write {root / 'classes.txt'} (one name per line, line i = mask value i) "
                    "or pass classes=[...]"
                )
            return read_classes_file(root / "classes.txt")
        if isinstance(classes, (str, os.PathLike)):
            return read_classes_file(classes)
        names = [str(c) for c in classes]
        if not names:
            raise ValueError("classes is empty; give at least one class name")
        return names

    @staticmethod
    def _resolve_palette(root: Path, palette: Any, num_classes: int) -> tuple[Palette, bool]:
        if palette is None and (root / "palette.txt").is_file():
            palette = root / "palette.txt"
        if palette is None:
            return _default_palette(num_classes), False
        colours = read_palette_file(palette) if isinstance(palette, (str, os.PathLike)) else [tuple(int(v) for v in c[:3]) for c in palette]
        if len(colours) < num_classes:
            raise ValueError(f"the palette has {len(colours)} colours for {num_classes} classes; give one 'R G B' per class")
        return colours[:num_classes], True

    def _pairs(self, image_folder: Path, mask_folder: Path) -> dict[str, tuple[Path, Path]]:
        images: dict[str, Path] = {}
        duplicates = []
        for path in sorted(image_folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
                if path.stem in images:
                    duplicates.append(path)
                images[path.stem] = path
        if duplicates:
            raise ValueError(f"several images share a stem in {image_folder}: {_show(duplicates)}; stems must be unique")
        if not images:
            subfolders = sorted(p.name for p in image_folder.iterdir() if p.is_dir())
            hint = f" (it has sub-folders {', '.join(subfolders)}: pass split=...)" if subfolders else ""
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_folder}{hint}")
        masks: dict[str, Path] = {}
        lossy = []
        for path in sorted(mask_folder.iterdir()) if mask_folder.is_dir() else []:
            if not path.is_file() or path.name.startswith("."):
                continue
            suffix = path.suffix.lower()
            if suffix in _LOSSY_EXTENSIONS:
                lossy.append(path)
            elif suffix in MASK_EXTENSIONS:
                stem = path.stem
                if self.mask_suffix:
                    if not stem.endswith(self.mask_suffix):
                        continue
                    stem = stem[: -len(self.mask_suffix)]
                masks[stem] = path
        if lossy:
            raise ValueError(
                f"masks must be lossless (PNG): JPEG/WebP compression changes label values; found {_show(lossy)}"
            )
        no_mask = [images[s] for s in images if s not in masks]
        no_image = [masks[s] for s in masks if s not in images]
        if no_mask or no_image:
            problems = []
            if no_mask:
                problems.append(f"{len(no_mask)} image(s) without a mask {mask_folder / ('<stem>' + self.mask_suffix + '.png')}: {_show(no_mask)}")
            if no_image:
                problems.append(f"{len(no_image)} mask(s) without an image in {image_folder}: {_show(no_image)}")
            suffix = _common_mask_suffix([p.stem for p in no_mask], [masks[s].stem for s in masks if s not in images])
            if suffix:
                problems.append(
                    f"the masks seem to be named <image stem>{suffix}: pass mask_suffix={self.mask_suffix + suffix!r} "
                    f"(CLI: --mask-suffix {self.mask_suffix + suffix})"
                )
            raise FileNotFoundError("unmatched images and masks: " + "; ".join(problems))
        return {stem: (images[stem], masks[stem]) for stem in images}

    @staticmethod
    def _holdout(pairs: Mapping[str, Any], split: str, val_fraction: float, seed: int) -> list[str]:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        stems = sorted(pairs)
        if len(stems) < 2:
            raise ValueError(f"cannot hold out a validation part of {len(stems)} image(s)")
        random.Random(seed).shuffle(stems)
        count = min(len(stems) - 1, max(1, round(len(stems) * val_fraction)))
        chosen = stems[:count] if split == "val" else stems[count:]
        return sorted(chosen)

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            if not self._explicit_palette:
                raise ValueError(
                    f"mask {path} is a colour (RGB) image; either store class indices (single-channel or paletted "
                    f"PNG) or give the class colours in {self.root / 'palette.txt'} ('R G B' per class) to decode it"
                )
            return self._decode_colours(raw, path)
        mask = raw.astype(np.int64)
        if self.label_map:
            mapped = mask.copy()
            for source, target in self.label_map.items():
                mapped[mask == source] = target
            mask = mapped
        return mask

    def _decode_colours(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        lookup = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(self.palette)}
        unique, inverse = np.unique(codes, return_inverse=True)
        unknown = [int(c) for c in unique if int(c) not in lookup]
        if unknown:
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:8])
            raise ValueError(f"colour mask {path} holds colour(s) {shown} that are not in the palette of {self.num_classes} classes")
        return np.array([lookup[int(c)] for c in unique], dtype=np.int64)[inverse].reshape(codes.shape)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        hint = f"there are {self.num_classes} classes ({', '.join(self.classes[:8])}{' ...' if self.num_classes > 8 else ''}), so mask values must be 0..{self.num_classes - 1} or {self.ignore_index} (ignore)"
        return hint + "; add the missing class names or fix the masks"


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
