"""One's own images and masks in a folder, and the class-name / palette text files."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.band_spec import BandSpec
from ...core.constants import IGNORE_INDEX
from ...core.text import read_lines
from ..metadata import VOC_PALETTE
from ..registry import register_dataset
from .base import (
    _LOSSY_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    Palette,
    PathLike,
    SegmentationDataset,
    Transforms,
    _default_palette,
    _rgb,
    _show,
)

__all__ = [
    "FolderDataset",
    "VOC_VOID_COLOUR",
    "has_split",
    "read_classes_file",
    "read_ignore_colours",
    "read_palette_file",
]


def _common_mask_suffix(image_stems: Sequence[str], mask_stems: Sequence[str]) -> str | None:
    """The suffix that turns every unmatched image stem into an unmatched mask stem, if there is one."""
    if not image_stems or not mask_stems:
        return None
    suffixes = set()
    for mask in mask_stems:
        owners = [image for image in image_stems if mask.startswith(image) and len(mask) > len(image)]
        if not owners:
            return None
        suffixes.add(mask[len(max(owners, key=len)) :])
    return suffixes.pop() if len(suffixes) == 1 else None


def has_split(root: PathLike, split: str, image_dir: str = "images", mask_dir: str = "masks") -> bool:
    """Whether a folder dataset at ``root`` defines ``split`` (a split list or sub-folders)."""
    root = Path(root)
    return (
        (root / "splits" / f"{split}.txt").is_file()
        or (root / f"{split}.txt").is_file()
        or (root / image_dir / split).is_dir()
    )


def read_classes_file(path: PathLike) -> list[str]:
    """Class names from a text file, one per line in index order (blank lines skipped).

    UTF-8 with or without a byte-order mark (or UTF-16 with one), any line ends
    (:func:`pspnet_lib.core.text.read_lines`): a file saved by a Windows tool reads the same.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} does not exist")
    names = [line for line in read_lines(path) if line]
    if not names:
        raise ValueError(f"classes file {path} lists no class names (expected one name per line)")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"classes file {path} repeats class name(s) {', '.join(duplicates)}")
    return names


def read_palette_file(path: PathLike) -> Palette:
    """Class colours from a text file, one ``R G B`` (or ``R,G,B``) line per class in index order.

    Lines ``R G B ignore`` declare colours read as the ignore index instead (see
    :func:`read_ignore_colours`); they are not classes and are skipped here.
    """
    return _parse_palette_file(path)[0]


def read_ignore_colours(path: PathLike) -> Palette:
    """The colours a palette file declares as ignore (``R G B ignore`` lines, e.g. ``224 224 192 ignore``)."""
    return _parse_palette_file(path)[1]


def _parse_palette_file(path: PathLike) -> tuple[Palette, Palette]:
    path = Path(path)
    palette: Palette = []
    ignore: Palette = []
    for number, line in enumerate(read_lines(path), 1):
        if not line:
            continue
        parts = line.replace(",", " ").split()
        is_ignore = len(parts) == 4 and parts[3].lower() == "ignore"
        try:
            colour = tuple(int(v) for v in parts[:3]) if is_ignore else tuple(int(v) for v in parts)
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise ValueError(
                f"{path}:{number}: expected 'R G B' (a class colour) or 'R G B ignore' (an ignored colour) with "
                f"values 0..255, got {line.strip()!r}"
            )
        (ignore if is_ignore else palette).append(colour)
    return palette, ignore


#: PASCAL VOC's void colour: object boundaries and difficult regions in VOC's colour masks.
VOC_VOID_COLOUR = (224, 224, 192)


