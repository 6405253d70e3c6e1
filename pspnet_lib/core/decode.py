"""The decoding step of the picture and mask reader: a file's bytes become pixel arrays.

:mod:`pspnet_lib.core.images` is the one entry point that reads pictures and masks for every
path of the package (datasets, ``predict``, calibration, ``verify``) and holds the reading rules
(EXIF orientation, how a picture pairs with its mask, channel counts). This module is the step
under it: a file opened with Pillow, decoded, and turned into arrays by the fixed pixel-value rules
(8-bit as stored, 16-bit ``round(v / 257)``, float on the 0..1 scale: see :mod:`.images`). It is kept
apart so that a decoder can be swapped in or a rule added without touching the reading rules.

Two decoders share the work. Pillow opens every file (lazily: header, mode, size and EXIF without
the pixels) and decodes what only it reads identically (TIFF, 16-bit and float files, palettes
with fewer than 8 bits, CMYK, multi-page and interlaced files). The 8-bit JPEG (RGB, grey) and
PNG (RGB, RGBA, grey, grey + alpha, paletted) pictures are decoded by
:func:`torchvision.io.decode_image` instead (:func:`decoded_rgb`), which gives the same pixels as
Pillow's ``convert("RGB")`` (tested on every such kind) in less time (``benchmarks/data_pipeline.py``).
EXIF orientation stays Pillow's reading of the tag, applied by :func:`orient_array` exactly as
:func:`PIL.ImageOps.exif_transpose` turns pixels. Masks: 8-bit grey PNGs are decoded by
torchvision.io too (:func:`decoded_grey`); paletted ones stay with Pillow, whose decoding of them
measured as fast as or faster than torchvision's. ``PSPNET_IMAGE_DECODER=pillow`` in
the environment makes Pillow decode everything (e.g. to compare, or with a torchvision built
without its image extension, where the fallback is automatic anyway).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

from .stored import band_array

__all__ = [
    "QUARTER_TURNS",
    "SIXTEEN_BIT",
    "MASK_MODES",
    "decode_bytes",
    "decode_file",
    "decoded_grey",
    "decoded_rgb",
    "exif_orientation",
    "orient_array",
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
QUARTER_TURNS = (5, 6, 7, 8)


def decode_file(path: Path, convert: Callable[[Image.Image], _T], kind: str = "image") -> _T:
    """``convert`` applied to the decoded picture at ``path``.

    Raises ``FileNotFoundError`` ("<kind> file not found: <path>") for a missing file and one
    ``ValueError`` naming the file when it cannot be decoded ("cannot read <path> as a(n) <kind>").

    The picture is opened lazily (header, mode, size, EXIF): ``convert`` decodes the pixels, with
    Pillow or with :func:`decoded_rgb`.
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
            return convert(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ValueError) and what in str(exc):
            raise
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ValueError(f"cannot read {what} as {article} {kind} ({type(exc).__name__}: {exc})") from exc


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (0x0112) of a picture: 1 (as stored) .. 8; 1 when there is none.

    Pillow's reading of the tag (EXIF, and XMP's ``tiff:Orientation``). For a lazily opened PNG
    whose metadata all precedes its pixels (the usual layout), the tag is read without decoding
    the pixels, which Pillow would otherwise do to look for metadata after them.
    """
    try:
        if _png_metadata_in_header(image):
            exif = Image.Image.getexif(image)  # the header's metadata is all there is
        else:
            exif = image.getexif()
        value = exif.get(0x0112, 1)
    except Exception:  # a damaged EXIF block: viewers show such pictures as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


#: PNG chunks that may carry EXIF or XMP (``eXIf``, text chunks such as "Raw profile type exif").
_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")


def _png_metadata_in_header(image: Image.Image) -> bool:
    """True for a lazily opened PNG with no metadata chunk after its first ``IDAT`` (chunk headers
    read, pixel data skipped); False otherwise (another format, already decoded, unreadable)."""
    path = getattr(image, "filename", None)
    if image.format != "PNG" or not getattr(image, "tile", None) or not path or "exif" in image.info:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(8)  # the PNG signature
            after_pixels = False
            while len(head := f.read(8)) == 8:
                kind = head[4:]
                if kind == b"IEND":
                    return True
                if kind == b"IDAT":
                    after_pixels = True
                elif after_pixels and kind in _PNG_METADATA:
                    return False
                f.seek(int.from_bytes(head[:4], "big") + 4, os.SEEK_CUR)  # data and CRC
    except OSError:
        pass
    return False


#: (format, Pillow mode, raw mode of the single tile) of the 8-bit pictures torchvision decodes
#: exactly as Pillow does (checked by tests/test_decode.py for each kind).
_TORCHVISION_KINDS = {
    ("JPEG", "RGB", "RGB"),
    ("JPEG", "L", "L"),
    ("PNG", "RGB", "RGB"),
    ("PNG", "RGBA", "RGBA"),
    ("PNG", "L", "L"),
    ("PNG", "LA", "LA"),
    ("PNG", "P", "P"),
}


def _raw_mode(image: Image.Image) -> str | None:
    """The raw mode of a lazily opened picture's single tile (``"P;4"`` for a 4-bit palette...);
    None once Pillow has decoded the pixels (it then clears the tiles)."""
    tiles = getattr(image, "tile", None) or []
    if len(tiles) != 1:
        return None
    args = tiles[0][3]
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else None


def decoded_rgb(image: Image.Image) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 pixels of an 8-bit JPEG/PNG picture as stored, decoded by torchvision.io.

    The same values as ``np.array(image.convert("RGB"))`` (grey repeated, alpha dropped, palette
    applied), EXIF orientation not applied (see :func:`orient_array`). Returns None when Pillow
    must decode: another format or bit depth, several frames, an interlaced PNG, pixels already
    loaded, ``PSPNET_IMAGE_DECODER=pillow``, or a file torchvision cannot decode (Pillow then
    decodes it or raises its own error).
    """
    tensor = _torchvision_decode(image, _TORCHVISION_KINDS, "RGB", 3)
    return None if tensor is None else tensor.permute(1, 2, 0).numpy()


