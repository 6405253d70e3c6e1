"""Reading checkpoint files without running their code, and writing weights atomically.

``.pth`` files are pickles. They are read with torch's ``weights_only`` unpickler, which builds
tensors and plain containers only, plus an allow-list that this module controls completely:

* numpy arrays and scalars, which training metadata often holds (``np.float64`` metrics,
  ``int64`` arrays), are *not* rebuilt by numpy's own pickle machinery (``dtype.__setstate__``
  / ``ndarray.__setstate__`` can be steered by a file into forging object pointers). The numpy
  global names are bound to inert stand-ins of this module that only record what the file says;
  afterwards a restricted rebuild accepts plain numeric/bool dtypes only (no fields, no object
  dtype, no subarrays, no flags), checks that the byte count equals ``prod(shape) * itemsize``
  and builds the value with ``np.frombuffer(...).copy()`` (scalars become Python numbers).
  Anything else becomes an :class:`InertObject` naming what it was.
* OpenMMLab bookkeeping objects (mmengine's ``HistoryBuffer``, ``ConfigDict``, ...) become
  :class:`OpenMMLabPlaceholder` mappings: their items and state are kept as data, and no
  OpenMMLab code is imported or run.

The globals a file needs are collected in one pass over its pickle opcodes (both the zip and
the legacy ``_use_new_zipfile_serialization=False`` layout) before anything is unpickled; a
file that needs anything else is refused with a message naming those globals and the opt-in
(``trust_pickle=True``, CLI ``--trust-pickle``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import pickletools
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from .._files import atomic_save_safetensors, atomic_write_bytes

__all__ = [
    "CheckpointError",
    "InertObject",
    "OpenMMLabPlaceholder",
    "read_checkpoint",
    "pickle_globals",
    "extract_state_dict",
    "read_safetensors",
    "write_safetensors",
    "write_json",
]

logger = logging.getLogger(__name__)

#: Prefixes of the OpenMMLab packages whose bookkeeping objects may appear in checkpoint metadata.
_OPENMMLAB_PREFIXES = ("mmengine.", "mmcv.", "mmseg.", "mmcls.", "mmpretrain.", "mmdet.", "addict.")

#: numpy's pickle entry points (numpy 1.x and 2.x spellings); each is bound to an inert stand-in.
_RECONSTRUCT_NAMES = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_NDARRAY_NAME = "numpy.ndarray"
_DTYPE_NAME = "numpy.dtype"

#: The dtypes a numpy value in metadata may have: booleans and fixed-size numbers.
_PLAIN_DTYPES = frozenset(["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"])
#: A pickle record this large is not metadata; refusing it bounds the memory of the globals scan.
_MAX_PICKLE_BYTES = 1 << 30
#: torch's legacy (non-zip) layout: magic number, protocol, sys info, the object, storage keys.
_LEGACY_PICKLES = 5


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (corrupt, truncated, unsafe, or not a checkpoint)."""


class InertObject:
    """What a pickled value became because it could not be rebuilt safely.

    Attributes:
        kind: what the file described (e.g. ``"numpy array"``).
        reason: why it was not rebuilt (e.g. ``"dtype with fields"``).
    """

    __slots__ = ("kind", "reason")

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason

    def __repr__(self) -> str:
        return f"<inert {self.kind}: {self.reason}>"


class OpenMMLabPlaceholder(dict):
    """Inert stand-in for an OpenMMLab object found in checkpoint metadata.

    A plain ``dict`` subclass: the items the pickle held (for dict-like objects such as an older
    ``ConfigDict``) are its items; ``state`` is the attribute dict it held (e.g. a
    ``HistoryBuffer``'s history), ``args`` its constructor arguments. The original class is
    never imported or run.
    """

    def __init__(self, qualified_name: str, items: Mapping = (), *, state: Any = None, args: tuple = ()) -> None:
        super().__init__(items)
        self.qualified_name = qualified_name
        self.state = state
        self.args = args

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}: {dict.__repr__(self)}>"


