"""Pictures of segmentations: paletted masks, overlays and legends; the confusion matrix of an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.constants import IGNORE_INDEX
from ..core.palette import Palette, as_mask_array, colorize, default_palette, padded_palette

__all__ = ["colorize", "overlay", "legend", "default_palette", "side_by_side", "draw_confusion_matrix", "load_font"]


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


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (FreeType, Pillow >= 10.1), else its fixed bitmap font."""
    try:  # Pillow >= 10.1 with FreeType: a scalable font whose spaces have a visible width
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: the bitmap font
        return ImageFont.load_default()


#: The colour scale of :func:`draw_confusion_matrix`: white (0) to dark blue (1), as matplotlib's "Blues".
_LOW, _HIGH = np.array([247.0, 251.0, 255.0]), np.array([8.0, 48.0, 107.0])


def draw_confusion_matrix(
    counts: Any, class_names: Sequence[str] | None = None, title: str = "Confusion matrix"
) -> Image.Image:
    """A picture of the row-normalised confusion matrix: cell (r, c) is the share of class r's pixels
    predicted as c (white 0% to dark blue 100%; the diagonal is each class's accuracy).

    Args:
        counts: ``(K, K)`` pixel counts ``[ground truth][prediction]`` (nested lists, NumPy or torch),
            as :meth:`pspnet_lib.engine.ConfusionMatrix.compute` returns them.
        class_names: row and column labels (default ``0 .. K-1``); shown when the cells are large
            enough, as are the percentages in the cells (up to about 20 classes).
        title: the first line above the matrix.

    Rows of classes without ground-truth pixels are grey. Returns an RGB image about 700 pixels wide.
    Raises ``ValueError`` for a matrix that is not square or holds negative counts.
    """
    matrix = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"the confusion matrix must be square (K, K), got shape {matrix.shape}")
    if (matrix < 0).any():
        raise ValueError("the confusion matrix holds negative counts")
    k = matrix.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    rows = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    cell = int(np.clip(560 // k, 3, 40))
    labelled = cell >= 11
    font, small = load_font(13), load_font(max(9, min(12, cell - 2)))
    names = [n if len(n) <= 18 else n[:16] + ".." for n in names]
    label = max((int(small.getlength(n)) for n in names), default=0) + 8 if labelled else 8
    left, top = label + 24, 48 + label
    size = cell * k
    subtitle = "rows: ground truth (each row sums to 100%); columns: prediction"
    width = max(left + size, int(font.getlength(title)), int(small.getlength(subtitle))) + 16
    canvas = Image.new("RGB", (width, top + size + 16), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill="black", font=font)
    draw.text((8, 24), subtitle, fill=(90, 90, 90), font=small)
    colours = (_LOW + shares[..., None] * (_HIGH - _LOW)).round().astype(np.uint8)
    grid = np.repeat(np.repeat(colours, cell, 0), cell, 1)
    grid[np.repeat(rows[:, 0] == 0, cell)] = 215  # classes without ground truth: grey rows
    canvas.paste(Image.fromarray(grid, "RGB"), (left, top))
    if labelled:
        for i, name in enumerate(names):
            middle = top + i * cell + cell / 2
            draw.text((left - 6, middle), name, fill="black", font=small, anchor="rm")
            strip = Image.new("RGB", (label, cell), "white")
            ImageDraw.Draw(strip).text((2, cell / 2), name, fill="black", font=small, anchor="lm")
            canvas.paste(strip.rotate(90, expand=True), (left + i * cell, top - label - 2))
    if cell >= 30:
        for r in range(k):
            for c in range(k):
                if rows[r, 0] > 0:
                    ink = "white" if shares[r, c] > 0.5 else "black"
                    draw.text(
                        (left + c * cell + cell / 2, top + r * cell + cell / 2),
                        f"{100 * shares[r, c]:.0f}",
                        fill=ink,
                        font=small,
                        anchor="mm",
                    )
    draw.rectangle([left - 1, top - 1, left + size, top + size], outline=(80, 80, 80))
    return canvas
