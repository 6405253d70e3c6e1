"""Synthetic labelled scenes for the offline demo and for testing training end to end.

Each scene has a sky above a wavy horizon and textured ground below, with discs, boxes,
triangles and striped blobs placed at random, overlapping each other. Each object class has its
own shape, shading and colour family (red discs, yellow boxes, green triangles, blue stripes), so
no object class can be taken for another by a chance colour; but the families lie inside the
ground's earth-to-grass hues and the sky's blues, so colour alone does not tell an object from
the ground or the sky: a network needs edges, texture and context too (the best per-pixel colour
lookup reaches 0.57 mIoU, ``tests/test_data_transforms.py``). Everything is deterministic per
``(seed, index)``.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .._files import current_umask
from ..core.constants import IGNORE_INDEX
from ..core.palette import colorize

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "make_scene", "SyntheticScenes", "write_synthetic_dataset"]

SYNTHETIC_CLASSES: list[str] = ["sky", "ground", "disc", "box", "triangle", "stripes"]
SYNTHETIC_PALETTE: list[tuple[int, int, int]] = [
    (70, 130, 180), (140, 100, 40), (220, 20, 60), (250, 200, 0), (60, 180, 75), (145, 30, 180),
]  # fmt: skip

SKY, GROUND, DISC, BOX, TRIANGLE, STRIPES = range(6)
# Hue centre of each object class (red, yellow, green, blue): 0.14 or more apart, so that with the
# spread below no two object families overlap, while each overlaps the ground's hues (0.02-0.4) or
# the sky's (0.5-0.7). The earlier spread of 0.15 let a yellowish disc pass for a box by chance:
# 69.7% held-out mIoU for the demo against 85.4% now (CHANGELOG, Unreleased).
_OBJECT_HUES = {DISC: 0.0, BOX: 0.14, TRIANGLE: 0.33, STRIPES: 0.6}
_HUE_SPREAD = 0.04


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _object_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    hue = _OBJECT_HUES[cls] + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)
    return _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))


def _rotated(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


def make_scene(
    rng: np.random.Generator, size: Sequence[int] = (96, 96), border_ignore: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One random scene: ``(image (H, W, 3) uint8, mask (H, W) uint8)`` with :data:`SYNTHETIC_CLASSES` labels.

    Args:
        rng: the random generator (the scene is a function of its state).
        size: ``(height, width)``.
        border_ignore: mark 1-pixel object outlines 255 (ignored), like Pascal VOC's borders.
    """
    height, width = int(size[0]), int(size[1])
    if height < 8 or width < 8:
        raise ValueError(f"synthetic scenes need at least 8x8 pixels, got {height}x{width}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = float(min(height, width))

    # Sky above a wavy horizon (vertical colour gradient), ground below (low-frequency blotches).
    horizon = height * rng.uniform(0.3, 0.65) + height * rng.uniform(0.0, 0.08) * np.sin(
        2 * math.pi * rng.uniform(0.5, 2.0) * xx[0] / width + rng.uniform(0, 2 * math.pi)
    )
    sky = yy < horizon[None, :]
    mask = np.where(sky, SKY, GROUND).astype(np.uint8)
    top = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.2, 0.7), rng.uniform(0.6, 1.0))
    bottom = _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.5), rng.uniform(0.7, 1.0))
    t = (yy / np.maximum(horizon[None, :], 1.0)).clip(0, 1)[..., None]
    image = top * (1 - t) + bottom * t
    ground_colour = _hsv(rng.uniform(0.02, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8))
    blotches = sum(
        np.sin(
            2 * math.pi * (rng.uniform(1, 4) * xx / width * math.cos(a) + rng.uniform(1, 4) * yy / height * math.sin(a))
            + rng.uniform(0, 6.3)
        )
        for a in rng.uniform(0, math.pi, size=3)
    )
    ground = ground_colour * (1.0 + 0.08 * blotches)[..., None] + rng.normal(0, 10, (height, width, 1)).astype(
        np.float32
    )
    image = np.where(sky[..., None], image, ground)

    # Every object class once plus maybe one extra, painted in random order (later ones occlude).
    classes = list(_OBJECT_HUES) + list(rng.choice(list(_OBJECT_HUES), size=rng.integers(0, 2)))
    for cls in rng.permutation(classes):
        cls = int(cls)
        cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.1, 0.95) * height
        radius = scale * rng.uniform(0.13, 0.26)
        angle = rng.uniform(0, math.pi)
        colour = _object_colour(rng, cls)
        u, v = _rotated(xx, yy, cx, cy, angle)
        if cls == DISC:  # slightly elliptic disc, lit from one side
            aspect = rng.uniform(0.8, 1.25)
            inside = (u / radius) ** 2 + (v * aspect / radius) ** 2 <= 1.0
            paint = colour * (1.0 + 0.25 * (u / radius).clip(-1, 1))[..., None]
        elif cls == BOX:  # rotated rectangle, flat colour with a darker rim
            half_w, half_h = radius * rng.uniform(0.7, 1.2), radius * rng.uniform(0.5, 1.0)
            inside = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
            rim = (np.abs(u) > half_w - 2) | (np.abs(v) > half_h - 2)
            paint = np.where(rim[..., None], colour * 0.6, colour)
        elif cls == TRIANGLE:  # random triangle around the centre, linear shading
            angles = angle + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
            px = cx + radius * 1.3 * np.cos(angles)
            py = cy + radius * 1.3 * np.sin(angles)
            signs = [
                (xx - px[i]) * (py[(i + 1) % 3] - py[i]) - (yy - py[i]) * (px[(i + 1) % 3] - px[i]) for i in range(3)
            ]
            inside = ((signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)) | (
                (signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0)
            )
            paint = colour * (1.0 + 0.2 * (v / radius).clip(-1, 1))[..., None]
        else:  # STRIPES: an elliptic blob of two-colour stripes (texture defines the class)
            aspect = rng.uniform(0.6, 1.0)
            inside = (u / (radius * 1.2)) ** 2 + (v / (radius * 1.2 * aspect)) ** 2 <= 1.0
            period = rng.uniform(3.0, 6.0)
            other = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.6), rng.uniform(0.2, 1.0))
            paint = np.where((np.sin(2 * math.pi * u / period) > 0)[..., None], colour, other)
        image = np.where(inside[..., None], paint, image)
        mask[inside] = cls

    if border_ignore:
        edge = np.zeros_like(sky)
        edge[:-1] |= mask[:-1] != mask[1:]
        edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        objects = mask >= DISC
        mask = np.where(
            edge & (objects | np.roll(objects, -1, 0) | np.roll(objects, -1, 1)), IGNORE_INDEX, mask
        ).astype(np.uint8)

    image = image * rng.uniform(0.8, 1.2) + rng.normal(0, 6, image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), mask


