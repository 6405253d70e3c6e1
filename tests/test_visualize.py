import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib.inference.visualize import colorize, default_palette, legend, overlay, side_by_side


def test_colorize_is_paletted_with_class_indices_as_pixels():
    mask = np.array([[0, 1], [2, 255]], dtype=np.int64)
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    im = colorize(mask, palette)
    assert im.mode == "P" and im.size == (2, 2)
    assert np.array_equal(np.asarray(im), mask.astype(np.uint8))
    rgb = np.asarray(im.convert("RGB"))
    assert tuple(rgb[0, 1]) == (40, 50, 60) and tuple(rgb[1, 1]) == (0, 0, 0)


def test_overlay_blends_and_keeps_ignored_pixels():
    picture = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = torch.tensor([[0, 0, 255], [1, 1, 1]])
    out = overlay(picture, mask, [(200, 0, 0), (0, 200, 0)], alpha=0.5)
    arr = np.asarray(out)
    assert out.mode == "RGB" and out.size == (3, 2)
    assert tuple(arr[0, 0]) == (150, 50, 50) and tuple(arr[0, 2]) == (100, 100, 100)


def test_overlay_size_mismatch_and_bad_mask():
    with pytest.raises(ValueError, match="differs from mask size"):
        overlay(Image.new("RGB", (4, 4)), np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="integer class indices"):
        colorize(np.zeros((3, 3), dtype=np.float32))


def test_legend_lists_present_classes_only():
    full = legend(["sky", "road", "car"], default_palette(3))
    some = legend(["sky", "road", "car"], default_palette(3), present=[2])
    assert full.height > some.height and some.mode == "RGB"


def test_side_by_side_width():
    a, b = Image.new("RGB", (5, 4)), Image.new("L", (7, 6))
    assert side_by_side([a, b], gap=2).size == (14, 6)
