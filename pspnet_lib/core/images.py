"""The one reader of pictures and masks, and turning what users call "an image" into a tensor.

Every path of the package opens picture and mask files here: the datasets (:func:`read_pair`),
``verify``, ``predict`` and ``pspnet predict``, int8 calibration (:func:`to_image_tensor`). One
EXIF rule holds for all of them: pictures are turned as their EXIF Orientation tag says (as
viewers, phones and labelling tools show them), masks are read as stored (see :func:`read_mask`
and :func:`read_pair` for the one exception). The decoding step under the reader (Pillow, the
pixel-value rules below) lives in :mod:`pspnet_lib.core.decode`.

Paths, PIL images, NumPy arrays and tensors become ``(C, H, W)`` tensors, ``uint8`` (0..255) or
floating point in [0, 1], with ``C`` the model's ``config.in_channels``:

* 3 channels (RGB models): grayscale is repeated to three channels and an alpha channel is
  dropped, so a model trained on RGB photos can take any ordinary picture;
* 1 channel: grayscale pictures and ``(H, W)`` arrays are taken as they are; colour picture
  files are converted to luma (ITU-R 601-2, Pillow's ``convert("L")``);
* N channels: ``(H, W, N)`` arrays, ``.npy`` files holding one, multi-page TIFFs (one band per
  page) and pictures whose bands number N (RGBA, CMYK).

Any other channel count is one ``ValueError`` naming the input, its channels and the model's.

Pixel values depend only on the stored value and the file's type (never on the picture's
content), by these fixed rules (docs/inference.md has the table):

* 8-bit (``L``, ``P``, ``RGB``, ``RGBA``, ``CMYK``, ``uint8``): as stored;
* 16-bit integer (``I;16``, ``I;16B``, ``I;16L``, and ``I``, how Pillow opens 16-bit PNGs and
  TIFFs): ``round(v / 257)``, which maps 0..65535 onto 0..255 (values beyond 65535 in a 32-bit
  ``I`` image clip to 255, negative ones to 0);
* floating point (``F``, float arrays, ``.npy``): on the 0..1 scale (torchvision's convention
  for float images), so 8-bit = ``round(255 * v)``; values outside [0, 1] are an error, since
  no fixed rule can tell 0..255 floats or raw sensor counts from 0..1 ones and guessing from the
  content would make brightness depend on the picture.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageOps

from .band_spec import BandSpec, check_input_dtype
from .decode import (
    QUARTER_TURNS,
    decode_bytes,
    decode_file,
    decoded_rgb,
    mask_values,
    orient_array,
    oriented,
    pil_to_array,
    pil_to_rgb,
)
from .decode import exif_orientation as orientation
from .image_tensors import ACCEPTED_INPUTS, is_image_batch, to_image_tensor, to_rgb_tensor
from .stored import RASTER_SUFFIXES, read_raster, stored_values

_T = TypeVar("_T")

__all__ = [
    "image_size",
    "load_image",
    "read_image",
    "decode_image",
    "read_mask",
    "read_stored",
    "read_pair",
    "PictureAndMask",
    "pil_to_rgb",
    "pil_to_array",
    "to_rgb_tensor",
    "to_image_tensor",
    "is_image_batch",
    "IMAGE_EXTENSIONS",
    "ACCEPTED_INPUTS",
]

#: Suffixes that ``pspnet predict`` picks up when given a folder (``.npy``: arrays (H, W, C)).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image, applying its EXIF orientation.

    Pixel values follow the module's fixed conversion rules (:func:`pil_to_rgb`).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded as an image.
    """
    path = Path(path)
    return decode_file(path, lambda image: pil_to_rgb(oriented(image), what=str(path)))


def _picture_array(image: Image.Image, channels: int, what: str, orientation: int, stored: bool = False) -> np.ndarray:
    """``(H, W, channels)`` array of a picture, turned as EXIF ``orientation`` (1: as stored) says:
    uint8 by the photo rules, or the stored values (:func:`~pspnet_lib.core.stored.stored_values`)
    when the weights carry a band spec."""
    if channels == 3 and not stored:
        pixels = decoded_rgb(image)  # 8-bit JPEG/PNG: torchvision.io, the same pixels as Pillow's
        if pixels is not None:
            return orient_array(pixels, orientation)
    # The pages of a multi-band TIFF are bands, not a photo: they are never turned.
    if orientation != 1 and getattr(image, "n_frames", 1) == 1:
        image = ImageOps.exif_transpose(image)
    if stored:
        return stored_values(image, channels, what)
    if channels == 3:
        return np.array(pil_to_rgb(image, what=what))
    return pil_to_array(image, channels, what=what)


