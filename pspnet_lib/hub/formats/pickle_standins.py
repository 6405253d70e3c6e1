"""Inert stand-ins for the globals a checkpoint's pickle may name, and the rebuild that follows.

:func:`~pspnet_lib.hub.formats.checkpoint_reader.read_checkpoint` binds numpy's and OpenMMLab's global
names to the objects of this module while torch's ``weights_only`` unpickler runs:

* numpy arrays and scalars, which training metadata often holds (``np.float64`` metrics,
  ``int64`` arrays), are *not* rebuilt by numpy's own pickle machinery (``dtype.__setstate__``
  / ``ndarray.__setstate__`` can be steered by a file into forging object pointers). The
  stand-ins only record what the file says; afterwards :func:`finalize` accepts plain
  numeric/bool dtypes only (no fields, no object dtype, no subarrays, no flags), checks that the
  byte count equals ``prod(shape) * itemsize`` and builds the value with
  ``np.frombuffer(...).copy()`` (scalars become Python numbers). Anything else becomes an
  :class:`InertObject` naming what it was.
* OpenMMLab bookkeeping objects (mmengine's ``HistoryBuffer``, ``ConfigDict``, ...) become
  :class:`OpenMMLabPlaceholder` mappings: their items and state are kept as data, and no
  OpenMMLab code is imported or run.

torch's unpickler calls ``cls.__new__(cls, *args)`` for NEWOBJ, ``f(*args)`` for REDUCE and
``obj.__setstate__(state)`` for BUILD on allowed globals; the stand-ins only record plain data
there.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import numpy as np
import torch

__all__ = ["InertObject", "OpenMMLabPlaceholder", "finalize", "recording", "stand_in", "torch_allows"]

#: Prefixes of the OpenMMLab packages whose bookkeeping objects may appear in checkpoint metadata.
_OPENMMLAB_PREFIXES = ("mmengine.", "mmcv.", "mmseg.", "mmcls.", "mmpretrain.", "mmdet.", "addict.")

#: numpy's pickle entry points (numpy 1.x and 2.x spellings); each is bound to an inert stand-in.
_RECONSTRUCT_NAMES = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
_NDARRAY_NAME = "numpy.ndarray"
_DTYPE_NAME = "numpy.dtype"

#: The dtypes a numpy value in metadata may have: booleans and fixed-size numbers.
_PLAIN_DTYPES = frozenset(["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"])


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


class OpenMMLabPlaceholder(dict[Any, Any]):
    """Inert stand-in for an OpenMMLab object found in checkpoint metadata.

    A plain ``dict`` subclass: the items the pickle held (for dict-like objects such as an older
    ``ConfigDict``) are its items; ``state`` is the attribute dict it held (e.g. a
    ``HistoryBuffer``'s history), ``args`` its constructor arguments. The original class is
    never imported or run.
    """

    def __init__(
        self,
        qualified_name: str,
        items: Mapping[Any, Any] | None = None,
        *,
        state: Any = None,
        args: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(items or {})
        self.qualified_name = qualified_name
        self.state = state
        self.args = args

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}: {dict.__repr__(self)}>"


# OpenMMLab objects made by the current load (see :func:`recording`): the recorded ``OrderedDict``,
# the qualified name and the constructor arguments.
_records: list[tuple[OrderedDict[Any, Any], str, tuple[Any, ...]]] | None = None


@contextmanager
def recording() -> Iterator[None]:
    """Collect the OpenMMLab objects the unpickler makes until the block ends, for :func:`finalize`.

    Not re-entrant: the caller holds the lock that serialises loads (torch's safe globals are
    process-wide too).
    """
    global _records
    _records = []
    try:
        yield
    finally:
        _records = None


_R = TypeVar("_R", bound="_Record")


class _Record:
    """Records the arguments (NEWOBJ/REDUCE) and state (BUILD) the unpickler hands over; runs nothing."""

    __slots__ = ("args", "state")
    args: tuple[Any, ...]
    state: Any

    def __new__(cls: type[_R], *args: Any) -> _R:
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
            byte_order: Literal["<", ">"] = "<" if order == "<" else ">"
            dtype = dtype.newbyteorder(byte_order)
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
    (dict items, e.g. an older ``ConfigDict``) write into; :func:`finalize` then turns each
    record into an :class:`OpenMMLabPlaceholder`.
    """

    qualified_name = "openmmlab object"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - see the class docstring
        obj: OrderedDict[Any, Any] = OrderedDict()
        if _records is not None:
            _records.append((obj, cls.qualified_name, args))
        return obj


def _stand_in_for(name: str) -> type[_OpenMMLabStandIn]:
    return type("OpenMMLabStandIn", (_OpenMMLabStandIn,), {"qualified_name": name})


def stand_in(name: str) -> Callable[..., Any] | None:
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


def finalize(obj: Any) -> Any:
    """Replace every record left by the stand-ins with a value or an inert placeholder (in place where mutable)."""
    records = {id(o): (name, args) for o, name, args in (_records or ())}
    done: dict[int, Any] = {}

    def visit(x: Any) -> Any:
        out: Any
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


def torch_allows(name: str) -> bool:
    """Whether torch's weights_only unpickler allows ``name`` by itself (tensors, storages, OrderedDict...)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return name in _get_allowed_globals()
