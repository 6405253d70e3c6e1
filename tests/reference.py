"""The reference recipe of tests/data/reference/README.md: seeded weights in another project's layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"
CASES = ("mmseg_r50_d8", "mmseg_r18_d8", "semseg_psp50")


def load_case(name: str) -> dict:
    folder = REFERENCE_DIR / name
    return {
        "meta": json.loads((folder / "meta.json").read_text()),
        "keys": json.loads((folder / "keys.json").read_text()),
        "input": torch.from_numpy(np.load(folder / "input.npy")),
        "out": np.load(folder / "out.npy"),
        "aux": np.load(folder / "aux.npy"),
    }


def reference_state_dict(keys: list, seed: int) -> dict[str, torch.Tensor]:
    """Fill every entry of ``keys.json`` in order, exactly as the reference outputs were made."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape, _ in keys:
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(0, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = 0.5 + torch.rand(shape, generator=g)
        elif name.endswith("running_mean"):
            sd[name] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and name.endswith("weight"):
            sd[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[name] = 0.1 * torch.randn(shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g) * math.sqrt(1 / math.prod(shape[1:]))
    return sd


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())