# --- inert stand-ins bound to numpy's and OpenMMLab's global names while unpickling ---
#
# torch's weights_only unpickler calls ``cls.__new__(cls, *args)`` for NEWOBJ, ``f(*args)`` for
# REDUCE and ``obj.__setstate__(state)`` for BUILD on allowed globals. The stand-ins only record
# plain data there; :func:`_finalize` turns the records into values after unpickling.

_LOAD_LOCK = threading.RLock()
_records: list[tuple[OrderedDict, str, tuple]] | None = None  # OpenMMLab objects made by the current load


class _Record:
    """Records the arguments (NEWOBJ/REDUCE) and state (BUILD) the unpickler hands over; runs nothing."""

    __slots__ = ("args", "state")

    def __new__(cls, *args: Any) -> _Record:
        self = object.__new__(cls)
        self.args = args
        self.state = None
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DTypeRecord(_Record):
    """Bound to ``numpy.dtype``: records ``dtype(spec, align, copy)`` and its state."""

    __slots__ = ()

    def plain(self) -> tuple[np.dtype | None, str]:
        """``(dtype, "")`` for a plain numeric/bool dtype, else ``(None, reason)``."""
        args = self.args
        if not (1 <= len(args) <= 3 and isinstance(args[0], str)):
            return None, "malformed dtype"
        code = args[0]
        if code not in _PLAIN_DTYPES:
            return None, f"dtype {code!r} is not a plain number or bool"
        state = self.state
        if state is None:
            order = "="
        else:
            # numpy's plain state: (version 3, byte order, subarray, names, fields, elsize, alignment, flags)
            if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3):
                return None, f"dtype {code!r} with an unusual state"
            _, order, subarray, names, fields, elsize, alignment, flags = state
            if subarray is not None or names is not None or fields is not None:
                return None, f"dtype {code!r} with fields or a subarray"
            if elsize != -1 or alignment != -1 or flags != 0:
                return None, f"dtype {code!r} with unusual flags"
            if order not in ("<", ">", "|", "="):
                return None, f"dtype {code!r} with byte order {order!r}"
        dtype = np.dtype(code)
        if order in ("<", ">"):
            dtype = dtype.newbyteorder(order)
        return dtype, ""


def _as_bytes(data: Any) -> bytes | None:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # a Python 2 pickle's byte string
        try:
            return data.encode("latin1")
        except UnicodeEncodeError:
            return None
    return None


def _inert_scalar(dtype: Any = None, data: Any = None, *rest: Any) -> Any:
    """Bound to ``numpy...multiarray.scalar``: a Python number from plain bytes, else an :class:`InertObject`."""
    if rest or not isinstance(dtype, _DTypeRecord):
        return InertObject("numpy scalar", "malformed scalar")
    plain, reason = dtype.plain()
    raw = _as_bytes(data)
    if plain is None:
        return InertObject("numpy scalar", reason)
    if raw is None or len(raw) != plain.itemsize:
        return InertObject("numpy scalar", f"{len(raw) if raw is not None else 'no'} bytes for a {plain} scalar")
    return np.frombuffer(raw, dtype=plain)[0].item()


