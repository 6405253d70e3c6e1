"""Stored values of bands, in the file's own type: the decoding step for inputs with a band spec.

Photos are decoded into 8-bit pixels by the fixed rules of :mod:`pspnet_lib.core.decode`. Inputs
whose weights carry a band spec (``pretrained_cfg["bands"]``) are read as stored instead: uint8,
uint16, int16, int32 or float32, one band per channel, and turned into model input by
:func:`pspnet_lib.core.bands.normalise`. Pillow reads single-band 16-bit and float files,
multi-page TIFFs (one band per page) and 8-bit pictures; multi-band TIFFs (GeoTIFFs: N samples
per pixel), which Pillow cannot decode, are read with rasterio when it is installed
(``pip install "pspnet_lib[geo]"``), never a requirement of the core install.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

__all__ = ["RASTER_SUFFIXES", "band_array", "read_raster", "stored_values"]

#: Files that rasterio may read when Pillow cannot (multi-band TIFFs).
RASTER_SUFFIXES = (".tif", ".tiff")

# TIFF tags: BitsPerSample and SampleFormat (1 unsigned, 2 signed, 3 float).
_BITS, _FORMAT = 258, 339


def _band_array(image: Image.Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, k)`` stored values of one Pillow image, in the file's type."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        return array.astype(np.uint16)  # native byte order
    if image.mode == "I":  # how Pillow opens 16/32-bit integer files: the TIFF tags say which
        tags = getattr(image, "tag_v2", {})
        bits, kind = tags.get(_BITS), tags.get(_FORMAT, 1)
        bits = bits[0] if isinstance(bits, tuple) else bits
        kind = kind[0] if isinstance(kind, tuple) else kind
        if bits == 16:
            return array.astype(np.int16 if kind == 2 else np.uint16)
        return array.astype(np.int32)
    return np.array(array)


def stored_values(image: Image.Image, channels: int, what: str) -> np.ndarray:
    """``(H, W, channels)`` stored values of a picture: one band per page of a multi-page TIFF
    with ``channels`` single-band pages, else the image's own bands.

    Raises ``ValueError`` naming ``what`` when the bands do not number ``channels``.
    """
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and channels > 1:
        pages = [_band_array(frame.copy()) for frame in ImageSequence.Iterator(image)]
        if len(pages) == channels and all(p.ndim == 2 and p.shape == pages[0].shape for p in pages):
            return np.stack(pages, axis=-1)
    return band_array(_band_array(image), channels, what, image.mode, frames)


def band_array(array: np.ndarray, channels: int, what: str, mode: str, frames: int = 1) -> np.ndarray:
    """``array`` (H, W) or (H, W, C) decoded from a picture of PIL ``mode`` as (H, W, C), refused
    in one line naming ``what`` unless C == ``channels`` (the model's ``config.in_channels``)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] != channels:
        paged = f" ({frames} pages)" if frames > 1 else ""
        raise ValueError(
            f"{what} has {array.shape[-1]} band(s) (mode {mode}{paged}) but the model takes {channels} "
            f"(config.in_channels); pass {channels} bands: an (H, W, {channels}) array, a .npy file holding one, "
            f"a TIFF of {channels} bands or {channels} pages"
        )
    return array


def read_raster(path: Path, channels: int) -> np.ndarray:
    """``(H, W, channels)`` stored values of a multi-band raster read with rasterio (all bands, as stored).

    Raises ``ImportError`` with the install line when rasterio is missing, ``ValueError`` naming
    the file when it cannot be read or its bands do not number ``channels``.
    """
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    except ImportError as exc:
        raise ImportError(
            f"{path} is a multi-band TIFF that Pillow cannot decode; reading it needs rasterio: "
            'pip install "pspnet_lib[geo]" (or save the bands as an (H, W, C) .npy array)'
        ) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain TIFFs are rasters too
            with rasterio.open(path) as source:
                array = source.read()
    except RasterioIOError as exc:
        raise ValueError(f"cannot read {path} as an image or raster (rasterio: {exc})") from exc
    if array.shape[0] != channels:
        raise ValueError(
            f"{path} has {array.shape[0]} band(s) but the model takes {channels} (config.in_channels); pass a "
            f"raster of {channels} bands"
        )
    return np.ascontiguousarray(np.moveaxis(array, 0, -1))
