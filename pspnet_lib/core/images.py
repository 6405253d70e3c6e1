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
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from .decode import (
    decode_bytes,
    decode_file,
    exif_orientation,
    mask_values,
    oriented,
    pil_to_array,
    pil_to_rgb,
    upright_size,
)

__all__ = [
    "image_size",
    "load_image",
    "read_image",
    "decode_image",
    "read_mask",
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

ACCEPTED_INPUTS = (
    "a file path (str or pathlib.Path; pictures, multi-page TIFFs, .npy arrays), a PIL image, a NumPy "
    "array (H, W, C) / (H, W) of uint8 (or float in [0, 1]), a torch tensor (C, H, W) / (H, W) of uint8 "
    "or float in [0, 1], a 4-D batch (N, C, H, W), or a list of these; C = the model's in_channels "
    "(for 3-channel models also 1 = grayscale, 4 = RGBA)"
)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image, applying its EXIF orientation.

    Pixel values follow the module's fixed conversion rules (:func:`pil_to_rgb`).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded as an image.
    """
    path = Path(path)
    return decode_file(path, lambda image: pil_to_rgb(oriented(image), what=str(path)))


def _picture_array(image: Image.Image, channels: int, what: str, orient: bool) -> np.ndarray:
    """``(H, W, channels)`` uint8 array of a decoded picture, turned upright when ``orient``."""
    # The pages of a multi-band TIFF are bands, not a photo: they are never turned.
    if orient and getattr(image, "n_frames", 1) == 1:
        image = oriented(image)
    if channels == 3:
        return np.array(pil_to_rgb(image, what=what))
    return pil_to_array(image, channels, what=what)


def _read_npy(path: Path, channels: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    _check_npy_size(path)
    return _npy_array(path, channels, str(path))


def _npy_array(source: Path | io.BytesIO, channels: int, what: str) -> np.ndarray:
    try:
        array = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} as a NumPy array ({type(exc).__name__}: {exc})") from exc
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


def read_image(path: str | os.PathLike, channels: int = 3, *, exif_orientation: bool = True) -> np.ndarray:
    """Read an image file as an ``(H, W, channels)`` array for a model of ``channels`` input channels.

    Pictures give ``uint8`` (see :func:`pil_to_array`), turned as their EXIF Orientation tag says
    (what viewers, phones and labelling tools show; ``exif_orientation=False`` keeps the stored
    pixels); ``.npy`` files hold an ``(H, W, C)`` or ``(H, W)`` array of uint8 or float in [0, 1]
    (read without pickle; float stays float).

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` naming the file when it
    cannot be decoded or its channels do not match.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _read_npy(path, channels)
    return decode_file(path, lambda image: _picture_array(image, channels, str(path), exif_orientation))


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


def read_pair(image_path: str | os.PathLike, mask_path: str | os.PathLike, channels: int = 3) -> PictureAndMask:
    """A picture and its mask, by the EXIF rule every dataset follows.

    The picture is turned as its EXIF orientation says (:func:`read_image`) and the mask read as
    stored (:func:`read_mask`): a mask drawn in a labelling tool is upright. One exception: when
    the orientation turns the picture by 90 or 270 degrees and the mask has the *stored* size but
    not the upright one, the mask was drawn on the stored pixels (by a tool that ignores EXIF,
    e.g. labelImg, or CVAT before #4529); then the stored pixels are used and
    ``unapplied_orientation`` says so, for the caller to warn. (A 180-degree turn or a mirror does
    not change the size, so nothing can tell; the picture is then used upright, as shown.)

    Raises ``FileNotFoundError``/``ValueError`` naming the file as :func:`read_image` and
    :func:`read_mask` do.
    """
    image_path = Path(image_path)
    mask = read_mask(mask_path)
    if image_path.suffix.lower() == ".npy":
        return PictureAndMask(_read_npy(image_path, channels), mask, None)

    def convert(image: Image.Image) -> PictureAndMask:
        stored = (image.height, image.width)
        tag = exif_orientation(image)
        keep_stored = upright_size(image) != mask.shape[:2] and stored == mask.shape[:2]
        array = _picture_array(image, channels, str(image_path), orient=not keep_stored)
        return PictureAndMask(array, mask, tag if keep_stored else None)

    return decode_file(image_path, convert)


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
    return decode_bytes(data, lambda image: _picture_array(image, channels, what, True), what)


def is_image_batch(images: Any) -> bool:
    """True for inputs that hold several images: lists/tuples and 4-D tensors or arrays."""
    if isinstance(images, (list, tuple)):
        return True
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        return True
    return False


def _check_range(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.is_floating_point():
        if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"a floating-point {what} must hold values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
                "Pass uint8 pixels (0..255) or divide by 255; do not normalise it yourself, "
                "predict applies the mean/std stored with the weights"
            )
        return x.float()
    if x.dtype == torch.uint8:
        return x
    raise TypeError(
        f"unsupported {what} dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]. "
        "Convert with x.to(torch.uint8) or x.float() / 255"
    )


def _channels_first(x: torch.Tensor, what: str, channels_last: bool, channels: int = 3) -> torch.Tensor:
    """(C, H, W) or (H, W, C) or (H, W) -> (channels, H, W); for 3: gray repeated, alpha dropped."""
    original = tuple(x.shape)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif x.ndim == 3:
        if channels_last:
            x = x.permute(2, 0, 1)
        elif x.shape[0] not in (1, 3, 4, channels) and x.shape[-1] in (1, 3, 4, channels):
            raise ValueError(
                f"the {what} of shape {tuple(x.shape)} looks channels-last (H, W, C); tensors must be "
                "channels-first (C, H, W): use x.permute(2, 0, 1)"
            )
    else:
        raise ValueError(
            f"cannot use a {x.ndim}-D {what} of shape {tuple(x.shape)} as an image; expected {ACCEPTED_INPUTS}"
        )
    found = x.shape[0]
    if found != channels:
        if channels == 3 and found == 1:
            x = x.expand(3, -1, -1)
        elif channels == 3 and found == 4:
            x = x[:3]
        else:
            layout = "(H, W, C)" if channels_last else "(C, H, W)"
            accepted = "1 (grayscale), 3 (RGB) or 4 (RGBA)" if channels == 3 else str(channels)
            hint = ""
            if channels_last and original[0] == channels and original[-1] != channels:
                hint = f"; it looks channels-first: use np.moveaxis(image, 0, -1) for (H, W, {channels})"
            raise ValueError(
                f"the {what} of shape {original} has {found} channels in layout {layout} but the model takes "
                f"{channels} (config.in_channels); expected {accepted}{hint}"
            )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"the {what} is empty (shape {original}); expected at least 1x1 pixels")
    return x.contiguous()


def to_image_tensor(image: Any, channels: int = 3, *, what: str | None = None) -> torch.Tensor:
    """Convert one image of any accepted kind to a ``(channels, H, W)`` tensor (uint8 or float in [0, 1]).

    Args:
        image: a path (pictures, multi-page TIFFs, ``.npy``), PIL image, NumPy array
            ``(H, W, C)``/``(H, W)`` or tensor ``(C, H, W)``/``(H, W)``, of uint8 or float in [0, 1].
        channels: the model's ``config.in_channels``. For 3, C may also be 1 (repeated) or 4
            (alpha dropped); otherwise C must equal ``channels`` (pictures: see :func:`pil_to_array`).
        what: how to name the input in errors (default: its kind, or the file path).

    Raises ``TypeError``/``ValueError`` naming the problem and the accepted kinds.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, channels)
        if image.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, Image.Image):
        array = pil_to_array(image, channels, what=what or "the PIL image")
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        kind = what or "NumPy image"
        if image.dtype == np.bool_ or not (
            np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
        ):
            raise TypeError(f"unsupported {kind} dtype {image.dtype}; expected uint8 (0..255) or float in [0, 1]")
        if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
            raise TypeError(
                f"unsupported {kind} dtype {image.dtype}; expected uint8 (0..255) or float in [0, 1]. "
                "Convert with image.astype(np.uint8) if the values are 0..255, or (image / 257).round().astype(np.uint8) "
                "for 16-bit data"
            )
        if not image.flags.writeable:  # e.g. np.asarray(pil_image); torch.from_numpy warns on those
            image = image.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        return _channels_first(_check_range(tensor, kind), kind, channels_last=tensor.ndim == 3, channels=channels)
    if isinstance(image, torch.Tensor):
        kind = what or "tensor image"
        if image.dtype == torch.bool:
            raise TypeError(f"unsupported {kind} dtype torch.bool; expected uint8 (0..255) or float in [0, 1]")
        tensor = image.detach().cpu()
        return _channels_first(_check_range(tensor, kind), kind, channels_last=False, channels=channels)
    raise TypeError(f"cannot use an object of type {type(image).__name__} as an image; expected {ACCEPTED_INPUTS}")


def to_rgb_tensor(image: Any) -> torch.Tensor:
    """:func:`to_image_tensor` for 3-channel (RGB) models: a ``(3, H, W)`` tensor, uint8 or float in [0, 1]."""
    return to_image_tensor(image, 3)
