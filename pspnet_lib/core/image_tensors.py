"""Turning what users call "an image" into a ``(C, H, W)`` tensor for a model of C input channels.

:func:`to_image_tensor` takes paths (read by :mod:`pspnet_lib.core.images`, the one reader), PIL
images, NumPy arrays and tensors, and checks them by the rules of :mod:`pspnet_lib.core.images`
(channel counts, the photo rules' dtypes and ranges; with a band spec, stored values of any type).
Its names are re-exported by :mod:`pspnet_lib.core.images`, where they lived before.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from .band_spec import BandSpec, check_input_dtype
from .decode import pil_to_array
from .stored import stored_values

__all__ = ["ACCEPTED_INPUTS", "is_image_batch", "to_image_tensor", "to_rgb_tensor"]

ACCEPTED_INPUTS = (
    "a file path (str or pathlib.Path; pictures, multi-page TIFFs, .npy arrays), a PIL image, a NumPy "
    "array (H, W, C) / (H, W) of uint8 (or float in [0, 1]), a torch tensor (C, H, W) / (H, W) of uint8 "
    "or float in [0, 1], a 4-D batch (N, C, H, W), or a list of these; C = the model's in_channels "
    "(for 3-channel models also 1 = grayscale, 4 = RGBA); with a band spec (pretrained_cfg['bands']) "
    "stored values of any integer or float type, multi-band TIFFs too"
)


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


def _channels_first(
    x: torch.Tensor, what: str, channels_last: bool, channels: int = 3, expand: bool = True
) -> torch.Tensor:
    """(C, H, W) or (H, W, C) or (H, W) -> (channels, H, W); for 3 (with ``expand``): gray repeated, alpha dropped."""
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
        if expand and channels == 3 and found == 1:
            x = x.expand(3, -1, -1)
        elif expand and channels == 3 and found == 4:
            x = x[:3]
        else:
            layout = "(H, W, C)" if channels_last else "(C, H, W)"
            accepted = "1 (grayscale), 3 (RGB) or 4 (RGBA)" if channels == 3 and expand else str(channels)
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


def to_image_tensor(
    image: Any, channels: int = 3, *, band_spec: BandSpec | None = None, what: str | None = None
) -> torch.Tensor:
    """Convert one image of any accepted kind to a ``(channels, H, W)`` tensor (uint8 or float in [0, 1]).

    Args:
        image: a path (pictures, multi-page TIFFs, ``.npy``), PIL image, NumPy array
            ``(H, W, C)``/``(H, W)`` or tensor ``(C, H, W)``/``(H, W)``, of uint8 or float in [0, 1].
        channels: the model's ``config.in_channels``. For 3, C may also be 1 (repeated) or 4
            (alpha dropped); otherwise C must equal ``channels`` (pictures: see :func:`pil_to_array`).
        band_spec: the weights' band spec (``PretrainedCfg.bands``): then the stored values come back
            in their own type (any integer or float dtype, multi-band TIFFs too; see
            :func:`read_image`), C must equal ``channels``, and 8-bit values need an 8-bit spec
            (and the other way round). :func:`pspnet_lib.core.bands.normalise` makes model input of them.
        what: how to name the input in errors (default: its kind, or the file path).

    Raises ``TypeError``/``ValueError`` naming the problem and the accepted kinds.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if band_spec is not None:
        return _stored_tensor(image, channels, band_spec, what)
    if isinstance(image, (str, os.PathLike)):
        from .images import read_image  # the reader (which re-exports this module's names)

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


def _stored_tensor(image: Any, channels: int, band_spec: BandSpec, what: str | None) -> torch.Tensor:
    """:func:`to_image_tensor` with a band spec: ``(channels, H, W)`` stored values in their own type."""
    channels_last = True
    if isinstance(image, (str, os.PathLike)):
        what = what or str(image)
        from .images import read_image

        image = read_image(image, channels, band_spec=band_spec)
    elif isinstance(image, Image.Image):
        what = what or "the PIL image"
        image = stored_values(image, channels, what)
    if isinstance(image, np.ndarray):
        what = what or "NumPy image"
        if image.dtype == np.bool_ or image.dtype.kind not in "uif":
            raise TypeError(f"unsupported {what} dtype {image.dtype}; expected integer or float stored values")
        tensor = torch.from_numpy(np.ascontiguousarray(image if image.flags.writeable else image.copy()))
    elif isinstance(image, torch.Tensor):
        what = what or "tensor image"
        if image.dtype == torch.bool or image.is_complex():
            raise TypeError(f"unsupported {what} dtype {image.dtype}; expected integer or float stored values")
        tensor, channels_last = image.detach().cpu(), False
    else:
        raise TypeError(f"cannot use an object of type {type(image).__name__} as an image; expected {ACCEPTED_INPUTS}")
    check_input_dtype(tensor.dtype, band_spec, what)
    return _channels_first(
        tensor, what, channels_last=channels_last and tensor.ndim == 3, channels=channels, expand=False
    )


def to_rgb_tensor(image: Any) -> torch.Tensor:
    """:func:`to_image_tensor` for 3-channel (RGB) models: a ``(3, H, W)`` tensor, uint8 or float in [0, 1]."""
    return to_image_tensor(image, 3)