@register_dataset("folder", splits=("train", "val"))
class FolderDataset(SegmentationDataset):
    """One's own images and masks in a folder (the fine-tuning case).

    Layout (see docs/datasets.md)::

        root/
          classes.txt            one class name per line; line i is mask value i
          palette.txt            optional: "R G B" per class (colours; also decodes RGB masks);
                                 "R G B ignore" lines: colours read as ignore (255)
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
        ignore_colours: colours of RGB masks read as ``ignore_index`` (e.g. ``[(255, 255, 255)]``),
            added to the ``R G B ignore`` lines of the palette file. With the PASCAL VOC palette
            (its first colours), VOC's void colour (224, 224, 192) is ignored without configuration.
        transforms: joint transform.
        image_dir, mask_dir: sub-folder names.
        mask_suffix: mask stem = image stem + this suffix.
        label_map: remap stored mask values before use, e.g. ``{255: 1}`` for binary masks saved
            as 0/255 (values not in the map are kept).
        val_fraction: when the folder has no split information, hold out this fraction of the pairs
            (a fixed shuffle by ``seed``) as ``val`` and use the rest as ``train``.
        seed: seed of that shuffle.
        ignore_index: mask value not scored.
        in_channels: channels of the images as the model takes them (``config.in_channels``): 3
            reads every picture as RGB, 1 as grayscale, N multi-page TIFFs / N-band pictures /
            ``.npy`` arrays ``(H, W, N)`` (see :meth:`SegmentationDataset.read_image`).
        band_spec: the band spec of images stored in their own units (a
            :class:`~pspnet_lib.core.band_spec.BandSpec` or its stored dict, usually the model's
            ``PretrainedCfg.of(model).bands``): images are then read as stored (uint16, int16,
            float ..., multi-band GeoTIFFs with rasterio), their bit depth checked against the
            spec, and pixels of nodata in every band set to ``ignore_index`` in the mask. The
            transforms scale them: ``train_transforms(..., band_spec=...)``, ``eval_transforms(..., band_spec=...)``.
    """

    IGNORE_IS_CONVENTION = False

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
        ignore_colours: Sequence[Sequence[int]] | None = None,
        in_channels: int = 3,
        band_spec: BandSpec | Mapping[str, Any] | None = None,
    ) -> None:
        if val_fraction is not None and not (
            isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and 0 < val_fraction < 1
        ):  # checked even where the folder's own splits leave it unused: a wrong value is never silent
            raise ValueError(f"val_fraction must be a number in (0, 1) (CLI: --val-fraction), got {val_fraction!r}")
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
        colours, self._explicit_palette, declared = self._resolve_palette(root, palette, len(names))
        self.ignore_colours: Palette = [_rgb(c) for c in (ignore_colours or [])] + declared
        if self._explicit_palette and len(colours) >= 2 and colours == VOC_PALETTE[: len(colours)]:
            self.ignore_colours.append(VOC_VOID_COLOUR)
        self.mask_suffix = mask_suffix
        self.label_map = dict(label_map) if label_map else None

        image_folder, mask_folder, stems = images_root, masks_root, None
        if split is not None:
            split_file = next(
                (p for p in (root / "splits" / f"{split}.txt", root / f"{split}.txt") if p.is_file()), None
            )
            if split_file is not None:
                stems = [Path(line).stem for line in read_lines(split_file) if line]
                if not stems:
                    raise ValueError(f"split file {split_file} lists no images")
            elif (images_root / split).is_dir():
                image_folder, mask_folder = images_root / split, masks_root / split
                if not mask_folder.is_dir():
                    raise FileNotFoundError(
                        f"{image_folder} exists but {mask_folder} does not; masks of split {split!r} go there"
                    )
            elif val_fraction is not None and split in ("train", "val"):
                stems = self._holdout(self._pairs(images_root, masks_root), split, val_fraction, seed)
            else:
                raise FileNotFoundError(
                    f"no split {split!r} in {root}: expected {root / 'splits' / f'{split}.txt'} or {root / f'{split}.txt'} "
                    f"(image stems, one per line), or sub-folders {image_dir}/{split}/ and {mask_dir}/{split}/"
                    + (
                        "; or pass val_fraction=0.1 (CLI: --val-fraction 0.1) to hold out part of the pairs as 'val'"
                        if split in ("train", "val")
                        else ""
                    )
                    + "; or split=None for all pairs (CLI: pspnet eval --split all; pspnet train --no-val)"
                )
        pairs = self._pairs(image_folder, mask_folder)
        if stems is not None:
            unknown = [s for s in stems if s not in pairs]
            if unknown:
                raise FileNotFoundError(
                    f"split {split!r} names image(s) with no image/mask pair in {image_folder}: {_show(unknown)}"
                )
            files = [pairs[s] for s in stems]
        else:
            files = [pairs[s] for s in sorted(pairs)]
        super().__init__(files, names, colours, transforms, ignore_index, in_channels, band_spec)

    @staticmethod
    def _resolve_classes(root: Path, classes: Sequence[str] | PathLike | None) -> list[str]:
        if classes is None:
            if not (root / "classes.txt").is_file():
                raise FileNotFoundError(
                    f"no class names for {root}: write {root / 'classes.txt'} (one name per line, line i = mask value i) "
                    "or pass classes=[...] (CLI: --classes FILE|A,B,.. or, for generic names, --num-classes K)"
                )
            return read_classes_file(root / "classes.txt")
        if isinstance(classes, (str, os.PathLike)):
            return read_classes_file(classes)
        names = [str(c) for c in classes]
        if not names:
            raise ValueError("classes is empty; give at least one class name")
        return names

    @staticmethod
    def _resolve_palette(root: Path, palette: Any, num_classes: int) -> tuple[Palette, bool, Palette]:
        if palette is None and (root / "palette.txt").is_file():
            palette = root / "palette.txt"
        if palette is None:
            return _default_palette(num_classes), False, []
        declared: Palette = []
        if isinstance(palette, (str, os.PathLike)):
            colours, declared = _parse_palette_file(palette)
        else:
            colours = [_rgb(c) for c in palette]
        if len(colours) < num_classes:
            raise ValueError(
                f"the palette has {len(colours)} colours for {num_classes} classes; give one 'R G B' per class"
            )
        return colours[:num_classes], True, declared

    def _pairs(self, image_folder: Path, mask_folder: Path) -> dict[str, tuple[Path, Path]]:
        images: dict[str, Path] = {}
        duplicates = []
        for path in sorted(image_folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
                if path.stem in images:
                    duplicates.append(path)
                images[path.stem] = path
        if duplicates:
            raise ValueError(
                f"several images share a stem in {image_folder}: {_show(duplicates)}; stems must be unique"
            )
        if not images:
            subfolders = sorted(p.name for p in image_folder.iterdir() if p.is_dir())
            hint = (
                f" (it has sub-folders {', '.join(subfolders)}: pass split=... (CLI: --split / --train-split))"
                if subfolders
                else ""
            )
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
                problems.append(
                    f"{len(no_mask)} image(s) without a mask {mask_folder / ('<stem>' + self.mask_suffix + '.png')}: {_show(no_mask)}"
                )
            if no_image:
                problems.append(f"{len(no_image)} mask(s) without an image in {image_folder}: {_show(no_image)}")
            stem_suffix = _common_mask_suffix(
                [p.stem for p in no_mask], [masks[s].stem for s in masks if s not in images]
            )
            if stem_suffix:
                problems.append(
                    f"the masks seem to be named <image stem>{stem_suffix}: "
                    f"pass mask_suffix={self.mask_suffix + stem_suffix!r} "
                    f"(CLI: --mask-suffix {self.mask_suffix + stem_suffix})"
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
        lookup = {(r << 16) | (g << 8) | b: self.ignore_index for r, g, b in self.ignore_colours}
        lookup.update({(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(self.palette)})
        unique, inverse = np.unique(codes, return_inverse=True)
        unknown = [int(c) for c in unique if int(c) not in lookup]
        if unknown:
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:8])
            raise ValueError(
                f"colour mask {path} holds colour(s) {shown} that are not in the palette of {self.num_classes} classes; "
                "if they mark pixels not to score, declare them as 'R G B ignore' lines in palette.txt "
                "(or ignore_colours=[...]; CLI: --ignore-colour R,G,B)"
            )
        return np.array([lookup[int(c)] for c in unique], dtype=np.int64)[inverse].reshape(codes.shape)

    def value_hint(self, path: Path, bad_values: np.ndarray) -> str:
        hint = f"there are {self.num_classes} classes ({', '.join(self.classes[:8])}{' ...' if self.num_classes > 8 else ''}), so mask values must be 0..{self.num_classes - 1} or {self.ignore_index} (ignore)"
        first = int(bad_values[0])
        return (
            hint + "; add the missing class names (classes.txt), map the stored values to classes with "
            f"label_map={{{first}: <class>}} (CLI: --label-map {first}:<class>, or {first}:{self.ignore_index} to "
            "ignore them), or fix the masks"
        )