class SyntheticScenes(Dataset):
    """A deterministic dataset of :func:`make_scene` scenes, following the datasets' contract.

    ``dataset[i]`` is ``transforms(image, mask)``; without transforms a uint8 ``tv_tensors.Image``
    (3, H, W) and an int64 ``tv_tensors.Mask`` (H, W). Scene ``i`` depends only on ``(seed, i)``
    and ``size``, so two instances agree sample by sample.

    Args:
        num_images: dataset length.
        size: ``(height, width)`` of every scene.
        seed: base seed.
        transforms: joint transform.
        border_ignore: mark object outlines 255 (ignored).
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        num_images: int,
        size: Sequence[int] = (96, 96),
        seed: int = 0,
        transforms: Callable[[Any, Any], Any] | None = None,
        border_ignore: bool = False,
    ) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        self.num_images, self.size, self.seed = int(num_images), (int(size[0]), int(size[1])), int(seed)
        self.transforms, self.border_ignore = transforms, border_ignore
        self.classes = list(SYNTHETIC_CLASSES)
        self.palette = list(SYNTHETIC_PALETTE)
        self.files: list[tuple[Path, Path]] = []  # generated in memory, nothing on disk

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return f"SyntheticScenes(num_images={self.num_images}, size={self.size}, seed={self.seed})"

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as numpy arrays ``(image (H, W, 3) uint8, mask (H, W) uint8)``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        return make_scene(rng, self.size, self.border_ignore)

    def __getitem__(self, index: int) -> Any:
        image, mask = self.generate(index)
        image_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        mask_t = tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        if self.transforms is not None:
            return self.transforms(image_t, mask_t)
        return image_t, mask_t


def _split_counts(num_images: int, splits: Mapping[str, float]) -> dict[str, int]:
    fractions = {name: float(f) for name, f in splits.items()}
    if not fractions or any(f <= 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"splits must map names to positive fractions summing to 1, got {dict(splits)!r}")
    counts, given = {}, 0
    names = list(fractions)
    for name in names[:-1]:
        counts[name] = int(round(num_images * fractions[name]))
        given += counts[name]
    counts[names[-1]] = num_images - given
    if any(c < 1 for c in counts.values()):
        raise ValueError(f"{num_images} images are too few for splits {dict(splits)!r} (a split would be empty)")
    return counts


def write_synthetic_dataset(
    root: str | os.PathLike,
    num_images: int,
    size: Sequence[int] = (96, 96),
    seed: int = 0,
    splits: Mapping[str, float] | None = None,
    *,
    border_ignore: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write scenes in the :class:`~pspnet_lib.data.FolderDataset` layout and return ``root``.

    ``root/images/<split>/00000.png``, ``root/masks/<split>/00000.png`` (paletted: the pixel values
    are the class indices), ``classes.txt`` and ``palette.txt``. Image ``k`` is
    ``SyntheticScenes(num_images, size, seed)[k]``; splits take consecutive runs of indices.
    With ``splits=None`` everything goes flat into ``images/`` and ``masks/``.

    The tree is built in a temporary sibling directory and renamed into place, so ``root`` is
    either absent or complete. An existing non-empty ``root`` is an error unless ``overwrite``.
    """
    root = Path(root)
    counts = _split_counts(num_images, splits) if splits else {"": num_images}
    if root.exists() and not overwrite and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not empty; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    scenes = SyntheticScenes(num_images, size, seed, border_ignore=border_ignore)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would make the dataset private
    try:
        (staging / "classes.txt").write_text("\n".join(scenes.classes) + "\n", encoding="utf-8")
        (staging / "palette.txt").write_text(
            "\n".join(" ".join(map(str, c)) for c in scenes.palette) + "\n", encoding="utf-8"
        )
        index = 0
        for split, count in counts.items():
            image_dir, mask_dir = staging / "images" / split, staging / "masks" / split
            image_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            for _ in range(count):
                image, mask = scenes.generate(index)
                name = f"{index:05d}.png"
                Image.fromarray(image).save(image_dir / name)
                colorize(mask, scenes.palette).save(mask_dir / name)
                index += 1
        if root.exists():
            trash = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-"))
            os.replace(root, trash / root.name)
            os.replace(staging, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