def _inert_bytes(*args: Any) -> bytes | InertObject:
    """Bound to ``builtins.bytes`` (protocol 2 pickles ``b""`` as ``bytes()``); never ``bytes(n)``, which allocates n bytes."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    return InertObject("bytes", "not built from bytes")


class _ArrayRecord(_Record):
    """Bound to ``numpy.ndarray`` and returned by ``_reconstruct``: records an array's state."""

    __slots__ = ()

    def rebuild(self) -> np.ndarray | InertObject:
        state = self.state
        # ndarray state: (version 1, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            return InertObject("numpy array", "malformed array state")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and all(type(s) is int and s >= 0 for s in shape) and len(shape) <= 32):
            return InertObject("numpy array", f"malformed shape {shape!r}"[:80])
        if not isinstance(dtype, _DTypeRecord) or not isinstance(fortran, bool):
            return InertObject("numpy array", "malformed array state")
        plain, reason = dtype.plain()
        if plain is None:
            return InertObject("numpy array", reason)
        raw = _as_bytes(data)
        expected = math.prod(shape) * plain.itemsize
        if raw is None or len(raw) != expected:
            got = "no" if raw is None else len(raw)
            return InertObject("numpy array", f"{got} bytes for a {list(shape)} {plain} array ({expected} expected)")
        return np.frombuffer(raw, dtype=plain).reshape(shape, order="F" if fortran else "C").copy()


def _inert_reconstruct(subtype: Any = None, *args: Any) -> _ArrayRecord:
    """Bound to ``numpy...multiarray._reconstruct``: an empty record that the following BUILD fills."""
    record = _ArrayRecord.__new__(_ArrayRecord)
    if subtype is not _ArrayRecord:  # ndarray subclasses (np.matrix, masked arrays...) are not metadata
        record.args = ("subclass",)
    return record


class _OpenMMLabStandIn:
    """Base of the classes bound to OpenMMLab names: instances are recorded plain ``OrderedDict``s.

    An ``OrderedDict`` is what torch's unpickler lets a BUILD (attribute state) and a SETITEMS
    (dict items, e.g. an older ``ConfigDict``) write into; :func:`_finalize` then turns each
    record into an :class:`OpenMMLabPlaceholder`.
    """

    qualified_name = "openmmlab object"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - see the class docstring
        obj: OrderedDict = OrderedDict()
        if _records is not None:
            _records.append((obj, cls.qualified_name, args))
        return obj


def _stand_in_for(name: str) -> type:
    return type("OpenMMLabStandIn", (_OpenMMLabStandIn,), {"qualified_name": name})


def _stand_in(name: str) -> Any | None:
    """The inert object bound to global ``name``, or None when ``name`` is not allowed."""
    if name == _DTYPE_NAME:
        return _DTypeRecord
    if name == _NDARRAY_NAME:
        return _ArrayRecord
    if name in _RECONSTRUCT_NAMES:
        return _inert_reconstruct
    if name in _SCALAR_NAMES:
        return _inert_scalar
    if name == "builtins.bytes":
        return _inert_bytes
    if name.startswith(_OPENMMLAB_PREFIXES) or name.startswith("numpy.dtypes."):
        return _stand_in_for(name)
    return None


def _finalize(obj: Any) -> Any:
    """Replace every record left by the stand-ins with a value or an inert placeholder (in place where mutable)."""
    records = {id(o): (name, args) for o, name, args in (_records or ())}
    done: dict[int, Any] = {}

    def visit(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device)):
            return x
        key = id(x)
        if key in done:
            return done[key]
        if isinstance(x, _ArrayRecord):
            done[key] = out = x.rebuild() if not x.args else InertObject("numpy array", "an ndarray subclass")
            return out
        if isinstance(x, _DTypeRecord):
            plain, reason = x.plain()
            done[key] = out = plain if plain is not None else InertObject("numpy dtype", reason)
            return out
        if isinstance(x, type) and issubclass(x, _OpenMMLabStandIn):
            done[key] = out = OpenMMLabPlaceholder(x.qualified_name)
            return out
        if key in records:
            name, args = records[key]
            holder = OpenMMLabPlaceholder(name)
            done[key] = holder
            holder.update({visit_key(k): visit(v) for k, v in x.items()})
            holder.state = {k: visit(v) for k, v in vars(x).items()} or None
            holder.args = tuple(visit(a) for a in args)
            return holder
        if isinstance(x, dict):  # dict, OrderedDict, Counter: in place
            done[key] = x
            for k, v in list(x.items()):
                new_k, new_v = visit_key(k), visit(v)
                if new_k is not k:
                    del x[k]
                if new_k is not k or new_v is not v:
                    x[new_k] = new_v
            if hasattr(x, "__dict__") and vars(x):  # an OrderedDict's BUILD state (e.g. _metadata)
                for k, v in list(vars(x).items()):
                    vars(x)[k] = visit(v)
            return x
        if isinstance(x, list):
            done[key] = x
            x[:] = [visit(v) for v in x]
            return x
        if isinstance(x, tuple) and type(x) is tuple:
            done[key] = x  # a cycle through this tuple keeps the original
            out = tuple(visit(v) for v in x)
            done[key] = out
            return out
        if isinstance(x, (set, frozenset)):
            done[key] = x
            out = type(x)(visit_key(v) for v in x)
            done[key] = out
            return out
        return x  # torch.Size, storages, qscheme...: built by torch itself

    def visit_key(k: Any) -> Any:
        value = visit(k)
        return value if not isinstance(value, np.ndarray) else InertObject("numpy array", "used as a key")

    return visit(obj)


# --- reading ---


def _global_name(arg: str) -> str:
    """``"module name"`` of a GLOBAL opcode as torch's unpickler resolves it (Python 2 names mapped)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    module, _, name = arg.partition(" ")
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _scan(stream: Any, found: set[str]) -> None:
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            found.add(_global_name(arg))
        elif opcode.name == "STACK_GLOBAL":  # protocol 4: the name is on the stack; torch refuses it anyway
            found.add("<STACK_GLOBAL (pickle protocol 4+)>")


def pickle_globals(path: str | os.PathLike) -> set[str]:
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


def _check_is_file(path: Path, what: str = "checkpoint file") -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is not a regular file (a device, pipe or socket); pass a file")


def read_checkpoint(
    path: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
    opt_in: str = _OPT_IN,
) -> Any:
    """Load a ``torch.save`` file without executing code from it.

    Only tensors, plain containers and scalars come back, plus numpy arrays rebuilt from plain
    numeric bytes, :class:`OpenMMLabPlaceholder` mappings and :class:`InertObject` markers (see
    the module docstring). ``trust_pickle=True`` uses full pickle (code in the file runs).

    Raises:
        FileNotFoundError / IsADirectoryError: ``path`` is missing or a folder.
        CheckpointError: naming the file for bytes that are no checkpoint (truncated, corrupt,
            an HTML page), and for a pickle that needs globals outside the allow-list (listing
            them, with ``opt_in``: by default the ``trust_pickle=True`` / ``--trust-pickle`` opt-in).
    """
    global _records
    path = Path(path)
    _check_is_file(path)
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
    refused = sorted(n for n in needed if _stand_in(n) is None and not _torch_allows(n))
    if refused:
        raise CheckpointError(_refusal(path, refused, opt_in))
    allowed = [(_stand_in(n), n) for n in needed if _stand_in(n) is not None]
    with _LOAD_LOCK:
        # Exactly this allow-list: globals added elsewhere in the process (add_safe_globals) could
        # rebind the numpy names to the real, unsafe classes.
        previous = torch.serialization.get_safe_globals()
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(allowed)
        _records = []
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
            return _finalize(obj)
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
            _records = None
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(previous)


def _torch_allows(name: str) -> bool:
    """Whether torch's weights_only unpickler allows ``name`` by itself (tensors, storages, OrderedDict...)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return name in _get_allowed_globals()


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


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` via a temporary file and an atomic rename.

    The header is written with sorted keys, so equal tensors and metadata give equal bytes (and
    equal checksums in the cache's records).
    """
    path = Path(path)
    atomic_save_safetensors(dict(tensors), path, dict(metadata) if metadata else None)
    return path


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON via a temporary file and an atomic rename."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    _check_is_file(path, "safetensors file")
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
