"""Class colours: the default palette and paletted ("P" mode) masks.

Below every other part of the package because datasets (their default palette), synthetic
scenes and the pictures of predictions all colour masks the same way.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .constants import IGNORE_INDEX

__all__ = ["Palette", "default_palette", "colorize", "as_mask_array"]

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


def as_mask_array(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """``mask`` as a 2-D integer NumPy array; ``ValueError``/``TypeError`` name the wrong shape/dtype."""
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
    mask = as_mask_array(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"mask values must lie in [0, 255] to be stored as a paletted image, got [{mask.min()}, {mask.max()}]"
        )
    n = int(mask.max()) + 1 if mask.size else 1
    palette = list(palette) if palette is not None else default_palette(n)
    flat = [0] * (256 * 3)
    for i, colour in enumerate(palette[:256]):
        if i != IGNORE_INDEX:
            flat[3 * i : 3 * i + 3] = [int(c) for c in colour[:3]]
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(flat)
    return image
