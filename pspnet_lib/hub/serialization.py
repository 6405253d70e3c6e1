"""Reading checkpoint files without running their code, and writing weights atomically.

``.pth`` files are pickles. They are read with ``torch.load(weights_only=True)``, which builds
tensors and plain containers only. Released checkpoints sometimes carry bookkeeping objects next
to the weights (numpy scalars in training metadata, mmengine's ``HistoryBuffer`` /
``ConfigDict``); for those, exactly the harmless types are allowed: numpy's array/scalar/dtype
reconstruction, and inert placeholders standing in for OpenMMLab classes (their state is kept
as data and no OpenMMLab code is imported or run). Anything else is refused with a message,
unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._files import atomic_output, atomic_write_bytes

__all__ = [
    "CheckpointError",
    "read_checkpoint",
    "extract_state_dict",
    "read_safetensors",
    "write_safetensors",
    "write_json",
]

logger = logging.getLogger(__name__)

#: Prefixes of the OpenMMLab packages whose bookkeeping objects may appear in checkpoint metadata.
_OPENMMLAB_PREFIXES = ("mmengine.", "mmcv.", "mmseg.", "mmcls.", "mmpretrain.", "mmdet.")

#: Fully qualified numpy globals needed to rebuild arrays, scalars and dtypes; none runs user code.
_NUMPY_NAMES = (
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)
_MAX_RETRIES = 32


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, unsafe, or not a checkpoint)."""


class OpenMMLabPlaceholder:
    """Inert stand-in for an OpenMMLab object found in checkpoint metadata.

    It keeps whatever state the pickle held as plain data and never imports or runs the
    original class.
    """

    qualified_name = "openmmlab object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}>"


def _placeholder_for(name: str) -> type:
    return type("OpenMMLabPlaceholder", (OpenMMLabPlaceholder,), {"qualified_name": name})


def _numpy_globals() -> list[tuple[Any, str]]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    out: list[tuple[Any, str]] = []
    for name in _NUMPY_NAMES:
        module_name, _, attr = name.rpartition(".")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = importlib.import_module(module_name)
            out.append((getattr(module, attr), name))
        except (ImportError, AttributeError):
            continue
    # numpy >= 1.25 pickles a dtype with its class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for attr in dir(dtypes):
            obj = getattr(dtypes, attr)
            if isinstance(obj, type) and attr.endswith("DType"):
                out.append((obj, f"numpy.dtypes.{attr}"))
    return out


def _is_allowed(name: str) -> bool:
    return name in _NUMPY_NAMES or name.startswith("numpy.dtypes.") or name.startswith(_OPENMMLAB_PREFIXES)


def _allowed_globals(names: list[str]) -> list[tuple[Any, str]]:
    allowed = _numpy_globals()
    allowed += [(_placeholder_for(n), n) for n in names if n.startswith(_OPENMMLAB_PREFIXES)]
    return allowed


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> Any:
    """Load a ``torch.save`` file onto the CPU without executing arbitrary code.

    Raises :class:`CheckpointError` naming the file for a truncated/corrupt file, and for a
    pickle that needs types outside the allowed set (listing them), unless ``trust_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if trust_pickle:
        logger.warning("loading %s with full pickle (trust_pickle=True): only do this for files you trust", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    needed: list[str] = []
    if zipfile.is_zipfile(path):
        try:
            needed = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # a damaged archive: let torch.load report it below
            needed = []
    for _ in range(_MAX_RETRIES):
        refused = [n for n in needed if not _is_allowed(n)]
        if refused:
            raise CheckpointError(
                f"refusing to unpickle {path}: it needs {', '.join(sorted(set(refused)))}, which could run "
                "arbitrary code and is not needed for the weights. If you trust this file, pass "
                "trust_pickle=True (CLI: --trust-pickle); otherwise re-save its state dict with "
                "torch.save(state_dict, ...) or safetensors."
            )
        try:
            with torch.serialization.safe_globals(_allowed_globals(needed)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = [n for n in _GLOBAL_RE.findall(str(exc)) if n not in needed]
            if not found:
                raise CheckpointError(_unreadable_message(path, exc)) from None
            needed += found
        except Exception as exc:  # the unpickler fails in many ways on damaged bytes (IndexError, EOFError, ...)
            raise CheckpointError(_unreadable_message(path, exc)) from None
    raise CheckpointError(f"cannot read checkpoint {path}: too many non-tensor types in its pickle")


def _unreadable_message(path: Path, exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {first_line}. It is not a PyTorch "
        "checkpoint, or it is truncated or corrupt (a partial download or copy: fetch it again)."
    )


def extract_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a loaded checkpoint into ``(state_dict, meta)``.

    Accepts a bare state dict or a dict holding it under ``state_dict`` / ``model`` /
    ``model_state`` / ``module`` (mmsegmentation, semseg, generic trainers). DataParallel's
    ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes are removed, EMA weights are
    preferred when present (:func:`~pspnet_lib.hub.converters.select_ema`); non-tensor entries
    are dropped. ``meta`` is the checkpoint's ``meta`` dict if any.
    """
    from .converters import select_ema

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict (a mapping of tensors)")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    state = obj
    for key in ("state_dict", "model", "model_state", "module"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = sorted(str(k) for k in obj)[:10]
        raise CheckpointError(
            f"{source} holds no tensors where weights are expected (top-level keys: {keys}); "
            "expected a state dict, or a dict with one under 'state_dict' or 'model'"
        )
    tensors = select_ema(obj, tensors, source)
    return tensors, dict(meta)


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    with atomic_output(path) as tmp:
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(contiguous, str(tmp), metadata=dict(metadata or {}))
    return path


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON via a temporary file and an atomic rename."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read safetensors file {path} ({path.stat().st_size} bytes): {exc}. "
            "The file is truncated or corrupt; delete it and create or download it again."
        ) from None
    return tensors, metadata
