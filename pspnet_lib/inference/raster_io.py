"""Rasters window by window with rasterio (the optional ``[geo]`` extra): reading and writing.

:class:`RasterSource` reads windows of anything rasterio (GDAL) opens, GeoTIFF first, for a model
of ``in_channels`` channels: band selection, the nodata mask, and the pixel-value rules of
docs/inference.md (:mod:`pspnet_lib.core.images`): 8-bit as stored, 16/32-bit integers
``round(v / 257)``, floats on the 0..1 scale. :class:`RasterOutputs` writes the results as tiled,
compressed GeoTIFFs with the input's transform and CRS, whole blocks at a time, and
:func:`finish_geotiff` turns each into a Cloud-Optimized GeoTIFF (GDAL's ``COG`` driver) in a
streaming copy. Polygons: :func:`write_polygons`.

rasterio is imported when these are used, never on ``import pspnet_lib``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.band_spec import BandSpec, check_input_dtype
from ..core.bands import nodata_pixels
from ..core.decode import check_unit_range, integers_to_uint8
from .tiled import class_indices

__all__ = [
    "GEO_EXTRA",
    "import_rasterio",
    "gdal_env",
    "RasterSource",
    "RasterOutputs",
    "finish_geotiff",
    "write_polygons",
    "nodata_value",
]

logger = logging.getLogger(__name__)

GEO_EXTRA = 'pip install "pspnet_lib[geo]"'
#: GDAL's block cache during a run, in MB, unless ``GDAL_CACHEMAX`` is set in the environment (GDAL's
#: default, 5% of the RAM, would hold up to that much of the input and output: memory that grows
#: with the raster).
GDAL_CACHE_MB = 16
#: Side of the output GeoTIFFs' internal tiles (GDAL's COG default is 512; 256 is its GTiff one).
BLOCK = 256
_WIDE_INTEGERS = ("uint16", "int16", "uint32", "int32")
_FLOATS = ("float32", "float64")


def import_rasterio() -> Any:
    """The ``rasterio`` module, or one ``ImportError`` line saying how to install it."""
    try:
        import rasterio
        import rasterio.features  # noqa: F401  (submodules used below)
        import rasterio.shutil  # noqa: F401
        import rasterio.windows  # noqa: F401
    except ImportError:
        raise ImportError(f"rasters (GeoTIFF and other GDAL formats) need rasterio: {GEO_EXTRA}") from None
    return rasterio


def gdal_env(**options: Any) -> Any:
    """A ``rasterio.Env`` with a bounded block cache (:data:`GDAL_CACHE_MB`) and ``options``."""
    rasterio = import_rasterio()
    if "GDAL_CACHEMAX" not in os.environ:
        options.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    return rasterio.Env(**options)


def nodata_value(num_classes: int) -> int:
    """The mask's nodata value: 255 (the ignore index) for up to 255 classes in uint8, else 65535 in uint16."""
    return 255 if num_classes <= 255 else 65535


def _window_name(y1: int, y2: int, x1: int, x2: int) -> str:
    return f"window rows {y1}:{y2}, columns {x1}:{x2}"


