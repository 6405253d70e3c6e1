"""The dataset contract and the file helpers every dataset module shares.

Every dataset follows one contract. ``dataset[i]`` returns ``transforms(image, mask)``, where without
transforms ``image`` is a :class:`torchvision.tv_tensors.Image` (uint8, (C, H, W): RGB for the default
``in_channels=3``, grey for 1, the file's N bands for N; with a band spec, ``band_spec=``, the stored
values in their own type, and pixels of no data in any band ``ignore_index`` in the mask) and ``mask`` a
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..._files import atomic_output
from ...core.band_spec import BandSpec, check_nodata_label
from ...core.bands import nodata_pixels
from ...core.constants import IGNORE_INDEX
from ...core.images import read_image, read_mask, read_pair
from ...core.palette import default_palette

__all__ = ["SegmentationDataset", "IMAGE_EXTENSIONS", "MASK_EXTENSIONS"]

# One logger name for the whole package, as before it was split into modules.
logger = logging.getLogger("pspnet_lib.data.datasets")

PathLike = str | os.PathLike
Transforms = Callable[[Any, Any], Any]
Palette = list[tuple[int, int, int]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".npy")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
_LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


def _default_palette(num_classes: int) -> Palette:
    return default_palette(num_classes)


def _rgb(colour: Sequence[Any]) -> tuple[int, int, int]:
    """The first three values of ``colour`` as ints (a fourth, alpha, is dropped)."""
    if len(colour) < 3:
        raise ValueError(f"a palette colour needs three values (R, G, B), got {list(colour)!r}")
    return int(colour[0]), int(colour[1]), int(colour[2])


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """A picture array as uint8 (``.npy`` float arrays on the 0..1 scale: ``round(255 * v)``)."""
    if array.dtype == np.uint8:
        return array
    return (array.astype(np.float64) * 255.0).round().astype(np.uint8)


#: Pictures whose EXIF orientation was left unapplied (warned about once per process).
_UNAPPLIED_ORIENTATION: set[Path] = set()
_ORIENTATION_WARNINGS = 5


def _warn_orientation(image_path: Path, mask_path: Path, tag: int) -> None:
    """Say that a picture was used as stored although its EXIF orientation turns it (once per file,
    at most a few files named per process: a folder of such photos must not flood the log)."""
    if image_path in _UNAPPLIED_ORIENTATION:
        return
    _UNAPPLIED_ORIENTATION.add(image_path)
    count = len(_UNAPPLIED_ORIENTATION)
    if count > _ORIENTATION_WARNINGS:
        return
    more = " (further pictures like it are not named)" if count == _ORIENTATION_WARNINGS else ""
    logger.warning(
        "%s: its EXIF orientation %d turns it a quarter turn (width and height swap), but its mask %s has the "
        "stored size; using the stored pixels, as the mask was drawn on them. Viewers, labelling tools and predict "
        "show the picture turned: if that is how it was labelled, the mask is wrong%s",
        image_path,
        tag,
        mask_path,
        more,
    )


def _show(paths: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in list(paths)[:limit])
    return shown + (f" ... ({len(paths)} in all)" if len(paths) > limit else "")


class SegmentationDataset(Dataset):
    """Base class: a list of ``(image_path, mask_path)`` pairs read with PIL.

    Subclasses set ``files``, ``classes`` and ``palette`` and may override :meth:`convert_mask`
    (raw pixel values -> class indices) and :meth:`value_hint` (what to say about bad values).
    """

    ignore_index: int = IGNORE_INDEX
    #: Whether ``ignore_index`` is this dataset's documented "not scored" value (void, borders,
    #: unlabeled): then :meth:`verify` never suggests mapping it to a class. Only one's own folders
    #: may hold binary 0/255 masks where 255 means a class.
    IGNORE_IS_CONVENTION: bool = True

    def __init__(
        self,
        files: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        transforms: Transforms | None = None,
        ignore_index: int = IGNORE_INDEX,
        in_channels: int = 3,
        band_spec: BandSpec | Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.in_channels = in_channels
        if band_spec is not None and not isinstance(band_spec, BandSpec):
            band_spec = BandSpec.from_dict(band_spec, in_channels, what=type(self).__name__)
        if band_spec is not None and band_spec.bands != in_channels:
            raise ValueError(
                f"band_spec= describes {band_spec.bands} band(s) but in_channels={in_channels}; give one band spec entry per "
                "input channel (CLI: --band-spec FILE, --in-channels N)"
            )
        check_nodata_label(band_spec, ignore_index, len(classes), type(self).__name__)
        #: the band spec: pictures are read as stored values (see :meth:`load`); None: photo rules.
        self.band_spec = band_spec
        self.files = [(Path(i), Path(m)) for i, m in files]
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ValueError("a dataset needs at least one class name")
        self.palette: Palette = [_rgb(c) for c in (palette or _default_palette(len(self.classes)))]
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
        """The untransformed sample ``index``: uint8 image and int64 mask, sizes and values checked.

        Read by :func:`pspnet_lib.core.images.read_pair`: the picture turned as its EXIF
        orientation says (as ``predict`` reads it), the mask as stored; when the orientation would
        turn the picture away from a mask drawn on its stored pixels, the stored pixels are used
        and a warning names the file.
        """
        image_path, mask_path = self.files[index]
        image, raw, unapplied = read_pair(image_path, mask_path, channels=self.in_channels, band_spec=self.band_spec)
        if unapplied is not None:
            _warn_orientation(image_path, mask_path, unapplied)
        if self.band_spec is None:
            image = _as_uint8(image)
        mask = self.convert_mask(raw, mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; an image and its mask must have the same size"
            )
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        missing = nodata_pixels(image_t.as_subclass(torch.Tensor), self.band_spec)
        if missing is not None:  # no data in any band: not scored, whatever the mask says there
            mask[missing.numpy()] = self.ignore_index
        self.check_mask(mask, mask_path, stored=raw)
        return image_t, tv_tensors.Mask(torch.from_numpy(mask))

    def load_mask(self, index: int) -> np.ndarray:
        """The untransformed mask of sample ``index`` alone (its picture is not read): int64 ``(H, W)``
        class indices and ``ignore_index``, values checked as :meth:`load` checks them. With a band
        spec's ``nodata`` the picture is read too: its pixels of no data are ``ignore_index``."""
        if self.band_spec is not None and self.band_spec.nodata is not None:
            return self.load(index)[1].as_subclass(torch.Tensor).numpy()
        _, mask_path = self.files[index]
        mask = self.convert_mask(self.read_mask(mask_path), mask_path)
        self.check_mask(mask, mask_path)
        return mask

    @staticmethod
    def read_image(path: Path, exif_orientation: bool = True, channels: int = 3) -> np.ndarray:
        """``(H, W, channels)`` uint8 array of an image file, read as ``predict`` reads it.

        ``channels`` is the model's ``in_channels``: 3 gives RGB (any picture), 1 grayscale, N a
        multi-page TIFF, an N-band picture or a ``.npy`` array ``(H, W, N)`` (float arrays on the
        0..1 scale become ``round(255 * v)``). Pixel values follow the fixed rules of
        :mod:`pspnet_lib.core.images` (16-bit ``/ 257``, float 0..1), never the content; the
        rotation stored in the file's EXIF data is applied (as image viewers and ``predict`` do)
        unless ``exif_orientation=False``.
        """
        return _as_uint8(read_image(path, channels, exif_orientation=exif_orientation))

    @staticmethod
    def read_mask(path: Path) -> np.ndarray:
        """The stored values of a mask file: ``(H, W)`` for index masks, ``(H, W, 3)`` for colour masks
        (:func:`pspnet_lib.core.images.read_mask`)."""
        return read_mask(path)

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

    def check_mask(self, mask: np.ndarray, path: Path, stored: np.ndarray | None = None) -> None:
        """Raise if ``mask`` holds a value that is neither a class index nor the ignore index.

        The message quotes the values as the file stores them (``stored``, the mask before
        :meth:`convert_mask`, when it has the mask's shape): an ADE20K annotation storing 200 is
        reported as 200, not as the class index 199 it would become. Every dataset reports bad
        values through this one method.
        """
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)
        if bad.any():
            source = stored if stored is not None and stored.shape == mask.shape else mask
            values = np.unique(source[bad])
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

        Returns ``{"images": n read, "class_pixels": [count per class], "ignored_pixels": count,
        "sizes": [(height, width) of each picture read]}`` (sizes after EXIF orientation).
        Raises ValueError listing up to ``max_errors`` problems. Logs a warning naming classes
        that never occur (often masks written with other values, e.g. 0/255 binary masks).
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        ignored = 0
        seen: set[int] = set()
        sizes: list[tuple[int, int]] = []
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
            sizes.append((int(mask.shape[-2]), int(mask.shape[-1])))
            values = mask.numpy().ravel()
            if len(seen) <= 2:  # only the question "are all masks two-valued 0/255?" needs it
                seen.update(int(v) for v in np.unique(values))
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
            if seen == {0, self.ignore_index} and not self.IGNORE_IS_CONVENTION and self.num_classes >= 2:
                # Two-valued 0/255 masks: the usual binary-mask export, where 255 means the object
                # class, not "ignore". Anything else with 255 (void, borders) is left alone: mapping
                # it to a class would teach the model that void is, e.g., "bicycle".
                hint = (
                    f"; every mask read holds only 0 and {self.ignore_index} ({ignored} pixels, ignored). If these "
                    f"are binary masks with the object stored as {self.ignore_index}, remap it: "
                    f"label_map={{{self.ignore_index}: 1}} (CLI: --label-map {self.ignore_index}:1)"
                )
            elif ignored:
                hint = f"; {ignored} pixels are {self.ignore_index} (ignored)"
            logger.warning("%r: no pixel of class(es) %s%s%s", self, ", ".join(absent), where, hint)
        return {"images": len(indices), "class_pixels": counts.tolist(), "ignored_pixels": ignored, "sizes": sizes}


def _require_files(pairs: Sequence[tuple[Path, Path]], what: str, hint: str = "") -> None:
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed by {what} do not exist: {_show(missing)}" + (f"; {hint}" if hint else "")
        )


def _first_existing(candidates: Sequence[Path], marker: str) -> Path | None:
    for candidate in candidates:
        if (candidate / marker).is_dir():
            return candidate
    return None


def _save_png_atomically(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def reduce_zero_label(stored: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmsegmentation's ``reduce_zero_label``: stored 0 -> ``ignore_index``, stored k -> class k - 1.

    A stored ``ignore_index`` stays ``ignore_index`` (as in mmseg's ``LoadAnnotations``, where
    255 - 1 = 254 is set back to 255). Returns int64 of the same shape.
    """
    mask = stored.astype(np.int64) - 1
    mask[(stored == 0) | (stored == ignore_index)] = ignore_index
    return mask


class ZooLabelConvention(SegmentationDataset):
    """A dataset whose label mapping is its record's (``@register_dataset(..., info=...)``, which sets
    ``cls.record``) zoo :class:`~pspnet_lib.data.DatasetInfo`: with ``info.reduce_zero_label`` stored
    values are mapped by :func:`reduce_zero_label` (a bad value is still reported as stored)."""

    record: Any

    @property
    def info(self) -> Any:
        """The zoo :class:`~pspnet_lib.data.DatasetInfo` of this dataset (its record's)."""
        return type(self).record.info

    @property
    def prepare_command(self) -> str:
        """``pspnet prepare <name>``: the sub-command that writes this dataset's layout."""
        return f"pspnet prepare {self.record.prepared_with or self.record.key}"

    def convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        mask = super().convert_mask(raw, path)
        return reduce_zero_label(mask, self.ignore_index) if self.info.reduce_zero_label else mask


class ImageAnnotationDirs(ZooLabelConvention):
    """Base of the datasets in mmsegmentation's prepared layout: ``<images>/<split>`` + ``<annotations>/<split>``.

    An image ``<images>/<split>/<stem><IMG_SUFFIX>`` is paired with
    ``<annotations>/<split>/<stem><SEG_SUFFIX>``. Subclasses set the class attributes below;
    the dataset record's :class:`~pspnet_lib.data.DatasetInfo` gives the class names,
    palette and whether ``reduce_zero_label`` applies.

    Args:
        root: the dataset's directory (as written by ``pspnet prepare <dataset>``).
        split: a split name of :attr:`SPLITS` (aliases such as ``val`` for ``test2014`` are accepted).
        transforms: joint transform called as ``transforms(image, mask)``.
    """

    IMAGE_DIR: str = "img_dir"
    ANNOTATION_DIR: str = "ann_dir"
    IMG_SUFFIX: str = ".png"
    SEG_SUFFIX: str = ".png"
    #: split names accepted -> folder name under IMAGE_DIR / ANNOTATION_DIR
    SPLITS: dict[str, str] = {"train": "train", "val": "val"}

    def __init__(self, root: PathLike, split: str = "train", transforms: Transforms | None = None) -> None:
        root = Path(root)
        if split not in self.SPLITS:
            raise ValueError(f"unknown {self.info.title} split {split!r}; expected one of {', '.join(self.SPLITS)}")
        self.root, self.split = root, self.SPLITS[split]
        image_dir, ann_dir = root / self.IMAGE_DIR / self.split, root / self.ANNOTATION_DIR / self.split
        prepare = f"; prepare it with `{self.prepare_command} SRC {root}` (see docs/datasets.md)"
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"no {self.info.title} found at {root}: expected {self.IMAGE_DIR}/{self.split}/*{self.IMG_SUFFIX} and "
                f"{self.ANNOTATION_DIR}/{self.split}/*{self.SEG_SUFFIX} there{prepare}"
            )
        images = sorted(
            p for p in image_dir.iterdir() if p.name.endswith(self.IMG_SUFFIX) and not p.name.startswith(".")
        )
        if not images:
            raise FileNotFoundError(f"no *{self.IMG_SUFFIX} images in {image_dir}{prepare}")
        files = [(p, ann_dir / (p.name[: -len(self.IMG_SUFFIX)] + self.SEG_SUFFIX)) for p in images]
        missing = [m for _, m in files if not m.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(files)} annotation(s) missing in {ann_dir}: {_show(missing)}{prepare}"
            )
        super().__init__(files, self.info.classes, self.info.palette, transforms, self.info.ignore_index)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        k = self.num_classes
        stored = f"0 (ignored), 1..{k}" if self.info.reduce_zero_label else f"0..{k - 1}"
        return (
            f"{self.info.title} annotations store {stored} and {self.ignore_index} (ignore) ({self.info.label_convention}); "
            f"this file was not written by `{self.prepare_command}` or mmsegmentation's converter"
        )