def _decode_picture(
    path: Path, convert: Callable[[Image.Image], _T], raster: Callable[[np.ndarray], _T], channels: int, stored: bool
) -> _T:
    """``convert`` of the picture at ``path``; a multi-band TIFF that Pillow cannot decode is read
    with rasterio (``raster`` of its stored values) when stored values are asked for (band specs)."""
    try:
        return decode_file(path, convert)
    except ValueError as exc:
        if path.suffix.lower() not in RASTER_SUFFIXES or exc.__cause__ is None:
            raise  # not Pillow failing to decode a TIFF (e.g. a channel count that does not match)
        if not stored:
            raise ValueError(
                f"{exc}. A multi-band raster (e.g. a GeoTIFF of uint16 bands) is read in its own units by weights "
                "with a band spec (pretrained_cfg['bands'], docs/inference.md#bands-in-their-own-units), "
                'with rasterio installed (pip install "pspnet_lib[geo]")'
            ) from exc
    return raster(read_raster(path, channels))


def _read_npy(path: Path, channels: int, stored: bool = False) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    _check_npy_size(path)
    return _npy_array(path, channels, str(path), stored)


def _npy_array(source: Path | io.BytesIO, channels: int, what: str, stored: bool = False) -> np.ndarray:
    try:
        array = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} as a NumPy array ({type(exc).__name__}: {exc})") from exc
    if stored:
        if array.dtype == np.bool_ or array.dtype.kind not in "uif" or array.ndim not in (2, 3):
            raise ValueError(f"{what} holds a {array.ndim}-D {array.dtype} array; expected (H, W, C) or (H, W) bands")
        array = array[..., None] if array.ndim == 2 else array
        if array.shape[-1] != channels:
            raise ValueError(
                f"{what} has {array.shape[-1]} band(s) (shape {array.shape}) but the model takes {channels} "
                "(config.in_channels); .npy images are (H, W, C)"
            )
        return array
    return to_image_tensor(array, channels, what=what).permute(1, 2, 0).numpy()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file, from its header alone."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        return tuple(shape), dtype, f.tell()


