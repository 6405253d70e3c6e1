"""Turning what users call "an image" into an RGB tensor: paths, PIL images, arrays, tensors.

Every accepted kind becomes a ``(3, H, W)`` tensor, ``uint8`` (0..255) or floating point in
[0, 1]. Grayscale is repeated to three channels and an alpha channel is dropped, so a model
trained on RGB photos can take any ordinary picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["load_image", "pil_to_rgb", "to_rgb_tensor", "is_image_batch", "IMAGE_EXTENSIONS", "ACCEPTED_INPUTS"]

#: Suffixes that ``pspnet predict`` picks up when given a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ACCEPTED_INPUTS = (
    "a file path (str or pathlib.Path), a PIL image, a NumPy array (H, W, 3) / (H, W) / (H, W, 4) "
    "of uint8 (or float in [0, 1]), a torch tensor (3, H, W) / (1, H, W) / (4, H, W) / (H, W) of "
    "uint8 or float in [0, 1], a 4-D batch (N, 3, H, W), or a list of these"
)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image, applying its EXIF orientation.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            # Photos from phones store their rotation in EXIF; masks should match what viewers show.
            image = ImageOps.exif_transpose(image)
            return pil_to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read {path} as an image ({type(exc).__name__}: {exc})") from exc


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """An RGB version of any PIL image: grayscale repeated, alpha dropped, palettes applied.

    Integer grayscale beyond 8 bits (``I;16``, ``I``: how Pillow opens 16-bit PNGs and TIFFs) is
    mapped from 0..65535 to 0..255 by one fixed scale (``/ 257``), so every picture of a dataset
    keeps its relative brightness; ``convert("RGB")`` alone would clip everything above 255 to
    white. Float images (``F``) in 0..1 are scaled by 255, other floats clipped to 0..255. A
    16-bit file whose values all lie in 0..255 is taken as 8-bit data stored in a wider type.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 0.0
        if image.mode == "F" and peak <= 1.0:
            array = array * 255.0
        elif image.mode != "F" and peak > 255:
            array = array / 257.0  # 65535 -> 255
        image = Image.fromarray(array.clip(0, 255).round().astype(np.uint8), mode="L")
    return image.convert("RGB")


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
                f"a floating-point {what} must hold RGB values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
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


def _channels_first(x: torch.Tensor, what: str, channels_last: bool) -> torch.Tensor:
    """(C, H, W) or (H, W, C) or (H, W) -> (3, H, W) with gray repeated and alpha dropped."""
    original = tuple(x.shape)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif x.ndim == 3:
        if channels_last:
            x = x.permute(2, 0, 1)
        elif x.shape[0] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            raise ValueError(
                f"the {what} of shape {tuple(x.shape)} looks channels-last (H, W, C); tensors must be "
                "channels-first (C, H, W): use x.permute(2, 0, 1)"
            )
    else:
        raise ValueError(f"cannot use a {x.ndim}-D {what} of shape {tuple(x.shape)} as an image; expected {ACCEPTED_INPUTS}")
    channels = x.shape[0]
    if channels == 1:
        x = x.expand(3, -1, -1)
    elif channels == 4:
        x = x[:3]
    elif channels != 3:
        layout = "(H, W, C)" if channels_last else "(C, H, W)"
        raise ValueError(
            f"the {what} of shape {tuple(x.shape)} has {channels} channels in layout {layout}; "
            "expected 1 (grayscale), 3 (RGB) or 4 (RGBA)"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"the {what} is empty (shape {original}); expected at least 1x1 pixels")
    return x.contiguous()


def to_rgb_tensor(image: Any) -> torch.Tensor:
    """Convert one image of any accepted kind to an RGB ``(3, H, W)`` tensor (uint8 or float in [0, 1]).

    Args:
        image: a path, PIL image, NumPy array ``(H, W, C)``/``(H, W)`` or tensor ``(C, H, W)``/``(H, W)``
            with C = 1, 3 or 4, of uint8 or float in [0, 1].

    Raises ``TypeError``/``ValueError`` naming the problem and the accepted kinds.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(pil_to_rgb(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise TypeError(f"unsupported NumPy image dtype {image.dtype}; expected uint8 (0..255) or float in [0, 1]")
        if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
            raise TypeError(
                f"unsupported NumPy image dtype {image.dtype}; expected uint8 (0..255) or float in [0, 1]. "
                "Convert with image.astype(np.uint8) if the values are 0..255"
            )
        if not image.flags.writeable:  # e.g. np.asarray(pil_image); torch.from_numpy warns on those
            image = image.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        return _channels_first(_check_range(tensor, "NumPy image"), "NumPy image", channels_last=tensor.ndim == 3)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.bool:
            raise TypeError("unsupported tensor dtype torch.bool; expected uint8 (0..255) or float in [0, 1]")
        tensor = image.detach().cpu()
        return _channels_first(_check_range(tensor, "tensor image"), "tensor image", channels_last=False)
    raise TypeError(f"cannot use an object of type {type(image).__name__} as an image; expected {ACCEPTED_INPUTS}")
