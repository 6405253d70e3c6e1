"""A resumable, shardable, endless sampler for iteration-based training.

Training by iterations needs a stream of samples that never ends, splits between processes
like ``DistributedSampler`` and, to resume *exactly*, is a pure function of the position in the
stream. Each epoch's order is a permutation seeded by ``(seed, epoch)``; every drawn sample
also carries its own augmentation seed derived from ``(seed, rank, position)``, so the random
crops, flips and scales do not depend on the number of DataLoader workers or on where a run
was interrupted.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["InfiniteSampler", "SeededDataset", "mix_seed", "set_seed", "usable_workers"]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Combine integers into one well-mixed 63-bit seed (splitmix64 finaliser per value)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state & ((1 << 63) - 1)


class InfiniteSampler(Sampler):
    """Endless ``(index, sample_seed)`` pairs: shuffled epochs, sharded over processes.

    Args:
        size: dataset length.
        shuffle: permute each epoch (seeded by ``(seed, epoch)``, identical on every rank).
        seed: base seed of the run.
        rank, world_size: this process's shard: like ``DistributedSampler``, each epoch is
            padded (by repeating its start) to a multiple of ``world_size`` and rank ``r`` takes
            positions ``r, r + world_size, ...``.
        start: how many samples this rank has already drawn (to resume mid-epoch).

    Use it with :class:`SeededDataset`, which applies the sample seed around ``dataset[index]``.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.size = size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.start = int(start)
        self.per_rank = -(-size // world_size)  # each rank's share of one padded epoch

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        padded = self.per_rank * self.world_size
        order = (order * (padded // self.size + 1))[:padded]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch, offset = divmod(position, self.per_rank)
        while True:
            indices = self.epoch_indices(epoch)
            for index in indices[offset:]:
                yield index, mix_seed(self.seed, self.rank, position, 1)
                position += 1
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only asks for it in len(loader)
        raise TypeError("InfiniteSampler is endless and has no length")


class SeededDataset(Dataset):
    """Wraps a dataset so that ``self[(index, seed)]`` runs ``dataset[index]`` with all RNGs seeded by ``seed``.

    The process's torch (CPU), NumPy and Python RNG states are restored afterwards, so sampling
    does not disturb the training loop's own randomness (dropout) when loading runs in the main
    process.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        # map-style datasets define __len__; torch's Dataset type does not declare it
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. during unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch_state = torch.get_rng_state()
        numpy_state = np.random.get_state()
        python_state = random.getstate()
        try:
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % (1 << 32))
            random.seed(seed)
            return self.dataset[index]
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    Call it before building the model (and before anything else that draws random numbers): the
    :class:`Trainer` re-seeds its own streams from ``TrainConfig.seed`` when ``fit()`` starts, but
    the initial weights of a model built from scratch come from the global RNG at build time.
    ``pspnet train --seed N`` does this first.
    """
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def usable_workers(requested: int) -> int:
    """``requested`` DataLoader workers, at most one per CPU this process may run on.

    More workers than CPUs only add processes (torch warns about it on every loader); the data
    order and augmentation do not depend on the worker count (each sample is seeded by its index).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))
