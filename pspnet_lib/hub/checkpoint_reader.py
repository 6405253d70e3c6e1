"""Reading checkpoint files without running their code: ``torch.save`` pickles and safetensors.

``.pth`` files are pickles. They are read with torch's ``weights_only`` unpickler, which builds
tensors and plain containers only, plus an allow-list that this library controls completely: the
inert stand-ins of :mod:`pspnet_lib.hub.pickle_standins` for numpy values and OpenMMLab
bookkeeping objects.

The globals a file needs are collected in one pass over its pickle opcodes (both the zip and
the legacy ``_use_new_zipfile_serialization=False`` layout) before anything is unpickled; a
file that needs anything else is refused with a message naming those globals and the opt-in
(``trust_pickle=True``, CLI ``--trust-pickle``).

This is the only module of the library that calls ``torch.load``.
"""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open

from .pickle_standins import finalize, recording, stand_in, torch_allows

__all__ = ["CheckpointError", "check_is_file", "pickle_globals", "read_checkpoint", "read_safetensors"]

logger = logging.getLogger(__name__)

#: A pickle record this large is not metadata; refusing it bounds the memory of the globals scan.
_MAX_PICKLE_BYTES = 1 << 30
#: torch's legacy (non-zip) layout: magic number, protocol, sys info, the object, storage keys.
_LEGACY_PICKLES = 5

#: Serialises loads: torch's safe-globals list and the stand-ins' records are process-wide.
_LOAD_LOCK = threading.RLock()


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, unsafe, or not a checkpoint)."""


def _global_name(arg: str) -> str:
    """``"module name"`` of a GLOBAL opcode as torch's unpickler resolves it (Python 2 names mapped)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    module, _, name = arg.partition(" ")
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _scan(stream: IO[bytes], found: set[str]) -> None:
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            found.add(_global_name(str(arg)))  # these opcodes' argument is always "module name"
        elif opcode.name == "STACK_GLOBAL":  # protocol 4: the name is on the stack; torch refuses it anyway
            found.add("<STACK_GLOBAL (pickle protocol 4+)>")


def pickle_globals(path: str | os.PathLike[str]) -> set[str]:
    """Every global a ``torch.save`` file refers to, in one pass over its pickle opcodes (nothing unpickled).

    Reads ``<archive>/data.pkl`` of the zip layout, or the consecutive pickles of the legacy
    layout. Raises ``ValueError`` (from ``pickletools``) or ``EOFError`` on bytes that are no pickle.
    """
    path = Path(path)
    found: set[str] = set()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = [i for i in archive.infolist() if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
            if not records:
                raise ValueError("a zip archive without data.pkl")
            for info in records:
                if info.file_size > _MAX_PICKLE_BYTES:
                    raise ValueError(
                        f"its pickle record {info.filename} is {info.file_size} bytes, far beyond any checkpoint's"
                    )
                with archive.open(info) as stream:
                    _scan(stream, found)
        return found
    with open(path, "rb") as stream:
        for _ in range(_LEGACY_PICKLES):
            _scan(stream, found)
    return found


_OPT_IN = "If you trust this file, pass trust_pickle=True (CLI: --trust-pickle)"


def _refusal(path: Path, refused: list[str], opt_in: str) -> str:
    shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
    return (
        f"refusing to unpickle {path}: it needs {shown}, which could run arbitrary code and is not needed for the "
        f"weights. {opt_in}; otherwise re-save its state dict with torch.save(state_dict, ...) or as safetensors."
    )


def _reason(exc: BaseException) -> str:
    """The useful part of an unpickling error, never torch's advice to drop ``weights_only``."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "safe_globals" not in line]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _unreadable_message(path: Path, exc: BaseException | str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError:
        head = b""
    reason = exc if isinstance(exc, str) else _reason(exc)
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        what = "It is an HTML/XML page (an error or login page saved under this name), not a checkpoint: fetch the file itself."
    else:
        what = (
            "It is not a PyTorch checkpoint, or it is truncated or corrupt (a partial download or copy: fetch it "
            "again)."
        )
    return f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {reason}. {what}"


def check_is_file(path: Path, what: str = "checkpoint file") -> None:
    """Raise a one-line error naming ``path`` unless it is a regular file (``what`` names the kind)."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a regular file (a device, pipe or socket); pass a file")


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
    opt_in: str = _OPT_IN,
) -> Any:
    """Load a ``torch.save`` file without executing code from it.

    Only tensors, plain containers and scalars come back, plus numpy arrays rebuilt from plain
    numeric bytes, :class:`OpenMMLabPlaceholder` mappings and :class:`InertObject` markers (see
    :mod:`pspnet_lib.hub.pickle_standins`). ``trust_pickle=True`` uses full pickle (code in the file runs).

    Raises:
        FileNotFoundError / IsADirectoryError: ``path`` is missing or a folder.
        CheckpointError: naming the file for bytes that are no checkpoint (truncated, corrupt,
            an HTML page), and for a pickle that needs globals outside the allow-list (listing
            them, with ``opt_in``: by default the ``trust_pickle=True`` / ``--trust-pickle`` opt-in).
    """
    path = Path(path)
    check_is_file(path)
    if trust_pickle:
        logger.warning("loading %s with full pickle (trust_pickle=True): only do this for files you trust", path)
        try:
            return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap or None)
        except Exception as exc:
            raise CheckpointError(_unreadable_message(path, exc)) from None
    try:
        needed = pickle_globals(path)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, IndexError, KeyError, RuntimeError) as exc:
        raise CheckpointError(_unreadable_message(path, exc if str(exc) else "not a pickle")) from None
    refused = sorted(n for n in needed if stand_in(n) is None and not torch_allows(n))
    if refused:
        raise CheckpointError(_refusal(path, refused, opt_in))
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
    for name in needed:
        obj = stand_in(name)
        if obj is not None:
            allowed.append((obj, name))
    with _LOAD_LOCK:
        # Exactly this allow-list: globals added elsewhere in the process (add_safe_globals) could
        # rebind the numpy names to the real, unsafe classes.
        previous = torch.serialization.get_safe_globals()
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(allowed)
        try:
            with recording():
                loaded = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
                return finalize(loaded)
        except RecursionError:
            raise CheckpointError(f"cannot read checkpoint {path}: its metadata is nested too deeply") from None
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"refusing to unpickle {path}: {_reason(exc)}. Weights files need only tensors and plain containers. "
                f"{opt_in}."
            ) from None
        except Exception as exc:  # the unpickler fails in many ways on damaged bytes (IndexError, EOFError, ...)
            raise CheckpointError(_unreadable_message(path, exc)) from None
        finally:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(previous)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    check_is_file(path, "safetensors file")
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
