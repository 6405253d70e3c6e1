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

__all__ = ["IGNORE_COLOUR", "Palette", "default_palette", "padded_palette", "colorize", "as_mask_array"]

Palette = Sequence[Sequence[int]]

#: The colour of ignored pixels in paletted masks (and of nothing else the library adds).
IGNORE_COLOUR = (0, 0, 0)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct colours (golden-ratio hues at alternating brightness) for ``num_classes`` classes.

    Every colour has HSV value 0.7 or 0.95, so none is :data:`IGNORE_COLOUR` (black).
    """
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def padded_palette(palette: Palette | None, num_classes: int) -> list[tuple[int, int, int]]:
    """``palette`` (one RGB colour per class) made long enough for ``num_classes`` classes.

    The given colours are kept (an alpha value dropped); classes past its end get the colours
    :func:`default_palette` gives them, never :data:`IGNORE_COLOUR`, so a class the palette
    forgot is never drawn like an ignored pixel. ``None`` gives ``default_palette(num_classes)``.
    The one padding rule of every picture: :func:`colorize`, ``legend``, overlays, ``predict``,
    the model card.
    """
    colours = [(int(c[0]), int(c[1]), int(c[2])) for c in (palette or ())]
    if len(colours) < num_classes:
        colours += default_palette(num_classes)[len(colours) :]
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


def colorize(
    mask: np.ndarray | torch.Tensor, palette: Palette | None = None, *, ignore_index: int = IGNORE_INDEX
) -> Image.Image:
    """A paletted ("P" mode) PIL image of a class-index mask; ignored pixels (``ignore_index``) are black.

    Saved as PNG it keeps the class indices as pixel values, so it is both a picture and the label map.
    Classes past the end of ``palette`` get :func:`padded_palette`'s colours, never black.
    """
    mask = as_mask_array(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"mask values must lie in [0, 255] to be stored as a paletted image, got [{mask.min()}, {mask.max()}]"
        )
    classes = mask[mask != ignore_index]
    colours = padded_palette(palette, int(classes.max()) + 1 if classes.size else 1)
    flat = [0] * (256 * 3)
    for i, colour in enumerate(colours[:256]):
        if i != ignore_index:
            flat[3 * i : 3 * i + 3] = list(colour)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(flat)
    return image
