"""``predict_raster``: a raster or a large picture, file to file, with memory independent of its size.

    from pspnet_lib import load_pretrained
    from pspnet_lib.inference.rasters import predict_raster
    model = load_pretrained("pspnet_r50-d8_potsdam-512x512-80k")
    predict_raster(model, "scene.tif", "scene_labels.tif", confidence=True, polygons=True)

Rasters (GeoTIFF and anything rasterio opens; the ``[geo]`` extra) are read window by window
(:mod:`pspnet_lib.inference.raster_io`); large pictures (PNG, JPEG, ...) are decoded whole by
Pillow, whose decompression-bomb guard stays on unless ``max_image_pixels`` raises it. Either way
the model runs on batches of sliding windows (:mod:`pspnet_lib.inference.tiled`) and the results
are written as they finish: a ``.tif`` output is a Cloud-Optimized GeoTIFF with the input's
transform and CRS, a ``.png`` one the paletted mask ``pspnet predict`` writes.
docs/rasters.md describes the outputs, the blends and how to resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .._files import atomic_output, check_outputs_spare_inputs, ensure_dir
from ..core.band_spec import BandSpec
from ..core.images import read_image
from ..core.palette import padded_palette
from ..core.pretrained_cfg import PretrainedCfg
from .raster_io import RasterOutputs, RasterSource, finish_geotiff, gdal_env, import_rasterio, write_polygons
from .tiled import class_indices, count_classes, resolve_tiling, run_tiled
from .visualize import colorize

__all__ = [
    "predict_raster",
    "RasterResult",
    "raster_outputs",
    "needs_tiling",
    "PICTURE_SUFFIXES",
    "RASTER_SUFFIXES",
    "TILED_PIXELS",
]

logger = logging.getLogger(__name__)

#: Inputs decoded whole by Pillow (or NumPy); every other file is opened with rasterio (GDAL).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".npy")
#: Pictures with more pixels than this (8,192 x 8,192) take the tiled path in ``pspnet predict``:
#: in-memory ``predict`` would hold ``4 * K`` bytes of logits per pixel (5.6 GB for 21 classes).
TILED_PIXELS = 8192 * 8192
#: Output suffixes written as GeoTIFF.
RASTER_SUFFIXES = (".tif", ".tiff")


@dataclass
class RasterResult:
    """What :func:`predict_raster` wrote.

    Attributes:
        outputs: ``{"mask": path, "probs": ..., "confidence": ..., "polygons": ...}`` (those asked for).
        height, width: the input's size in pixels.
        crop, stride: the windows used ``(h, w)``.
        windows: windows the model ran (all-nodata windows are skipped).
        polygons: features written to the polygons file (0 when none was asked for).
        seconds: wall time of the whole call.
    """

    outputs: dict[str, Path]
    height: int
    width: int
    crop: tuple[int, int]
    stride: tuple[int, int]
    windows: int
    polygons: int = 0
    seconds: float = 0.0
    crs: str | None = field(default=None)


def raster_outputs(
    out: str | os.PathLike, *, probs: bool = False, confidence: bool = False, polygons: bool = False
) -> dict[str, Path]:
    """The files :func:`predict_raster` writes for ``out``: the mask at ``out``, then
    ``<stem>_probs.tif``, ``<stem>_confidence.tif``, ``<stem>_polygons.geojson`` beside it.

    Raises ``ValueError`` unless ``out`` ends in ``.tif``/``.tiff`` (GeoTIFF) or ``.png``.
    """
    out = Path(out)
    if out.suffix.lower() not in (*RASTER_SUFFIXES, ".png"):
        raise ValueError(
            f"cannot write the mask as {out}: the output must end in .tif (a GeoTIFF) or .png (a paletted PNG)"
        )
    paths = {"mask": out}
    for kind, wanted, name in (
        ("probs", probs, "_probs.tif"),
        ("confidence", confidence, "_confidence.tif"),
        ("polygons", polygons, "_polygons.geojson"),
    ):
        if wanted:
            paths[kind] = out.with_name(out.stem + name)
    return paths


def needs_tiling(path: str | os.PathLike, *, max_pixels: int = TILED_PIXELS) -> bool:
    """Whether a file should be segmented by :func:`predict_raster` rather than in memory: a raster
    with a coordinate reference system or geotransform (when rasterio is installed), or a picture
    of more than ``max_pixels`` pixels (read from its header; nothing is decoded).

    A file that cannot be opened gives False (the in-memory path reports it).
    """
    path = Path(path)
    try:
        rasterio = import_rasterio()
    except ImportError:
        rasterio = None
    if rasterio is not None and path.suffix.lower() != ".npy":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with gdal_env(), rasterio.open(path) as dataset:
                    georeferenced = dataset.crs is not None or not dataset.transform.is_identity
                    return georeferenced or dataset.width * dataset.height > max_pixels
        except (rasterio.errors.RasterioError, OSError):
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.width * image.height > max_pixels
    except Image.DecompressionBombError:
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def _check_writable(folder: Path, flag: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".pspnet-write-check.", dir=folder)
    except OSError as exc:
        raise PermissionError(
            f"cannot write in {folder} ({exc.strerror or exc}); choose a writable folder for {flag}"
        ) from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def _pillow_limit(max_image_pixels: int | None) -> Iterator[None]:
    if max_image_pixels is None:
        yield
        return
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be a positive integer, got {max_image_pixels!r}")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_image_pixels  # Pillow's guard is process-wide; restored below
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _read_picture(
    path: Path, channels: int, max_image_pixels: int | None, band_spec: BandSpec | None = None
) -> np.ndarray:
    with _pillow_limit(max_image_pixels), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refuse, not warn
        try:
            return read_image(path, channels, band_spec=band_spec)
        except Image.DecompressionBombWarning as exc:
            cause: BaseException | None = exc
        except ValueError as exc:
            if not isinstance(exc.__cause__, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
                raise
            cause = exc.__cause__
    raise ValueError(
        f"{path} has more pixels than Pillow's decompression-bomb guard allows ({Image.MAX_IMAGE_PIXELS:,}: {cause}); "
        "if you trust the file, raise the limit with max_image_pixels= (--max-image-pixels N), or convert it to a "
        "tiled GeoTIFF, which is read window by window"
    ) from None


def predict_raster(
    model: nn.Module,
    source: str | os.PathLike | Any,
    out: str | os.PathLike,
    *,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    blend: str = "mean",
    batch_size: int = 4,
    probs: bool = False,
    confidence: bool = False,
    polygons: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    strip_width: int | None = None,
    max_image_pixels: int | None = None,
    progress: bool | None = None,
    staged: Mapping[str, Path] | None = None,
) -> RasterResult:
    """Segment a raster or picture of any size into files, holding only a band of windows.

    Args:
        model: any segmentation module :func:`~pspnet_lib.predict` takes (a PSPNet, one from
            :func:`~pspnet_lib.optimize_for_inference`, an int8 model); its ``pretrained_cfg``
            gives mean/std, classes, palette and the window (:func:`~pspnet_lib.inference.tiled.resolve_tiling`).
        source: a raster path (GeoTIFF, or any format GDAL reads), an open rasterio dataset (e.g.
            a ``WarpedVRT`` to resample), or a picture path (``.png``, ``.jpg``, ...: decoded whole).
        out: the mask file: ``.tif``/``.tiff`` (Cloud-Optimized GeoTIFF with the input's transform
            and CRS, the palette as colour table, class names in the ``CLASSES`` tag, nodata 255)
            or ``.png`` (the paletted PNG of ``pspnet predict``; the mask is then held in memory,
            one byte per pixel).
        bands, nodata: which bands to read (1-based) and the input's nodata value (default: the
            raster's own nodata/alpha/mask); see :class:`~pspnet_lib.inference.raster_io.RasterSource`.
        crop, stride: window size and step in pixels (int or ``(h, w)``; default: the weights').
        blend: ``"mean"`` (the ``slide`` result) or ``"hann"`` (smooth, hides seams).
        batch_size: windows per forward pass.
        probs, confidence, polygons: also write ``<stem>_probs.tif`` (K uint8 bands,
            ``round(255 * p)``), ``<stem>_confidence.tif`` (max probability, same scale) and
            ``<stem>_polygons.geojson`` (the mask's areas as polygons in the raster's CRS).
        overwrite: replace existing outputs (an input is never replaced).
        device, amp_dtype: where to run the model, and an autocast dtype.
        strip_width: columns per strip (see :mod:`pspnet_lib.inference.tiled`).
        max_image_pixels: raise Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
            89.5 MP) to this many pixels for this picture; rasters read by GDAL have no such limit.
        progress: a bar counting windows (None: on terminals only).
        staged: write each output (kind -> path, the kinds :func:`raster_outputs` gives for
            ``out``) to this path as it is, for a caller that renames its files into place itself
            (:func:`~pspnet_lib.inference.batch.predict_files`); ``out`` still names the outputs.

    Every file is written under a temporary name in its folder and renamed when complete: a run
    killed half-way leaves no file under an output's name (only hidden ``.<name>.*.tmp*`` files,
    safe to delete); run it again to redo it.

    Raises (before any window runs): ``ValueError`` for a bad output suffix, an output that is the
    input, a band count or dtype the model cannot take, a crop larger than the input, a stride
    outside ``[1, crop]``, a picture over Pillow's limit; ``FileExistsError`` for existing outputs
    without ``overwrite``; ``PermissionError`` for a folder that cannot be written;
    ``FileNotFoundError``; ``ImportError`` naming ``pip install "pspnet_lib[geo]"`` when a raster
    needs rasterio. While running: ``ValueError`` naming the file and window that could not be read.
    """
    started = time.perf_counter()
    outputs = raster_outputs(out, probs=probs, confidence=confidence, polygons=polygons)
    if staged is not None and set(staged) != set(outputs):
        raise ValueError(f"staged names the outputs {sorted(staged)}, but {out} gives {sorted(outputs)}")
    is_dataset = hasattr(source, "read_masks")
    path = None if is_dataset else Path(source)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"input not found: {path}")
        check_outputs_spare_inputs(outputs.values(), [path], advice="choose another output path (--out)")
    geotiff = outputs["mask"].suffix.lower() in RASTER_SUFFIXES
    picture = path is not None and path.suffix.lower() in PICTURE_SUFFIXES
    needs_rasterio = geotiff or len(outputs) > 1 or not picture
    if needs_rasterio:
        import_rasterio()  # one clear line now rather than after the model is set up
    if not overwrite:
        existing = [str(p) for p in outputs.values() if p.exists()]
        if existing:
            raise FileExistsError(
                f"output file(s) already exist: {', '.join(existing)}; pass overwrite=True (--overwrite) to replace them"
            )
    for folder in {p.parent for p in outputs.values()}:
        _check_writable(ensure_dir(folder), "--out")
    if device is not None:
        model.to(device)
    cfg = PretrainedCfg.of(model)
    with contextlib.ExitStack() as stack:
        if needs_rasterio:
            stack.enter_context(gdal_env())
        if picture:
            assert path is not None
            if bands is not None or nodata is not None:
                raise ValueError(f"{path} is a picture: bands= / nodata= (--bands/--nodata) apply to rasters only")
            array = _read_picture(path, cfg.in_channels, max_image_pixels, cfg.bands)  # (H, W, C)
            height, width = array.shape[:2]
            crs = transform = None

            def pixels(y1: int, y2: int, x1: int, x2: int) -> tuple[np.ndarray, np.ndarray | None]:
                return np.ascontiguousarray(array[y1:y2, x1:x2].transpose(2, 0, 1)), None

            name = str(path)
        else:
            dataset: Any = source if path is None else _open_raster(path, stack)
            name = str(path) if path is not None else str(getattr(dataset, "name", "the raster"))
            reader = RasterSource(dataset, cfg.in_channels, bands=bands, nodata=nodata, what=name, band_spec=cfg.bands)
            height, width, pixels = reader.height, reader.width, reader.read
            crs, transform = dataset.crs, dataset.transform
            if crs is None:
                logger.warning("%s has no coordinate reference system; the outputs are written without one", name)
        crop_hw, stride_hw = resolve_tiling(model, crop, stride, size=(height, width))
        first = (min(crop_hw[0], height), min(crop_hw[1], width))
        num_classes = count_classes(model, pixels, first, mean=cfg.mean, std=cfg.std, band_spec=cfg.bands)
        palette = padded_palette(cfg.palette, num_classes)
        temporary = (
            dict(staged)
            if staged is not None
            else {kind: stack.enter_context(atomic_output(p)) for kind, p in outputs.items()}
        )
        stages = {kind: t.with_name(t.name + ".stage.tif") for kind, t in temporary.items() if kind != "polygons"}
        for stage in stages.values():
            stack.callback(stage.unlink, missing_ok=True)
        png = None if geotiff else np.full((height, width), 255, dtype=np.uint8)
        files = {k: s for k, s in stages.items() if not (k == "mask" and png is not None)}
        writers = (
            stack.enter_context(
                RasterOutputs(
                    files,
                    height=height,
                    width=width,
                    num_classes=num_classes,
                    crs=crs,
                    transform=transform,
                    palette=palette,
                    classes=cfg.classes,
                )
            )
            if files
            else None
        )

        def write(y1: int, y2: int, x1: int, x2: int, logits: torch.Tensor, valid: np.ndarray | None) -> None:
            if writers is not None:
                writers.write(y1, y2, x1, x2, logits, valid)
            if png is not None and (valid is None or valid.any()):
                block = class_indices(logits).numpy().astype(np.uint8)
                if valid is not None:
                    block[~valid] = 255
                png[y1:y2, x1:x2] = block

        windows = run_tiled(
            model,
            height,
            width,
            pixels,
            write,
            crop=crop_hw,
            stride=stride_hw,
            num_classes=num_classes,
            mean=cfg.mean,
            std=cfg.std,
            band_spec=cfg.bands,
            blend=blend,
            batch_size=batch_size,
            strip_width=strip_width,
            amp_dtype=amp_dtype,
            progress=progress,
            desc=f"{Path(name).name}",
            scratch_dir=outputs["mask"].parent,
        )
        if writers is not None:
            writers.close()
        for kind, stage in stages.items():
            if kind == "mask" and png is not None:
                colorize(png, palette).save(temporary[kind], format="PNG")
            else:
                finish_geotiff(stage, temporary[kind], categorical=kind == "mask")
        features = 0
        if polygons:
            mask_file = temporary["mask"] if geotiff else stages["mask"]
            if not geotiff:  # vectorise from a GeoTIFF copy of the PNG mask (no CRS: pixel coordinates)
                _write_plain_mask(png, mask_file, crs, transform)
            features = write_polygons(mask_file, temporary["polygons"], cfg.classes)
    return RasterResult(
        outputs=outputs,
        height=height,
        width=width,
        crop=crop_hw,
        stride=stride_hw,
        windows=windows,
        polygons=features,
        seconds=time.perf_counter() - started,
        crs=None if crs is None else str(crs),
    )


def _open_raster(path: Path, stack: contextlib.ExitStack) -> Any:
    rasterio = import_rasterio()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return stack.enter_context(rasterio.open(path))
    except rasterio.errors.RasterioError as exc:
        raise ValueError(f"cannot open {path} as a raster (a corrupt or truncated file?): {exc}") from None


def _write_plain_mask(mask: np.ndarray | None, path: Path, crs: Any, transform: Any) -> None:
    rasterio = import_rasterio()
    assert mask is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        profile = dict(driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=1, dtype="uint8", nodata=255)
        if crs is not None:
            profile.update(crs=crs, transform=transform)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(mask[None])