def decoded_grey(image: Image.Image) -> np.ndarray | None:
    """``(H, W)`` uint8 values of an 8-bit grey PNG as stored (``np.asarray(image)``), decoded by
    torchvision.io: the grey masks' fast path (paletted masks decode faster with Pillow). None when
    Pillow must decode (as :func:`decoded_rgb`)."""
    tensor = _torchvision_decode(image, {("PNG", "L", "L")}, "UNCHANGED", 1)
    return None if tensor is None else tensor[0].numpy()


def _torchvision_decode(
    image: Image.Image, kinds: set[tuple[str, str, str]], mode: str, bands: int
) -> torch.Tensor | None:
    if os.environ.get("PSPNET_IMAGE_DECODER", "auto").lower() == "pillow":
        return None
    path = getattr(image, "filename", None)
    if (
        not path
        or (image.format, image.mode, _raw_mode(image)) not in kinds
        or getattr(image, "n_frames", 1) != 1
        or image.info.get("interlace")
    ):
        return None
    try:
        from torchvision.io import ImageReadMode, decode_image

        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image decoders in favour of TorchCodec's (same API);
            # until they are removed (then this returns None and Pillow decodes), they are the fast path.
            warnings.simplefilter("ignore", DeprecationWarning)
            tensor = decode_image(str(path), mode=getattr(ImageReadMode, mode))
    except (ImportError, AttributeError, RuntimeError, OSError, ValueError):
        return None
    if tensor.dtype != torch.uint8 or tuple(tensor.shape) != (bands, image.height, image.width):
        return None
    return tensor


#: EXIF orientation -> the array operation of the transpose :func:`PIL.ImageOps.exif_transpose` applies.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (counter-clockwise)
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90 (counter-clockwise)
}


def orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, ...)`` pixels turned as EXIF ``orientation`` (1..8) says, as :func:`oriented` turns a picture."""
    turn = _ORIENT.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def oriented(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF Orientation says (what viewers and labelling tools show)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """``(height, width)`` of ``image`` once its EXIF orientation is applied."""
    if exif_orientation(image) in QUARTER_TURNS:
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
    grey = decoded_grey(image) if image.mode == "L" else None  # 8-bit grey PNG: torchvision.io
    return grey if grey is not None else np.asarray(image)


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
    return band_array(np.array(image), channels, what, image.mode, frames)


def _single_band(frame: Image.Image, what: str) -> np.ndarray | None:
    frame = to_eight_bit(frame, what)
    return np.array(frame) if frame.mode == "L" else None
