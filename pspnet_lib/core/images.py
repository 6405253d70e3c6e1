"""Turning what users call "an image" into a tensor of the model's channel count.

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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence

__all__ = [
    "load_image",
    "read_image",
    "decode_image",
    "pil_to_rgb",
    "pil_to_array",
    "to_rgb_tensor",
    "to_image_tensor",
    "is_image_batch",
    "IMAGE_EXTENSIONS",
    "ACCEPTED_INPUTS",
]

_T = TypeVar("_T")

#: Suffixes that ``pspnet predict`` picks up when given a folder (``.npy``: arrays (H, W, C)).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")

ACCEPTED_INPUTS = (
    "a file path (str or pathlib.Path; pictures, multi-page TIFFs, .npy arrays), a PIL image, a NumPy "
    "array (H, W, C) / (H, W) of uint8 (or float in [0, 1]), a torch tensor (C, H, W) / (H, W) of uint8 "
    "or float in [0, 1], a 4-D batch (N, C, H, W), or a list of these; C = the model's in_channels "
    "(for 3-channel models also 1 = grayscale, 4 = RGBA)"
)

_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return Image.open(path)


def _decode_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"cannot read {path} as an image ({type(exc).__name__}: {exc})")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image, applying its EXIF orientation.

    Pixel values follow the module's fixed conversion rules (:func:`pil_to_rgb`).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded as an image.
    """
    path = Path(path)
    # Photos from phones store their rotation in EXIF; masks should match what viewers show.
    return _decode(path, lambda image: pil_to_rgb(ImageOps.exif_transpose(image), what=str(path)))


def _decode(path: Path, convert: Callable[[Image.Image], _T]) -> _T:
    """``convert`` applied to the decoded picture at ``path``; a file that cannot be decoded is one
    ``ValueError`` naming it (a missing file stays ``FileNotFoundError``)."""
    try:
        with _open(path) as image:
            image.load()
            return convert(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise
        raise _decode_error(path, exc) from exc


def _to_eight_bit(image: Image.Image, what: str) -> Image.Image:
    """A single-band 16-bit or float PIL image as ``L`` by the fixed rules (other modes unchanged)."""
    if image.mode in _SIXTEEN_BIT:
        array = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255, whatever the content
        return Image.fromarray(array.clip(0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        _check_unit_range(array, what)
        return Image.fromarray((array * 255.0).round().astype(np.uint8), mode="L")
    return image


def _check_unit_range(array: np.ndarray, what: str) -> None:
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
    return _to_eight_bit(image, what).convert("RGB")


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
        image = _to_eight_bit(image, what)  # 16-bit / float grey -> L by the fixed rules
        return np.array(image if image.mode == "L" else image.convert("L"))[..., None]
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    image = _to_eight_bit(image, what)
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
    frame = _to_eight_bit(frame, what)
    return np.array(frame) if frame.mode == "L" else None


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Read an image file as an ``(H, W, channels)`` array for a model of ``channels`` input channels.

    Pictures give ``uint8`` (see :func:`pil_to_array`; EXIF rotation applied); ``.npy`` files
    hold an ``(H, W, C)`` or ``(H, W)`` array of uint8 or float in [0, 1] (read without pickle).

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` naming the file when it
    cannot be decoded or its channels do not match.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path} as a NumPy array ({type(exc).__name__}: {exc})") from exc
        return to_image_tensor(array, channels, what=str(path)).permute(1, 2, 0).numpy()
    if channels == 3:
        return np.array(load_image(path))

    def convert(image: Image.Image) -> np.ndarray:
        if getattr(image, "n_frames", 1) == 1:  # the pages of a multi-band TIFF are bands, not a photo
            image = ImageOps.exif_transpose(image)
        return pil_to_array(image, channels, what=str(path))

    return _decode(path, convert)


def decode_image(
    data: bytes | bytearray | memoryview, channels: int = 3, *, what: str = "the encoded picture"
) -> np.ndarray:
    """:func:`read_image` for a file's bytes already in memory (e.g. a column of encoded pictures in
    Ray, Spark or Arrow): an ``(H, W, channels)`` array by the same rules (EXIF rotation applied;
    ``.npy`` content recognised by its magic bytes and read without pickle).

    Raises ``ValueError`` naming ``what`` when the bytes are not a picture or their channels do not match.
    """
    data = bytes(data)
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {what} as a NumPy array ({type(exc).__name__}: {exc})") from exc
        return to_image_tensor(array, channels, what=what).permute(1, 2, 0).numpy()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if channels == 3:
                return np.array(pil_to_rgb(ImageOps.exif_transpose(image), what=what))
            if getattr(image, "n_frames", 1) == 1:  # as read_image: the pages of a multi-band TIFF are bands
                image = ImageOps.exif_transpose(image)
            return pil_to_array(image, channels, what=what)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ValueError) and what in str(exc):
            raise
        raise ValueError(f"cannot read {what} as an image ({type(exc).__name__}: {exc})") from exc


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