class RasterSource:
    """Windows of an open raster as the model's input (see the module's docstring).

    Args:
        dataset: an open rasterio dataset (``rasterio.open(path)``, a ``WarpedVRT`` to resample or
            reproject on the fly).
        channels: the model's input channels (``PretrainedCfg.of(model).in_channels``).
        bands: 1-based band numbers to read (GDAL's numbering), default all. Their count must be
            ``channels``; for 3-channel models also 1 (repeated, as grayscale pictures) or 4 (the
            first three, as RGBA pictures).
        nodata: pixels where every selected band equals this value are nodata; default: the
            raster's own mask (its nodata value, alpha band or internal mask; rasterio's
            ``read_masks``), a pixel being nodata where every selected band is masked.
        what: how errors name the raster (its path).
        band_spec: the weights' band spec (``PretrainedCfg.bands``): windows are then the stored
            values (their bit depth checked against the spec's; the band count must be
            ``channels``), normalised by :func:`pspnet_lib.core.bands.normalise` in
            :func:`~pspnet_lib.inference.tiled.run_tiled`; pixels of the spec's nodata in every
            band are nodata too.

    Raises ``ValueError`` naming the raster and ``bands`` for a band count or dtype the model
    cannot take (before any pixel is read).
    """

    def __init__(
        self,
        dataset: Any,
        channels: int,
        *,
        bands: Sequence[int] | None = None,
        nodata: float | None = None,
        what: str = "the raster",
        band_spec: BandSpec | None = None,
    ) -> None:
        self.dataset, self.what, self.band_spec = dataset, what, band_spec
        count = int(dataset.count)
        if bands is None:
            chosen = list(range(1, count + 1))
        else:
            chosen = [int(b) for b in bands]
            bad = [b for b in chosen if not 1 <= b <= count]
            if not chosen or bad:
                raise ValueError(
                    f"{what} has bands 1..{count}; bands {list(bands)} asked for {bad or 'none'}: pick band numbers "
                    f"in 1..{count} (--bands)"
                )
        found = len(chosen)
        if found == channels or (channels == 3 and found in (1, 4) and band_spec is None):
            self.bands = chosen
        else:
            raise ValueError(
                f"{what} has {found} band(s){' selected' if bands is not None else ''} but the model takes {channels} "
                f"(config.in_channels); pick {channels} bands with bands= / --bands, e.g. --bands "
                f"{','.join(str(b) for b in range(1, min(channels, count) + 1))}"
            )
        self.expand = channels == 3 and found == 1
        self.take = 3 if channels == 3 and found == 4 else found
        dtypes = {str(dataset.dtypes[b - 1]) for b in self.bands}
        if len(dtypes) != 1:
            raise ValueError(f"{what}: the selected bands mix the types {sorted(dtypes)}; select bands of one type")
        self.dtype = dtypes.pop()
        check_input_dtype(self.dtype, band_spec, what, "pass the bands the weights were trained on (--bands)")
        if band_spec is None and self.dtype != "uint8" and self.dtype not in _WIDE_INTEGERS + _FLOATS:
            raise ValueError(
                f"{what} holds {self.dtype} pixels; the model reads uint8, 16/32-bit integers (v / 257) or floats in "
                "[0, 1] (docs/inference.md): convert it, e.g. gdal_translate -ot Byte -scale"
            )
        self.nodata = nodata
        flags = [dataset.mask_flag_enums[b - 1] for b in self.bands]
        self.masked = nodata is not None or any(
            not (len(f) == 1 and f[0].name == "all_valid") for f in flags
        )  # rasterio's MaskFlags: all_valid means no nodata, alpha or mask
        self.height, self.width = int(dataset.height), int(dataset.width)

    def read(self, y1: int, y2: int, x1: int, x2: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows ``y1:y2``, columns ``x1:x2``: pixels ``(C, h, w)`` uint8 or float32 in [0, 1], and the
        valid-pixel mask ``(h, w)`` (None when the raster has no nodata).

        Raises ``ValueError`` naming the raster and the window when GDAL cannot read it (a corrupt
        or truncated file), or when float pixels outside [0, 1] are valid data.
        """
        rasterio = import_rasterio()
        window = rasterio.windows.Window(x1, y1, x2 - x1, y2 - y1)
        try:
            data = self.dataset.read(self.bands, window=window)
            valid = None
            if self.nodata is not None:
                hit = np.isnan(data) if np.isnan(self.nodata) else data == self.nodata
                valid = ~hit.all(axis=0)
            elif self.masked:
                valid = self.dataset.read_masks(self.bands, window=window).any(axis=0)
        except rasterio.errors.RasterioError as exc:
            raise ValueError(
                f"cannot read {self.what}, {_window_name(y1, y2, x1, x2)} (a corrupt or truncated raster?): {exc}"
            ) from exc
        if self.band_spec is not None:  # stored values, scaled by the band spec where they are normalised
            missing = nodata_pixels(data, self.band_spec)
            if missing is not None:
                valid = ~missing.numpy() if valid is None else valid & ~missing.numpy()
            return data, valid
        data = data[: self.take]
        if self.dtype in _WIDE_INTEGERS:
            data = integers_to_uint8(data)
        elif self.dtype in _FLOATS:
            data = data.astype(np.float32)
            check_unit_range(
                data[:, valid] if valid is not None else data, f"{self.what} ({_window_name(y1, y2, x1, x2)})"
            )
            if valid is not None:
                data[:, ~valid] = 0  # nodata may be NaN or -9999; it never reaches the network
        if self.expand:
            data = np.repeat(data, 3, axis=0)
        return data, valid


def _stage_profile(rasterio: Any, height: int, width: int, count: int, dtype: str, crs: Any, transform: Any) -> dict:
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype=dtype,
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="deflate",
        bigtiff="IF_SAFER",
        interleave="band" if count > 1 else "pixel",
    )
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    return profile


class RasterOutputs:
    """The GeoTIFFs of one tiled run, written block row by block row as regions finish.

    ``paths`` maps ``"mask"`` (required), ``"probs"``, ``"confidence"`` to the (temporary) files
    to write: the mask as class indices with ``palette`` as its colour table, nodata
    :func:`nodata_value` where the input had none, class names in the ``CLASSES`` tag (JSON); the
    probabilities as ``K`` uint8 bands ``round(255 * p)`` (band descriptions: the class names) with
    the nodata area in an internal mask; the confidence (the largest probability) as one uint8 band
    ``round(255 * p)``, nodata 0 (a valid pixel's is at least ``255 / K``, so never 0 for K <= 255).

    Use as a context manager; :meth:`write` is a :data:`~pspnet_lib.inference.tiled.RegionWriter`.
    """

    def __init__(
        self,
        paths: dict[str, Path],
        *,
        height: int,
        width: int,
        num_classes: int,
        crs: Any,
        transform: Any,
        palette: Sequence[tuple[int, int, int]],
        classes: Sequence[str] | None,
    ) -> None:
        rasterio = import_rasterio()
        self.num_classes, self.height = num_classes, height
        self.nodata = nodata_value(num_classes)
        self.mask_dtype = "uint8" if self.nodata == 255 else "uint16"
        names = list(classes) if classes else [f"class {i}" for i in range(num_classes)]
        tags = {"CLASSES": json.dumps(names[:num_classes]), "SOFTWARE": "pspnet_lib tiled inference"}
        self._stack = contextlib.ExitStack()
        self.files: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            kinds = {"mask": (1, self.mask_dtype), "probs": (num_classes, "uint8"), "confidence": (1, "uint8")}
            for kind, path in paths.items():
                count, dtype = kinds[kind]
                profile = _stage_profile(rasterio, height, width, count, dtype, crs, transform)
                if kind == "mask":
                    profile["nodata"] = self.nodata
                elif kind == "confidence":
                    profile["nodata"] = 0
                dst = self._stack.enter_context(rasterio.open(path, "w", **profile))
                dst.update_tags(**tags)
                if kind == "mask":
                    dst.write_colormap(1, {i: (*map(int, palette[i][:3]), 255) for i in range(min(num_classes, 256))})
                    dst.set_band_description(1, "class")
                elif kind == "probs":
                    for band, name in enumerate(names[:num_classes], start=1):
                        dst.set_band_description(band, name)
                    dst.update_tags(PROBABILITY_SCALE="probability = value / 255")
                else:
                    dst.set_band_description(1, "confidence (max probability x 255)")
                self.files[kind] = dst
        self._buffer: list[tuple[int, int, int, int, dict[str, np.ndarray], np.ndarray | None]] = []

    def __enter__(self) -> RasterOutputs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the files (everything written so far is flushed by GDAL)."""
        self._stack.close()

    def write(self, y1: int, y2: int, x1: int, x2: int, logits: torch.Tensor, valid: np.ndarray | None) -> None:
        """Store a finished region (rows ``y1:y2``, columns ``x1:x2``; logits ``(K, h, w)``)."""
        arrays: dict[str, np.ndarray] = {}
        if valid is not None and not valid.any():
            arrays["mask"] = np.full((y2 - y1, x2 - x1), self.nodata, dtype=self.mask_dtype)
            zeros = np.zeros((y2 - y1, x2 - x1), dtype=np.uint8)
            if "probs" in self.files:
                arrays["probs"] = np.zeros((self.num_classes, y2 - y1, x2 - x1), dtype=np.uint8)
            if "confidence" in self.files:
                arrays["confidence"] = zeros
        else:
            mask = class_indices(logits).numpy().astype(self.mask_dtype)
            if valid is not None:
                mask[~valid] = self.nodata
            arrays["mask"] = mask
            if "probs" in self.files or "confidence" in self.files:
                probs = logits.softmax(dim=0)
                scaled = (probs * 255).round_().to(torch.uint8).numpy()
                if valid is not None:
                    scaled[:, ~valid] = 0
                if "probs" in self.files:
                    arrays["probs"] = scaled
                if "confidence" in self.files:
                    arrays["confidence"] = scaled.max(axis=0)
        self._buffer.append((y1, y2, x1, x2, arrays, valid))
        # A strip writes whole blocks of BLOCK rows (its last block reaches the raster's bottom).
        top = self._buffer[0][0]
        if y2 == self.height:
            self._flush(y2)
        elif y2 - top >= BLOCK:
            self._flush(top + (y2 - top) // BLOCK * BLOCK)

    def _flush(self, bottom: int) -> None:
        rasterio = import_rasterio()
        top, x1, x2 = self._buffer[0][0], self._buffer[0][2], self._buffer[0][3]
        keep = []
        for kind, dst in self.files.items():
            rows = np.concatenate([a[kind] for *_, a, _ in self._buffer], axis=-2)
            window = rasterio.windows.Window(x1, top, x2 - x1, bottom - top)
            part = rows[..., : bottom - top, :]
            dst.write(part if part.ndim == 3 else part[None], window=window)
            if kind == "probs" and any(v is not None for *_, v in self._buffer):
                valid = np.concatenate(
                    [v if v is not None else np.ones(a["mask"].shape, bool) for *_, a, v in self._buffer], axis=0
                )
                dst.write_mask(valid[: bottom - top].astype(np.uint8) * 255, window=window)
        last = self._buffer[-1]
        if last[1] > bottom:  # rows below the written blocks stay for the next call
            cut = bottom - last[0]
            rest = {k: v[..., cut:, :] for k, v in last[4].items()}
            keep.append((bottom, last[1], x1, x2, rest, None if last[5] is None else last[5][cut:]))
        self._buffer = keep


def finish_geotiff(stage: Path, out: Path, *, categorical: bool) -> None:
    """Copy the tiled GeoTIFF ``stage`` to ``out`` as a Cloud-Optimized GeoTIFF (overviews:
    nearest for class masks, average for probabilities); a plain copy where GDAL has no COG driver.

    The copy streams block by block (GDAL's ``COG`` driver), never holding the raster.
    """
    rasterio = import_rasterio()
    with rasterio.Env() as env:
        has_cog = "COG" in env.drivers()
    if not has_cog:
        os.replace(stage, out)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        rasterio.shutil.copy(
            stage,
            out,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=BLOCK,
            RESAMPLING="NEAREST" if categorical else "AVERAGE",
            BIGTIFF="IF_SAFER",
        )


def _blocks(height: int, width: int, side: int) -> Iterator[tuple[int, int, int, int]]:
    for y in range(0, height, side):
        for x in range(0, width, side):
            yield y, min(y + side, height), x, min(x + side, width)


def write_polygons(mask_path: Path, out: Path, classes: Sequence[str] | None, *, block: int = 2048) -> int:
    """The mask GeoTIFF ``mask_path`` as GeoJSON polygons, one feature per connected area of a class.

    A streaming second pass: the mask is read ``block`` x ``block`` pixels at a time, each block
    vectorised with ``rasterio.features.shapes`` (4-connected) and its features appended to ``out``,
    so an area that spans blocks is cut at their edges (dissolve by ``class`` in a GIS to merge).
    Coordinates are in the raster's CRS (named in the file's ``crs`` member when it has an EPSG
    code); nodata areas get no polygon. Properties: ``class`` (index) and ``name``.
    Returns the number of features written.
    """
    rasterio = import_rasterio()
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src_ctx = rasterio.open(mask_path)
    with src_ctx as src, open(out, "w", encoding="utf-8") as f:
        header: dict[str, Any] = {"type": "FeatureCollection"}
        epsg = src.crs.to_epsg() if src.crs is not None else None
        if epsg is not None:
            header["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}
        elif src.crs is not None:
            logger.warning("%s: the CRS has no EPSG code; the polygons' file names none (coordinates are in it)", out)
        f.write(json.dumps(header)[:-1] + ', "features": [\n')
        nodata = src.nodata
        for y1, y2, x1, x2 in _blocks(src.height, src.width, block):
            window = rasterio.windows.Window(x1, y1, x2 - x1, y2 - y1)
            data = src.read(1, window=window)
            valid = data != nodata if nodata is not None else None
            transform = src.window_transform(window)
            for geometry, value in rasterio.features.shapes(data, mask=valid, transform=transform):
                index = int(value)
                name = classes[index] if classes and index < len(classes) else f"class {index}"
                feature = {"type": "Feature", "properties": {"class": index, "name": name}, "geometry": geometry}
                f.write(("" if count == 0 else ",\n") + json.dumps(feature))
                count += 1
        f.write("\n]}\n")
    return count