def _check_npy_size(path: Path) -> None:
    """A ``.npy`` whose header claims more data than the file holds is an error before any allocation."""
    try:
        shape, dtype, offset = _npy_header(path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read {path} as a NumPy array ({type(exc).__name__}: {exc})") from None
    needed = math.prod(shape) * dtype.itemsize
    present = path.stat().st_size - offset
    if needed != present:
        raise ValueError(
            f"cannot read {path} as a NumPy array: its header claims shape {list(shape)[:8]} of {dtype} "
            f"({needed} bytes) but the file holds {present} bytes of data (truncated or not a .npy file)"
        )


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` of a picture or ``.npy`` file from its header, without decoding it; None
    when the header cannot tell (the decoder then reports the file)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            shape, _, _ = _npy_header(path)
            return (int(shape[0]), int(shape[1])) if len(shape) >= 2 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(path) as image:
                width, height = image.size
        return int(height), int(width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def read_stored(path: str | os.PathLike, channels: int, *, exif_orientation: bool = True) -> np.ndarray:
    """The stored values of an image file, ``(H, W, channels)`` in the file's own type (uint8, uint16,
    int16, int32, float32; ``.npy`` any integer or float type), one band per channel: pictures and
    single- or multi-page TIFFs through Pillow, multi-band TIFFs (GeoTIFFs) through rasterio. Not
    checked against a band spec (``pspnet stats`` learns a folder's type from it)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _read_npy(path, channels, stored=True)
    return _decode_picture(
        path,
        lambda image: _picture_array(image, channels, str(path), orientation(image) if exif_orientation else 1, True),
        lambda raster: raster,
        channels,
        True,
    )


def read_image(
    path: str | os.PathLike, channels: int = 3, *, exif_orientation: bool = True, band_spec: BandSpec | None = None
) -> np.ndarray:
    """Read an image file as an ``(H, W, channels)`` array for a model of ``channels`` input channels.

    Pictures give ``uint8`` (see :func:`pil_to_array`), turned as their EXIF Orientation tag says
    (what viewers, phones and labelling tools show; ``exif_orientation=False`` keeps the stored
    pixels); ``.npy`` files hold an ``(H, W, C)`` or ``(H, W)`` array of uint8 or float in [0, 1]
    (read without pickle; float stays float).

    With ``band_spec`` (the weights' :class:`~pspnet_lib.core.band_spec.BandSpec`): :func:`read_stored`,
    whose bit depth must agree with the spec's.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` naming the file when it
    cannot be decoded, its channels do not match or its bit depth is not the spec's,
    ``ImportError`` for a multi-band TIFF without rasterio installed.
    """
    path = Path(path)
    if band_spec is not None:
        array = read_stored(path, channels, exif_orientation=exif_orientation)
        check_input_dtype(array.dtype, band_spec, str(path))
        return array
    if path.suffix.lower() == ".npy":
        return _read_npy(path, channels)
    turn = exif_orientation
    convert = lambda image: _picture_array(image, channels, str(path), orientation(image) if turn else 1)  # noqa: E731
    return _decode_picture(path, convert, lambda raster: raster, channels, False)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """The stored values of a mask file: ``(H, W)`` for index masks, ``(H, W, 3)`` for colour masks.

    Masks are read as stored: an EXIF orientation tag on a mask is not applied. Labelling tools
    draw on the picture as displayed, EXIF orientation applied (labelme since wkentaro/labelme#305,
    2019, and its ``labelme_json_to_dataset`` export since #1873, the fix of #1529; CVAT since
    cvat-ai/cvat#4529, 2022; Label Studio through the browser, see HumanSignal/label-studio#6608),
    and write the mask upright without an orientation tag; a tag copied onto a mask with the
    photo's metadata would turn the mask away from its picture.
    See :func:`pspnet_lib.core.decode.mask_values` for the accepted modes.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
    not a readable mask picture.
    """
    path = Path(path)
    return decode_file(path, lambda image: mask_values(image, str(path)), kind="mask")


class PictureAndMask(NamedTuple):
    """What :func:`read_pair` returns."""

    #: ``(H, W, channels)`` uint8 picture (``.npy`` images: uint8 or float in [0, 1]).
    image: np.ndarray
    #: the mask's stored values, ``(H, W)`` (or ``(H, W, 3)`` for colour masks).
    mask: np.ndarray
    #: the EXIF orientation left unapplied because the mask matches the stored pixels (None: none).
    unapplied_orientation: int | None


def read_pair(
    image_path: str | os.PathLike, mask_path: str | os.PathLike, channels: int = 3, band_spec: BandSpec | None = None
) -> PictureAndMask:
    """A picture and its mask, by the EXIF rule every dataset follows.

    The picture is turned as its EXIF orientation says (:func:`read_image`) and the mask read as
    stored (:func:`read_mask`): a mask drawn in a labelling tool is upright. One exception: when
    the orientation turns the picture by 90 or 270 degrees and the mask has the *stored* size but
    not the upright one, the mask was drawn on the stored pixels (by a tool that ignores EXIF,
    e.g. labelImg, or CVAT before #4529); then the stored pixels are used and
    ``unapplied_orientation`` says so, for the caller to warn. (A 180-degree turn or a mirror does
    not change the size, so nothing can tell; the picture is then used upright, as shown.)
    ``band_spec``: read the picture's stored values (see :func:`read_image`).

    Raises ``FileNotFoundError``/``ValueError`` naming the file as :func:`read_image` and
    :func:`read_mask` do.
    """
    image_path = Path(image_path)
    mask = read_mask(mask_path)
    if image_path.suffix.lower() == ".npy":
        return PictureAndMask(read_image(image_path, channels, band_spec=band_spec), mask, None)

    def convert(image: Image.Image) -> PictureAndMask:
        stored = (image.height, image.width)
        tag = orientation(image)
        upright = stored[::-1] if tag in QUARTER_TURNS else stored
        keep_stored = upright != mask.shape[:2] and stored == mask.shape[:2]
        array = _picture_array(image, channels, str(image_path), 1 if keep_stored else tag, band_spec is not None)
        return PictureAndMask(array, mask, tag if keep_stored else None)

    pair = _decode_picture(
        image_path, convert, lambda raster: PictureAndMask(raster, mask, None), channels, band_spec is not None
    )
    check_input_dtype(pair.image.dtype, band_spec, str(image_path))
    return pair


def decode_image(
    data: bytes | bytearray | memoryview, channels: int = 3, *, what: str = "the encoded picture"
) -> np.ndarray:
    """:func:`read_image` for a file's bytes already in memory (e.g. a column of encoded pictures in
    Ray, Spark or Arrow): an ``(H, W, channels)`` array by the same rules (EXIF orientation applied;
    ``.npy`` content recognised by its magic bytes and read without pickle).

    Raises ``ValueError`` naming ``what`` when the bytes are not a picture or their channels do not match.
    """
    data = bytes(data)
    if data.startswith(b"\x93NUMPY"):
        return _npy_array(io.BytesIO(data), channels, what)
    return decode_bytes(data, lambda image: _picture_array(image, channels, what, orientation(image)), what)
