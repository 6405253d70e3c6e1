"""The decoding step of the picture and mask reader: a file's bytes become pixel arrays.

:mod:`pspnet_lib.core.images` is the one entry point that reads pictures and masks for every
path of the package (datasets, ``predict``, calibration, ``verify``) and holds the reading rules
(EXIF orientation, how a picture pairs with its mask, channel counts). This module is the step
under it: a file opened with Pillow, decoded, and turned into arrays by the fixed pixel-value rules
(8-bit as stored, 16-bit ``round(v / 257)``, float on the 0..1 scale: see :mod:`.images`). It is kept
apart so that a decoder can be swapped in (e.g. torchvision.io for 8-bit JPEG/PNG) or a rule added
(radiometric units of multi-band rasters) without touching the reading rules.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, ImageSequence

__all__ = [
    "SIXTEEN_BIT",
    "MASK_MODES",
    "decode_bytes",
    "decode_file",
    "exif_orientation",
    "mask_values",
    "oriented",
    "upright_size",
    "pil_to_array",
    "pil_to_rgb",
    "to_eight_bit",
    "integers_to_uint8",
    "check_unit_range",
]

_T = TypeVar("_T")

#: Pillow modes of 16-bit (and 32-bit integer) single-band pictures.
SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
#: Pillow modes a mask may have: class indices, single-channel or paletted.
MASK_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")
#: EXIF orientations that turn a picture by 90 or 270 degrees (width and height swap).
_TRANSPOSING = (5, 6, 7, 8)


def decode_file(path: Path, convert: Callable[[Image.Image], _T], kind: str = "image") -> _T:
    """``convert`` applied to the decoded picture at ``path``.

    Raises ``FileNotFoundError`` ("<kind> file not found: <path>") for a missing file and one
    ``ValueError`` naming the file when it cannot be decoded ("cannot read <path> as a(n) <kind>").
    """
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    return _decoded(path, str(path), convert, kind)


def decode_bytes(data: bytes, convert: Callable[[Image.Image], _T], what: str, kind: str = "image") -> _T:
    """:func:`decode_file` for a file's content already in memory (a column of encoded pictures in
    Ray, Spark or Arrow); errors name ``what`` instead of a path."""
    return _decoded(io.BytesIO(data), what, convert, kind)


def _decoded(source: Path | io.BytesIO, what: str, convert: Callable[[Image.Image], _T], kind: str) -> _T:
    try:
        with Image.open(source) as image:
            image.load()
            return convert(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ValueError) and what in str(exc):
            raise
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ValueError(f"cannot read {what} as {article} {kind} ({type(exc).__name__}: {exc})") from exc


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (0x0112) of a picture: 1 (as stored) .. 8; 1 when there is none."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: viewers show such pictures as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF Orientation says (what viewers and labelling tools show)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """``(height, width)`` of ``image`` once its EXIF orientation is applied."""
    if exif_orientation(image) in _TRANSPOSING:
        return image.width, image.height
    return image.height, image.width


def mask_values(image: Image.Image, what: str) -> np.ndarray:
    """The stored values of a mask: ``(H, W)`` for index masks, ``(H, W, 3)`` for colour masks.

    Grey + alpha (image editors' transparent layers) keeps the grey band when the alpha is opaque
    everywhere; an RGB(A) mask whose three bands are equal everywhere is a grey mask saved as
    colour and gives ``(H, W)``. Raises ``ValueError`` naming ``what`` for other modes (CMYK,
    float, ...) and for a grey + alpha mask with pixels that are not opaque (a second channel that
    means something, silently dropped otherwise).
    """
    if image.mode in ("LA", "La"):
        array = np.asarray(image.convert("LA") if image.mode == "La" else image)
        transparent = int((array[..., 1] != 255).sum())
        if transparent:
            raise ValueError(
                f"mask {what} has 2 channels (grey + alpha) and {transparent} of its pixels are not opaque; masks "
                "hold one class index per pixel: save the labels as a single-channel (grey or paletted) PNG, with "
                "255 where pixels are not to be scored"
            )
        return array[..., 0]
    if image.mode in ("RGB", "RGBA"):
        array = np.asarray(image.convert("RGB"))
        if (array == array[..., :1]).all():  # a grey mask saved as RGB
            return array[..., 0]
        return array
    if image.mode not in MASK_MODES:
        raise ValueError(
            f"mask {what} has PIL mode {image.mode!r}; masks must be single-channel or paletted images "
            "holding class indices (pixel value = class index), e.g. saved as 8-bit grey PNG"
        )
    return np.asarray(image)


def to_eight_bit(image: Image.Image, what: str) -> Image.Image:
    """A single-band 16-bit or float PIL image as ``L`` by the fixed rules (other modes unchanged)."""
    if image.mode in SIXTEEN_BIT:
        return Image.fromarray(integers_to_uint8(np.asarray(image)), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        check_unit_range(array, what)
        return Image.fromarray((array * 255.0).round().astype(np.uint8), mode="L")
    return image


def integers_to_uint8(array: np.ndarray) -> np.ndarray:
    """Integer pixels wider than 8 bits (16-bit, 32-bit) as uint8 by the fixed rule ``round(v / 257)``.

    0..65535 maps onto 0..255 whatever the content; values beyond 65535 clip to 255, below 0 to 0
    (the rule of docs/inference.md, for Pillow's ``I;16*``/``I`` pictures and for raster bands).
    """
    return (np.asarray(array, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)


def check_unit_range(array: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless every value of the float ``array`` is finite and in [0, 1]."""
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        raise ValueError(
            f"{what} holds floating-point pixels in [{lo:.4g}, {hi:.4g}]; floating-point images are read on the "
            "0..1 scale (1.0 = white). Save it as 8-bit/16-bit integers or scale its values to [0, 1]"
        )


def pil_to_rgb(image: Image.Image, *, what: str = "the image") -> Image.Image:
    """An RGB version of any PIL image: grayscale repeated, alpha dropped, palettes applied.

    16-bit grayscale (``I;16*``, ``I``) is mapped to 8 bits by one fixed scale (``/ 257``) and
    float images (``F``) are read on the 0..1 scale (``ValueError`` for values outside it), so a
    pixel's 8-bit value depends only on its stored value and the file's type; ``convert("RGB")``
    alone would clip everything above 255 to white.
    """
    if image.mode == "RGB":
        return image
    return to_eight_bit(image, what).convert("RGB")


def pil_to_array(image: Image.Image, channels: int = 3, *, what: str = "the image") -> np.ndarray:
    """``(H, W, channels)`` uint8 array of a PIL image for a model of ``channels`` input channels.

    3: :func:`pil_to_rgb`. 1: grayscale as stored (8-bit by the fixed rules), colour converted to
    luma (ITU-R 601-2), alpha dropped. N: a multi-page image (TIFF) with N single-band pages gives
    one channel per page; otherwise the image's own bands (RGBA, CMYK: 4; RGB: 3) must number N.

    Raises ``ValueError`` naming ``what`` when the channels cannot be made to match.
    """
    if channels == 3:
        return np.array(pil_to_rgb(image, what=what))
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and channels > 1:
        pages = [_single_band(frame.copy(), what) for frame in ImageSequence.Iterator(image)]
        bands = [p for p in pages if p is not None]
        if len(pages) == channels and len(bands) == len(pages) and len({b.shape for b in bands}) == 1:
            return np.stack(bands, axis=-1)
    if channels == 1:
        image = to_eight_bit(image, what)  # 16-bit / float grey -> L by the fixed rules
        return np.array(image if image.mode == "L" else image.convert("L"))[..., None]
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    image = to_eight_bit(image, what)
    array = np.array(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] != channels:
        page_count = f" ({frames} pages)" if frames > 1 else ""
        raise ValueError(
            f"{what} has {array.shape[-1]} channel(s) (mode {image.mode}{page_count}) but the model takes {channels} "
            f"(config.in_channels); pass an image with {channels} bands: an (H, W, {channels}) array, a .npy file "
            f"holding one, or a multi-page TIFF of {channels} pages"
        )
    return array


def _single_band(frame: Image.Image, what: str) -> np.ndarray | None:
    frame = to_eight_bit(frame, what)
    return np.array(frame) if frame.mode == "L" else None
