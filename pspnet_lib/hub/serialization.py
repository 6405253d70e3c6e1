"""Checkpoint files in and out: the state dict inside a checkpoint, and atomic weight/JSON writes.

This is also the hub's one import point for reading checkpoints; the readers live in
:mod:`pspnet_lib.hub.checkpoint_reader` (``torch.save`` pickles read without running their code,
safetensors) and :mod:`pspnet_lib.hub.pickle_standins` (the inert stand-ins for numpy values and
OpenMMLab objects in a pickle), and are re-exported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_save_safetensors, atomic_write_bytes
from ..core.digest import DIGEST_KEY, content_digest
from ..core.escape import printable
from .checkpoint_reader import CheckpointError, pickle_globals, read_checkpoint, read_safetensors
from .converters import select_ema
from .pickle_standins import InertObject, OpenMMLabPlaceholder

__all__ = [
    "CheckpointError",
    "check_content_digest",
    "InertObject",
    "OpenMMLabPlaceholder",
    "read_checkpoint",
    "pickle_globals",
    "extract_state_dict",
    "read_safetensors",
    "write_safetensors",
    "write_json",
]


def extract_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a loaded checkpoint into ``(state_dict, meta)``.

    Accepts a bare state dict or a dict holding it under ``state_dict`` / ``model`` /
    ``model_state`` / ``module`` (mmsegmentation, semseg, generic trainers). DataParallel's
    ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes are removed, EMA weights are
    preferred when present (:func:`~pspnet_lib.hub.converters.select_ema`); non-tensor entries
    are dropped. ``meta`` is the checkpoint's ``meta`` dict if any.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict (a mapping of tensors)")
    raw_meta = obj.get("meta")
    meta: dict[str, Any] = dict(raw_meta) if isinstance(raw_meta, Mapping) else {}
    state = obj
    for key in ("state_dict", "model", "model_state", "module"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = [printable(k, 60) for k in sorted(str(k)[:200] for k in obj)[:10]]
        raise CheckpointError(
            f"{source} holds no tensors where weights are expected (top-level keys: {keys}); "
            "expected a state dict, or a dict with one under 'state_dict' or 'model'"
        )
    tensors = select_ema(obj, tensors, source)
    return tensors, meta


def check_content_digest(state: Mapping[str, Any], source: str) -> bool:
    """Verify the content digest a Trainer checkpoint records (:data:`~pspnet_lib.core.digest.DIGEST_KEY`).

    Returns True when it matches, False for a checkpoint that records none (written before
    pspnet_lib 0.3). Raises :class:`CheckpointError` naming ``source`` when the content read differs
    from what was written (bytes changed after the write: a disk error, a bad copy, an edit).
    """
    recorded = state.get(DIGEST_KEY)
    if recorded is None:
        return False
    actual = content_digest({k: v for k, v in state.items() if k != DIGEST_KEY})
    if actual != recorded:
        raise CheckpointError(
            f"{source} is damaged: its content (sha256 {actual[:16]}...) differs from the digest recorded when it "
            f"was written ({str(recorded)[:16]}...); use an earlier checkpoint of the run"
        )
    return True


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` via a temporary file and an atomic rename.

    The header is written with sorted keys, so equal tensors and metadata give equal bytes (and
    equal checksums in the cache's records).
    """
    path = Path(path)
    atomic_save_safetensors(dict(tensors), path, dict(metadata) if metadata else None)
    return path


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON via a temporary file and an atomic rename."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path
