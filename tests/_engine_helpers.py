"""Tiny generated segmentation data and models for the training tests (no files, no network)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from pspnet_lib import build_pspnet

#: Class colours of :class:`ColourBlocks` (0 is the textured background).
COLOURS = torch.tensor([[0, 0, 0], [220, 40, 40], [40, 200, 60], [50, 70, 230]], dtype=torch.float32)


class ColourBlocks(Dataset):
    """Images with a noisy background and coloured rectangles; the mask is each rectangle's class.

    Deterministic per index; ``augment`` adds a random horizontal flip drawn from the global
    torch RNG (what the trainer's per-sample seeding must make reproducible). A few pixels on
    the first rectangle's border are marked 255 (ignored).
    """

    classes = ("background", "red", "green", "blue")
    palette = [(0, 0, 0), (220, 40, 40), (40, 200, 60), (50, 70, 230)]
    ignore_index = 255
    num_classes = 4

    def __init__(self, length: int = 16, size: int = 32, seed: int = 0, augment: bool = True) -> None:
        self.length, self.size, self.seed, self.augment = length, size, seed, augment

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        s = self.size
        image = 90 + 60 * torch.rand(3, s, s, generator=g)
        mask = torch.zeros(s, s, dtype=torch.int64)
        for k in range(3):
            cls = int(torch.randint(1, 4, (1,), generator=g))
            h, w = (int(v) for v in torch.randint(s // 4, s // 2 + 1, (2,), generator=g))
            y, x = (int(v) for v in torch.randint(0, s - s // 4, (2,), generator=g))
            colour = COLOURS[cls].view(3, 1, 1) + 25 * torch.randn(3, 1, 1, generator=g)
            image[:, y : y + h, x : x + w] = colour + 15 * torch.randn(3, min(h, s - y), min(w, s - x), generator=g)
            mask[y : y + h, x : x + w] = cls
            if k == 0:
                mask[y, x : x + w] = 255
        image = image.clamp(0, 255).to(torch.uint8)
        if self.augment and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def tiny_pspnet(num_classes: int = 4, **overrides):
    """The smallest sensible PSPNet: resnet18, narrow heads."""
    options = dict(head_channels=32, aux_channels=16, ppm_channels=8, stem="standard")
    options.update(overrides)
    return build_pspnet("resnet18", num_classes, **options)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: on a shared, busy machine two threads spend most of
    their time waiting for each other (measured 10-20x slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ColourGrid(Dataset):
    """Images made of 8x8 cells, each a noisy colour of its random class (0..3).

    The cells line up with PSPNet's output stride of 8, so a network that learns can score
    nearly every pixel right; the noise keeps single pixels ambiguous.
    """

    classes = ColourBlocks.classes
    palette = ColourBlocks.palette
    ignore_index = 255
    num_classes = 4

    def __init__(self, length: int = 16, cells: int = 4, seed: int = 0) -> None:
        self.length, self.cells, self.seed = length, cells, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        labels = torch.randint(0, 4, (self.cells, self.cells), generator=g)
        colours = torch.cat([torch.full((1, 3), 120.0), COLOURS[1:]])[labels].permute(2, 0, 1)
        colours = colours + 30 * torch.randn(3, self.cells, self.cells, generator=g)
        image = colours.repeat_interleave(8, 1).repeat_interleave(8, 2)
        image = image + 25 * torch.randn(image.shape, generator=g)
        mask = labels.repeat_interleave(8, 0).repeat_interleave(8, 1)
        return image.clamp(0, 255).to(torch.uint8), mask
