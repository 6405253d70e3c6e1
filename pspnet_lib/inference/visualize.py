"""Pictures of segmentations: paletted masks, overlays and legends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.constants import IGNORE_INDEX
from ..core.palette import Palette, as_mask_array, colorize, default_palette, padded_palette

__all__ = ["colorize", "overlay", "legend", "default_palette", "side_by_side"]


def overlay(
    image: Image.Image | np.ndarray,
    mask: np.ndarray | torch.Tensor,
    palette: Palette | None = None,
    alpha: float = 0.5,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> Image.Image:
    """Blend the coloured mask over the picture (``alpha`` = weight of the mask colours); RGB result.

    Ignored pixels (``ignore_index``) show the picture unchanged; classes past the end of
    ``palette`` are coloured as :func:`~pspnet_lib.core.palette.padded_palette` pads it.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    mask = as_mask_array(mask)
    if (picture.height, picture.width) != mask.shape:
        raise ValueError(
            f"image size {picture.height}x{picture.width} differs from mask size {mask.shape[0]}x{mask.shape[1]}"
        )
    colours = np.asarray(colorize(mask, palette, ignore_index=ignore_index).convert("RGB"), dtype=np.float32)
    base = np.asarray(picture, dtype=np.float32)
    blended = np.where((mask == ignore_index)[..., None], base, (1 - alpha) * base + alpha * colours)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), mode="RGB")


def legend(
    class_names: Sequence[str], palette: Palette | None = None, present: Sequence[int] | None = None
) -> Image.Image:
    """A legend image: a colour swatch and name per class (only ``present`` classes if given).

    A palette shorter than ``class_names`` is padded as everywhere else
    (:func:`~pspnet_lib.core.palette.padded_palette`), never with the ignore colour.
    """
    palette = padded_palette(palette, len(class_names))
    indices = (
        sorted(set(int(i) for i in present if int(i) < len(class_names)))
        if present is not None
        else range(len(class_names))
    )
    indices = list(indices)
    font = ImageFont.load_default()
    row, swatch = 18, 14
    width = 24 + max([len(class_names[i]) for i in indices] + [4]) * 7 + 8
    canvas = Image.new("RGB", (width, max(1, len(indices)) * row + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for r, i in enumerate(indices):
        y = 3 + r * row
        draw.rectangle([4, y + 1, 4 + swatch, y + 1 + swatch], fill=palette[i], outline="black")
        draw.text((24, y + 2), class_names[i], fill="black", font=font)
    return canvas


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Paste pictures left to right on a white canvas (e.g. picture | ground truth | prediction)."""
    images = [im.convert("RGB") for im in images]
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas
