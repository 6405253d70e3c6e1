"""Reading checkpoint files without running their code: ``torch.save`` pickles and safetensors.

``.pth`` files are pickles. The library opens the file once and reads it itself
(:mod:`~pspnet_lib.hub.checkpoint_archive`: the zip layout or the legacy one, ambiguous archives
refused, sizes checked before anything is read or inflated); the pickle bytes it found are
followed opcode by opcode (:mod:`~pspnet_lib.hub.pickle_scan`: every global, every storage,
every call and its cost) and then exactly those bytes are unpickled with torch's ``weights_only``
unpickler, which builds tensors and plain containers only, plus an allow-list that this library
controls completely: the inert stand-ins of :mod:`pspnet_lib.hub.pickle_standins` for numpy
values and OpenMMLab bookkeeping objects. A file that needs any other global is refused with a
message naming those globals and the opt-in (``trust_pickle=True``, CLI ``--trust-pickle``).

This is the only module of the library that calls ``torch.load`` (for ``trust_pickle=True`` only).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..core.limits import ResourceLimitError
from .checkpoint_archive import ArchiveError, CheckpointArchive, check_legacy_header, open_checkpoint
from .pickle_scan import UnsafePickleError
from .pickle_standins import finalize, recording, stand_in, torch_allows
from .pickle_tree import check_tree

__all__ = ["CheckpointError", "check_is_file", "pickle_globals", "read_checkpoint", "read_safetensors"]

logger = logging.getLogger(__name__)

#: Serialises loads: torch's safe-globals list and the stand-ins' records are process-wide.
_LOAD_LOCK = threading.RLock()


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, unsafe, too costly, or not a checkpoint)."""


def pickle_globals(path: str | os.PathLike[str]) -> set[str]:
    """Every global a ``torch.save`` file refers to, from the same scan :func:`read_checkpoint` makes
    (nothing unpickled): ``<archive>/data.pkl`` of the zip layout, or the pickles of the legacy layout.

    Raises :class:`CheckpointError` (a ``ValueError``) for a file this reader does not accept.
    """
    path = Path(path)
    check_is_file(path)
    with open(path, "rb") as file:
        return set(_open(file, path, _OPT_IN).scan.globals)


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


def _open(file: Any, path: Path, opt_in: str) -> CheckpointArchive:
    """The archive of ``file`` with its pickles scanned, every failure a one-line :class:`CheckpointError`."""
    try:
        return open_checkpoint(file)
    except ResourceLimitError as exc:
        raise CheckpointError(f"refusing to read {path}: {exc}") from None
    except UnsafePickleError as exc:
        raise CheckpointError(
            f"refusing to unpickle {path}: {exc}. Weights files need only tensors and plain containers. {opt_in}."
        ) from None
    except ArchiveError as exc:
        raise CheckpointError(_unreadable_message(path, str(exc).rstrip("."))) from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, RecursionError) as exc:
        raise CheckpointError(_unreadable_message(path, exc if str(exc) else "not a pickle")) from None


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    map_location: str | torch.device = "cpu",
    opt_in: str = _OPT_IN,
) -> Any:
    """Load a ``torch.save`` file without executing code from it, within the limits of :mod:`pspnet_lib.core.limits`.

    Only tensors, plain containers and scalars come back, plus numpy arrays rebuilt from plain
    numeric bytes, :class:`OpenMMLabPlaceholder` mappings and :class:`InertObject` markers (see
    :mod:`pspnet_lib.hub.pickle_standins`). Tensors are read onto the CPU, then moved to
    ``map_location``. ``trust_pickle=True`` uses full pickle (``torch.load(weights_only=False)``:
    code in the file runs, and none of the checks below apply).

    Raises:
        FileNotFoundError / IsADirectoryError: ``path`` is missing or a folder.
        CheckpointError: naming the file for bytes that are no checkpoint (truncated, corrupt,
            an HTML page, an ambiguous archive), a pickle that needs globals outside the allow-list
            (listing them, with ``opt_in``: by default the ``trust_pickle=True`` / ``--trust-pickle``
            opt-in) or constructs a weights file never needs, and a file that would exceed a limit
            (naming it and the environment variable that raises it).
    """
    path = Path(path)
    check_is_file(path)
    if trust_pickle:
        logger.warning("loading %s with full pickle (trust_pickle=True): only do this for files you trust", path)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CheckpointError(_unreadable_message(path, exc)) from None
    with open(path, "rb") as file:
        archive = _open(file, path, opt_in)
        refused = sorted(n for n in archive.scan.globals if stand_in(n) is None and not torch_allows(n))
        if refused:
            raise CheckpointError(_refusal(path, refused, opt_in))
        allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
        for name in archive.scan.globals:
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
                    loaded = _load(archive, path)
                    check_tree(loaded, "its metadata")
                    loaded = finalize(loaded)
            except (ResourceLimitError, UnsafePickleError) as exc:
                raise CheckpointError(f"refusing to read {path}: {exc}") from None
            except ArchiveError as exc:
                raise CheckpointError(_unreadable_message(path, str(exc).rstrip("."))) from None
            except RecursionError:
                raise CheckpointError(f"cannot read checkpoint {path}: its metadata is nested too deeply") from None
            except pickle.UnpicklingError as exc:
                raise CheckpointError(
                    f"refusing to unpickle {path}: {_reason(exc)}. Weights files need only tensors and plain "
                    f"containers. {opt_in}."
                ) from None
            except Exception as exc:  # the unpickler fails in many ways on damaged bytes (IndexError, EOFError, ...)
                raise CheckpointError(_unreadable_message(path, exc)) from None
            finally:
                torch.serialization.clear_safe_globals()
                torch.serialization.add_safe_globals(previous)
    if torch.device(map_location).type != "cpu":
        loaded = _to_device(loaded, torch.device(map_location))
    return loaded


def _unpickle(data: bytes, storages: dict[str, torch.UntypedStorage] | None = None) -> Any:
    """Exactly ``data``, through torch's ``weights_only`` unpickler; storages come from ``storages``."""
    from torch._weights_only_unpickler import Unpickler

    typed: dict[tuple[str, torch.dtype], torch.storage.TypedStorage] = {}

    def persistent_load(pid: Any) -> torch.storage.TypedStorage:
        key = pid[2].decode("ascii") if isinstance(pid[2], bytes) else str(pid[2])
        kind = pid[1]
        dtype = torch.uint8 if kind is torch.UntypedStorage else kind.dtype
        if storages is None or key not in storages:
            raise pickle.UnpicklingError(f"storage {key!r} was not declared")  # the scan makes this unreachable
        if (key, dtype) not in typed:
            typed[key, dtype] = torch.storage.TypedStorage(wrap_storage=storages[key], dtype=dtype, _internal=True)
        return typed[key, dtype]

    unpickler = Unpickler(io.BytesIO(data), encoding="utf-8")
    unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    return unpickler.load()


def _load(archive: CheckpointArchive, path: Path) -> Any:
    """The object of an opened, scanned archive: its storages read (checked first), then its pickle."""
    declared = archive.scan.storages
    keys: list[str] | None = None
    big_endian = False
    if archive.layout == "legacy":
        magic, protocol, sys_info = (_unpickle(data) for data in archive.pickles[:3])
        check_legacy_header([magic, protocol])
        keys = _unpickle(archive.pickles[4])
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise ArchiveError("its storage-key list is not a list of strings")
        big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    else:
        big_endian = archive.byteorder() == "big"
    archive.check_storages(declared, keys)
    storages = archive.read_storages(declared, keys)
    if big_endian != (sys.byteorder == "big"):
        for key, storage in storages.items():
            storage.byteswap(declared[key].dtype)
    return _unpickle(archive.pickles[archive.main], storages)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _to_device(value, device)
        return obj
    if isinstance(obj, list):
        obj[:] = [_to_device(v, device) for v in obj]
        return obj
    if type(obj) is tuple:
        return tuple(_to_device(v, device) for v in obj)
    return obj


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear :class:`CheckpointError` if it is damaged.

    The tensors are read now, each into memory of its own: ``safe_open`` maps the file, and a
    tensor left on the mapping would change with the file (and crash the process if it were cut
    short) for as long as it lives, and keep the file open (undeletable on Windows). A loaded model
    holds these tensors (``pspnet_lib.hub.load_report.build_loaded``), so the bytes read (and
    verified) here are the model's.
    """
    path = Path(path)
    check_is_file(path, "safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).clone(memory_format=torch.contiguous_format) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot read safetensors file {path} ({path.stat().st_size} bytes): {exc}. "
            "The file is truncated or corrupt; delete it and create or download it again."
        ) from None
    return tensors, metadata
