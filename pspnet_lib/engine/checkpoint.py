"""Crash-safe training checkpoints: atomic writes, ``latest.pt``/``best.pt`` and keep-last-K rotation.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed
over its final name (``os.replace`` is atomic on POSIX and Windows), so a run killed at any
moment leaves either the previous complete file or the new complete file, never a torn one.
``latest.pt`` and ``best.pt`` are hard links to the numbered files (copies where the file system
has no hard links), so each is itself a complete checkpoint that ``torch.load`` reads.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_save, atomic_write_bytes, fsync_dir

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_link",
    "load_checkpoint",
    "find_resume_checkpoint",
    "rotate_checkpoints",
    "get_rng_state",
    "set_rng_state",
    "checkpoint_name",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pspnet_lib.train_checkpoint"
_NUMBERED = re.compile(r"^iter_(\d+)\.pt$")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_link(source: str | os.PathLike, link: str | os.PathLike) -> None:
    """Make ``link`` name the same complete file as ``source`` (hard link, or a copy), atomically."""
    source, link = Path(source), Path(link)
    tmp = _temp_path(link)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network / FAT file systems): copy instead
            shutil.copyfile(source, tmp)
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(link.parent)


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}.pt"


def rotate_checkpoints(directory: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``iter_*.pt`` files; returns what was removed.

    ``latest.pt``/``best.pt`` are separate links and survive the removal of the file they share.
    Stale temporary files of killed runs are removed too.
    """
    directory = Path(directory)
    numbered = sorted(
        (int(m.group(1)), p) for p in directory.glob("iter_*.pt") if (m := _NUMBERED.match(p.name))
    )
    removed = []
    if keep_last > 0:
        for _, path in numbered[:-keep_last]:
            path.unlink(missing_ok=True)
            removed.append(path)
    for tmp in directory.glob(".*.tmp*"):  # left by a killed writer (atomic_output, atomic_link)
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid != str(os.getpid()):
            tmp.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint safely and check that it is one.

    Read through :func:`pspnet_lib.hub.serialization.read_checkpoint` (tensors and plain data
    only); a torn, foreign or unsafe file raises :class:`~pspnet_lib.hub.CheckpointError`
    naming it.
    """
    from ..hub.serialization import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # No opt-in to full pickle here: a training checkpoint holds tensors and plain data only.
    state = read_checkpoint(path, map_location=map_location, opt_in="pspnet train never writes such objects: resume only from its own checkpoints")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a pspnet_lib training checkpoint (to start from pretrained weights use "
            "--weights / load_pretrained instead of resume)"
        )
    return state


def find_resume_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from in a run directory: ``latest.pt``, else the newest ``iter_*.pt``."""
    directory = Path(out_dir) / "checkpoints"
    latest = directory / "latest.pt"
    if latest.is_file():
        return latest
    numbered = sorted(
        (int(m.group(1)), p) for p in directory.glob("iter_*.pt") if (m := _NUMBERED.match(p.name))
    )
    return numbered[-1][1] if numbered else None


def get_rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    python = state["python"]
    random.setstate((python[-1], tuple(python[:-1]), state["python_gauss"]))
