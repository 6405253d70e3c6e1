"""Timing of alternative implementations, for the choices the fast path makes by measurement."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["time_candidates"]


def time_candidates(
    fns: Sequence[Callable[[], object]], repeats: int = 3, device: torch.device | None = None
) -> list[float]:
    """Best-of-``repeats`` seconds of each zero-argument function, interleaved so load affects all alike."""
    cuda = device is not None and device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for fn in fns:  # warm-up: first calls allocate, pick kernels, reorder weights
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best
