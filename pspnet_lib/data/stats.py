"""Per-band statistics of a dataset or a folder: what a band spec's ``mean``/``std`` should be.

``compute_stats`` reads every image once (streaming: one image in memory at a time) and gives, per
band, the mean and standard deviation in the band spec's units (``stored * scale + offset``;
pictures without a spec on the 0..1 scale, as ``pretrained_cfg``'s mean/std), the minimum and
maximum stored value and the fraction of nodata values. Means and variances of the images are
merged by Chan, Golub and LeVeque's pairwise rule ("Updating formulae and a pairwise algorithm for
computing sample variances", 1979) in float64, so the result equals NumPy's ``mean``/``std``
(``ddof=0``) over all valid values of the folder to rounding. ``pspnet stats`` is the command.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._progress import progress_bar
from ..core.band_spec import BandSpec
from ..core.bands import band_nodata
from ..core.images import IMAGE_EXTENSIONS, read_stored, to_image_tensor

__all__ = ["BandStats", "compute_stats", "image_files"]


@dataclass(frozen=True)
class BandStats:
    """What :func:`compute_stats` found, one value per band.

    Attributes:
        mean, std: over the valid values, in the spec's units (pictures: 0..1), ``ddof=0``.
        min, max: the smallest and largest valid stored value (nan for a band without any).
        nodata_fraction: the fraction of the band's values equal to its nodata value.
        pixels: valid values per band; images: images read.
        band_spec: the spec the values were read with (None: pictures).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    nodata_fraction: tuple[float, ...]
    pixels: tuple[int, ...]
    images: int
    band_spec: BandSpec | None = None

    def band_settings(self) -> dict[str, Any]:
        """The band settings file's content (``pspnet train --band-spec``, :func:`~pspnet_lib.core.bands.band_settings`):
        ``bands`` (the spec), ``mean``, ``std`` (rounded to 6 significant digits) and, for reading
        only, ``stats`` (min, max, nodata fraction, pixels, images)."""
        out: dict[str, Any] = {"bands": self.band_spec.to_dict()} if self.band_spec is not None else {}
        out["mean"] = [float(f"{v:.6g}") for v in self.mean]
        out["std"] = [float(f"{v:.6g}") for v in self.std]
        out["stats"] = {
            "min": list(self.min),
            "max": list(self.max),
            "nodata_fraction": list(self.nodata_fraction),
            "pixels": list(self.pixels),
            "images": self.images,
        }
        return out


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder (``folder/images/`` when it is a folder dataset), sorted, by suffix.

    Raises ``FileNotFoundError`` (not a folder) or ``ValueError`` (no images).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    if (folder / "images").is_dir():
        folder = folder / "images"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def compute_stats(
    source: Any,
    *,
    band_spec: BandSpec | Mapping[str, Any] | None = None,
    in_channels: int | None = None,
    progress: bool | None = None,
) -> BandStats:
    """Per-band mean/std (after scaling), min/max (stored) and nodata fraction, in one streaming pass.

    Args:
        source: a dataset (a :class:`~pspnet_lib.data.datasets.base.SegmentationDataset`: its
            untransformed images, read with its ``bands`` and ``in_channels``; any other: its items,
            ``(image, mask)`` or images ``(C, H, W)`` of stored values), a folder (its images, or
            those of ``images/``) or a list of image files.
        band_spec: the band spec to read files with (default: the dataset's; None: pictures by the
            photo rules, 0..1). A dict of spec entries without ``dtype`` (e.g. ``{"scale": 1e-4,
            "nodata": 0}``, or ``{}``) takes the stored type of the first file; ``{}`` on 8-bit
            pictures means the photo rules.
        in_channels: bands per image for files (default: the spec's, else 3).
        progress: a tqdm bar: None = on a terminal only, True = always, False = never.

    Raises ``ValueError``/``FileNotFoundError`` naming an unreadable file or a band count that
    differs between images (as the readers do), ``ValueError`` when there is no image.
    """
    load = getattr(source, "load", None)
    if band_spec is None and callable(load):
        band_spec = getattr(source, "band_spec", None)
    channels = in_channels or (
        band_spec.bands if isinstance(band_spec, BandSpec) else getattr(source, "in_channels", None) or 3
    )
    if isinstance(source, (str, os.PathLike)):
        source = image_files(source)
    count = len(source)
    if not count:
        raise ValueError("no images to compute statistics of")
    if isinstance(band_spec, Mapping):  # the spec's entries given, the type found in the data
        entries = dict(band_spec)
        if "dtype" not in entries:
            first = source[0]
            entries["dtype"] = str(
                read_stored(first, channels).dtype
                if isinstance(first, (str, os.PathLike))
                else torch.as_tensor(first).dtype
            ).replace("torch.", "")
        band_spec = (
            None if entries == {"dtype": "uint8"} else BandSpec.from_dict(entries, channels, what="the band spec")
        )

    def image(index: int) -> torch.Tensor:
        if callable(load):
            return load(index)[0].as_subclass(torch.Tensor)
        item = source[index]
        if isinstance(item, (str, os.PathLike)):
            return to_image_tensor(item, channels, band_spec=band_spec)
        item = item[0] if isinstance(item, (tuple, list)) else item
        return to_image_tensor(item, channels, band_spec=band_spec, what=f"item {index}")

    n = torch.zeros(channels, dtype=torch.float64)
    mean = torch.zeros(channels, dtype=torch.float64)
    m2 = torch.zeros(channels, dtype=torch.float64)
    low = torch.full((channels,), math.inf, dtype=torch.float64)
    high = torch.full((channels,), -math.inf, dtype=torch.float64)
    missing = torch.zeros(channels, dtype=torch.float64)
    total = 0
    with progress_bar(range(count), desc="stats", unit="image", progress=progress) as bar:
        for index in bar:
            values = image(index)
            if values.shape[0] != channels:
                raise ValueError(f"image {index} has {values.shape[0]} band(s); the others have {channels}")
            stored = values.double().reshape(channels, -1)
            hits = band_nodata(values, band_spec)
            valid = ~hits.reshape(channels, -1) if hits is not None else torch.ones_like(stored, dtype=torch.bool)
            scaled = _scaled(values, band_spec).reshape(channels, -1)
            total += stored.shape[1]
            missing += (~valid).sum(dim=1).double()
            for c in range(channels):
                v = scaled[c][valid[c]]
                if not v.numel():
                    continue
                nb, mb = float(v.numel()), v.mean()
                delta = mb - mean[c]
                both = n[c] + nb
                mean[c] += delta * nb / both
                m2[c] += ((v - mb) ** 2).sum() + delta**2 * n[c] * nb / both
                n[c] = both
                kept = stored[c][valid[c]]
                low[c], high[c] = min(low[c], kept.min()), max(high[c], kept.max())
    std = (m2 / n.clamp_min(1)).sqrt()
    none = n == 0
    nan = torch.full_like(mean, math.nan)
    return BandStats(
        mean=_floats(torch.where(none, nan, mean)),
        std=_floats(torch.where(none, nan, std)),
        min=_floats(torch.where(none, nan, low)),
        max=_floats(torch.where(none, nan, high)),
        nodata_fraction=_floats(missing / max(total, 1)),
        pixels=tuple(int(v) for v in n.tolist()),
        images=count,
        band_spec=band_spec,
    )


def _scaled(values: torch.Tensor, band_spec: BandSpec | None) -> torch.Tensor:
    """Stored values ``(C, H, W)`` in float64 in the units of the statistics: the spec's, or the
    photo rule's 0..1 (uint8 / 255; floats are on that scale already)."""
    if band_spec is None:
        return values.double() / 255.0 if values.dtype == torch.uint8 else values.double()
    scale = torch.tensor(band_spec.scale, dtype=torch.float64).view(-1, 1, 1)
    offset = torch.tensor(band_spec.offset, dtype=torch.float64).view(-1, 1, 1)
    return values.double() * scale + offset


def _floats(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in values.tolist())
