"""Pictures of segmentations: paletted masks, overlays and legends."""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.constants import IGNORE_INDEX

__all__ = ["colorize", "overlay", "legend", "default_palette", "side_by_side"]

Palette = Sequence[Sequence[int]]


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct colours (golden-ratio hues at alternating brightness) for ``num_classes`` classes."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def _as_array(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W) class indices, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"a mask must hold integer class indices, got dtype {mask.dtype}")
    return mask


def colorize(mask: np.ndarray | torch.Tensor, palette: Palette | None = None) -> Image.Image:
    """A paletted ("P" mode) PIL image of a class-index mask; ignored pixels (255) are black.

    Saved as PNG it keeps the class indices as pixel values, so it is both a picture and the label map.
    """
    mask = _as_array(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must lie in [0, 255] to be stored as a paletted image, got [{mask.min()}, {mask.max()}]")
    n = int(mask.max()) + 1 if mask.size else 1
    palette = list(palette) if palette is not None else default_palette(n)
    flat = [0] * (256 * 3)
    for i, colour in enumerate(palette[:256]):
        if i != IGNORE_INDEX:
            flat[3 * i : 3 * i + 3] = [int(c) for c in colour[:3]]
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(flat)
    return image


def overlay(
    image: Image.Image | np.ndarray, mask: np.ndarray | torch.Tensor, palette: Palette | None = None, alpha: float = 0.5
) -> Image.Image:
    """Blend the coloured mask over the picture (``alpha`` = weight of the mask colours); RGB result.

    Ignored pixels (255) show the picture unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    mask = _as_array(mask)
    if (picture.height, picture.width) != mask.shape:
        raise ValueError(f"image size {picture.height}x{picture.width} differs from mask size {mask.shape[0]}x{mask.shape[1]}")
    colours = np.asarray(colorize(mask, palette).convert("RGB"), dtype=np.float32)
    base = np.asarray(picture, dtype=np.float32)
    blended = np.where((mask == IGNORE_INDEX)[..., None], base, (1 - alpha) * base + alpha * colours)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), mode="RGB")


def legend(class_names: Sequence[str], palette: Palette | None = None, present: Sequence[int] | None = None) -> Image.Image:
    """A legend image: a colour swatch and name per class (only ``present`` classes if given)."""
    palette = list(palette) if palette is not None else default_palette(len(class_names))
    indices = sorted(set(int(i) for i in present if int(i) < len(class_names))) if present is not None else range(len(class_names))
    indices = list(indices)
    font = ImageFont.load_default()
    row, swatch = 18, 14
    width = 24 + max([len(class_names[i]) for i in indices] + [4]) * 7 + 8
    canvas = Image.new("RGB", (width, max(1, len(indices)) * row + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for r, i in enumerate(indices):
        y = 3 + r * row
        draw.rectangle([4, y + 1, 4 + swatch, y + 1 + swatch], fill=tuple(int(c) for c in palette[i][:3]), outline="black")
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
