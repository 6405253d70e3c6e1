"""The dataset contract and the file helpers every dataset module shares.

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
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..._files import atomic_output
from ...inference.images import pil_to_rgb
from ..constants import IGNORE_INDEX

__all__ = ["SegmentationDataset", "IMAGE_EXTENSIONS", "MASK_EXTENSIONS"]

# One logger name for the whole package, as before it was split into modules.
logger = logging.getLogger("pspnet_lib.data.datasets")

PathLike = str | os.PathLike
Transforms = Callable[[Any, Any], Any]
Palette = list[tuple[int, int, int]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
_LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


def _default_palette(num_classes: int) -> Palette:
    # Imported here: inference.visualize imports data.constants, so a module-level import is circular.
    from ...inference.visualize import default_palette

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


def _require_files(pairs: Sequence[tuple[Path, Path]], what: str, hint: str = "") -> None:
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) listed by {what} do not exist: {_show(missing)}" + (f"; {hint}" if hint else ""))


def _first_existing(candidates: Sequence[Path], marker: str) -> Path | None:
    for candidate in candidates:
        if (candidate / marker).is_dir():
            return candidate
    return None


def _save_png_atomically(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
