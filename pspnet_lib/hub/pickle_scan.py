"""What a checkpoint's pickle would do, found before it is unpickled: globals, storages and costs.

:func:`scan_pickle` reads the exact bytes that :mod:`~pspnet_lib.hub.checkpoint_reader` then hands
to torch's ``weights_only`` unpickler, and follows them opcode by opcode on abstract values (a
string's length, a list's item count, the storage a tensor views; never the values built from
them). It supports exactly the opcodes that unpickler does, and:

* collects every global the pickle names (the reader refuses those outside its allow-list);
* collects every tensor storage the pickle declares (``key``, dtype, element count), so that the
  reader checks them against the archive before anything is allocated;
* allows calls only to what a ``torch.save`` file needs, in the forms ``torch.save`` writes them:
  ``OrderedDict()``, ``Counter(dict)``, ``set(list)``, ``bytearray(bytes)``,
  ``_codecs.encode(str, 'latin1')``, ``complex(x, y)``, ``torch.Size(tuple)``,
  ``torch.device(str)``, the dense-tensor rebuild functions (the storage must hold the view),
  ``nn.Parameter`` and the inert stand-ins of :mod:`~pspnet_lib.hub.pickle_standins`.
  ``bytearray(3 * 2**30)``, ``Counter(bytearray(...))``, ``torch.Tensor(10**10)`` or a sparse
  tensor are refused, whatever torch's own unpickler would allow;
* counts what the unpickler would build and hash (bytes made by calls, items hashed into dicts
  and sets, a tuple's hash walking its nested tuples) against the limits of
  :mod:`pspnet_lib.core.limits` (``pickle_ops``, ``pickle_objects_bytes``, ``pickle_work``).

:func:`~pspnet_lib.hub.pickle_tree.check_tree` then bounds the loaded value itself.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.limits import check_limit, get_limit
from .pickle_standins import stand_in

__all__ = [
    "MalformedPickleError",
    "PickleScan",
    "StorageDecl",
    "UnsafePickleError",
    "global_name",
    "scan_pickle",
]

#: The opcodes of torch's ``weights_only`` unpickler (torch/_weights_only_unpickler.py); any other is refused.
_SUPPORTED = frozenset(
    "GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS SETITEM SETITEMS MARK TUPLE TUPLE1 TUPLE2 TUPLE3 NONE NEWFALSE "
    "NEWTRUE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET BININT BININT1 BININT2 BINFLOAT BINUNICODE "
    "SHORT_BINSTRING BINPERSID BINGET LONG_BINGET BINPUT LONG_BINPUT LONG1 PROTO STOP".split()
)
#: Element types a tensor in a weights file may have (no quantized, no bit-packed, no float8).
_PLAIN_DTYPES = frozenset(
    [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128, torch.bool]
    + [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
)
_MAX_DIMS = 64
_CAP = 1 << 62  # saturating counts


class UnsafePickleError(ValueError):
    """The pickle uses a construct the reader refuses (a call outside the allow-list or in another form)."""


class MalformedPickleError(ValueError):
    """The bytes are no pickle torch's weights-only unpickler reads (damaged, or not a checkpoint)."""


def global_name(arg: str) -> str:
    """``"module.name"`` of a GLOBAL argument ``"module name"`` as torch's unpickler resolves it
    (Python 2 module names mapped)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    module, _, name = arg.partition(" ")
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


@dataclass(frozen=True)
class StorageDecl:
    """A tensor storage a pickle refers to: archive ``key``, element ``dtype`` and ``numel`` elements."""

    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class PickleScan:
    """What :func:`scan_pickle` found: the ``globals`` named, the ``storages`` declared (by key) and
    the number of bytes the pickle spans (``end``)."""

    globals: set[str] = field(default_factory=set)
    storages: dict[str, StorageDecl] = field(default_factory=dict)
    end: int = 0
    #: what the pickles scanned into this result cost together (see the limits)
    ops: int = 0
    work: int = 0
    made_bytes: int = 0


class _V:
    """An abstract value on the unpickler's stack.

    ``kind``: global, int, float, bool, none, str, bytes, tuple, list, dict, odict, counter, set,
    storage, tensor, record (a stand-in), mapping (an OpenMMLab stand-in: an OrderedDict), value.
    ``value``: the Python value of small literals, the items of a tuple, a global's name, a
    storage's declaration. ``length``: characters, bytes or items. ``hcost``: the work of hashing
    it (a tuple hashes its items every time). ``hsum``: the hashing work of the items put in it.
    """

    __slots__ = ("kind", "value", "length", "hcost", "hsum")

    def __init__(self, kind: str, value: Any = None, length: int = 0, hcost: int = 1) -> None:
        self.kind, self.value, self.length, self.hcost, self.hsum = kind, value, length, hcost, 0


_DICT_TARGETS = ("dict", "odict", "counter", "mapping")


class _Scanner:
    def __init__(self, source: str, result: PickleScan) -> None:
        self.source = source
        self.result = result
        self.work_limit = get_limit("pickle_work")
        self.bytes_limit = get_limit("pickle_objects_bytes")

    # --- budgets ---

    def add_work(self, amount: int) -> None:
        self.result.work = min(_CAP, self.result.work + amount)
        if self.result.work > self.work_limit:
            check_limit("pickle_work", self.result.work, self.source)

    def add_bytes(self, amount: int) -> None:
        self.result.made_bytes = min(_CAP, self.result.made_bytes + amount)
        if self.result.made_bytes > self.bytes_limit:
            check_limit("pickle_objects_bytes", self.result.made_bytes, self.source)

    def refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(f"{what}, which a weights file never needs")

    # --- calls ---

    def call(self, func: _V, args: _V, newobj: bool = False) -> _V:
        if func.kind != "global":
            raise self.refuse("it calls something that is not a function or class")
        if args.kind != "tuple":
            raise self.refuse(f"it calls {func.value} with arguments that are not a tuple")
        name, items = func.value, args.value
        if stand_in(name) is not None:
            return self.stand_in_call(name, items)
        if name not in self.result.globals or not _torch_allows(name):
            return _V("value")  # refused by name afterwards, with the list of every such global
        kinds = [a.kind for a in items]
        if name == "collections.OrderedDict" and not items:
            return _V("odict")
        if name == "collections.Counter" and (not items or kinds == ["dict"]):
            self.add_work(items[0].hsum if items else 0)
            return _V("counter", length=items[0].length if items else 0)
        if name == "builtins.set" and (not items or kinds == ["list"]):
            self.add_work(items[0].hsum if items else 0)
            return _V("set", length=items[0].length if items else 0)
        if name == "builtins.bytearray" and (
            not items or kinds == ["bytes"] or (kinds == ["str", "str"] and items[1].value in _LATIN1)
        ):
            size = items[0].length if items else 0
            self.add_bytes(size)
            return _V("bytes", length=size)
        if name == "_codecs.encode" and kinds == ["str", "str"] and items[1].value in _LATIN1:
            self.add_bytes(items[0].length)
            return _V("bytes", length=items[0].length)
        if name == "builtins.complex" and 1 <= len(items) <= 2 and all(k in ("int", "float") for k in kinds):
            return _V("value")
        if name == "torch.Size" and kinds == ["tuple"] and all(a.kind == "int" for a in items[0].value):
            return _V("value", hcost=items[0].hcost)
        if name == "torch.device" and kinds in (["str"], ["str", "int"]) and items[0].length <= 64:
            return _V("value")
        if name in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor") and not newobj:
            return self.rebuild_tensor(name, items)
        if name == "torch._utils._rebuild_parameter" and not newobj and kinds[:1] == ["tensor"] and len(items) == 3:
            if items[2].kind != "odict" or items[2].length:
                raise self.refuse(f"it calls {name} with backward hooks")
            return _V("tensor")
        if name == "torch.nn.parameter.Parameter" and newobj and 1 <= len(items) <= 2 and kinds[0] == "tensor":
            return _V("tensor")
        shown = ", ".join(sorted(set(kinds)))[:80]
        raise self.refuse(f"it calls {name} with {len(items)} argument(s) ({shown or 'none'})")

    def stand_in_call(self, name: str, items: list[_V]) -> _V:
        if name == "builtins.bytes":
            if items and items[0].kind == "bytes":
                self.add_bytes(items[0].length)
            return _V("bytes", length=items[0].length if items and items[0].kind == "bytes" else 0)
        if name.startswith(("numpy.", "numpy._core.")) and name.endswith(".scalar"):
            return _V("value")
        if name.startswith(("numpy.", "numpy._core")) and not name.startswith("numpy.dtypes."):
            return _V("record", value=name)  # numpy.dtype, ndarray, _reconstruct: filled by BUILD
        return _V("mapping", value=name)  # OpenMMLab objects: inert OrderedDicts

    def rebuild_tensor(self, name: str, items: list[_V]) -> _V:
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
        # _rebuild_tensor(storage, offset, size, stride)
        expected = (4,) if name.endswith("_rebuild_tensor") else (6, 7)
        if len(items) not in expected or items[0].kind != "storage":
            raise self.refuse(f"it calls {name} with {len(items)} argument(s), not a storage and a view")
        storage, offset, size, stride = items[:4]
        dims = [size, stride]
        if (
            offset.kind != "int"
            or offset.value < 0
            or any(
                d.kind != "tuple" or len(d.value) > _MAX_DIMS or any(a.kind != "int" or a.value < 0 for a in d.value)
                for d in dims
            )
        ):
            raise self.refuse(f"it calls {name} with a malformed view (offset, size, stride)")
        sizes, strides = [a.value for a in size.value], [a.value for a in stride.value]
        if len(sizes) != len(strides):
            raise self.refuse(f"it calls {name} with {len(sizes)} sizes and {len(strides)} strides")
        decl: StorageDecl = storage.value
        if 0 not in sizes:
            last = offset.value + sum((s - 1) * st for s, st in zip(sizes, strides))
            if last >= decl.numel:
                raise MalformedPickleError(
                    f"a tensor views element {last} of storage {decl.key!r}, which holds {decl.numel} elements"
                )
        if len(items) >= 6:
            if items[4].kind != "bool" or items[5].kind != "odict" or items[5].length:
                raise self.refuse(f"it calls {name} with backward hooks")
            if len(items) == 7 and not (items[6].kind in ("dict", "odict") and items[6].length == 0):
                raise self.refuse(f"it calls {name} with tensor metadata")
        return _V("tensor")

    def persistent(self, pid: _V) -> _V:
        items = pid.value if pid.kind == "tuple" else None
        if not items or items[0].kind != "str" or items[0].value != "storage" or len(items) not in (5, 6):
            raise UnsafePickleError("a persistent id that is not a tensor storage")
        kind, key, location, numel = items[1:5]
        dtype = _storage_dtype(kind.value if kind.kind == "global" else None)
        if dtype is None:
            raise UnsafePickleError(f"a storage of type {str(kind.value)[:60]!r}, not a plain number type")
        if key.kind != "str" or location.kind != "str" or numel.kind != "int" or numel.value < 0:
            raise UnsafePickleError("a malformed storage declaration (key, location, element count)")
        if len(items) == 6 and items[5].kind != "none":
            raise UnsafePickleError("a storage view of the pre-0.4 format, which this reader does not read")
        decl = StorageDecl(str(key.value), dtype, int(numel.value))
        known = self.result.storages.setdefault(decl.key, decl)
        if known != decl:
            raise UnsafePickleError(f"storage {decl.key!r} declared twice with different types or sizes")
        return _V("storage", value=decl)

    # --- the opcode loop ---

    def run(self, stream: io.BytesIO) -> None:
        stack: list[Any] = []
        marks: list[list[Any]] = []
        memo: dict[int, _V] = {}
        ops_limit = get_limit("pickle_ops")
        for opcode, arg, _ in pickletools.genops(stream):
            self.result.ops += 1
            if self.result.ops > ops_limit:
                check_limit("pickle_ops", self.result.ops, self.source)
            name = opcode.name
            if name not in _SUPPORTED:
                raise MalformedPickleError(
                    f"pickle opcode {name}, which torch's weights-only unpickler does not support"
                )
            if name == "STOP":
                if len(stack) != 1 or marks:
                    raise MalformedPickleError("a malformed pickle (its stack does not end with one value)")
                return
            try:
                self.step(name, arg, stack, marks, memo)
            except IndexError:
                raise MalformedPickleError(f"a malformed pickle ({name} on an empty stack)") from None
        raise EOFError("the pickle ends before its STOP opcode")

    def step(self, name: str, arg: Any, stack: list[Any], marks: list[list[Any]], memo: dict[int, _V]) -> None:
        if name == "GLOBAL":
            qualified = global_name(str(arg))
            self.result.globals.add(qualified)
            stack.append(_V("global", qualified))
        elif name in ("BININT", "BININT1", "BININT2", "LONG1"):
            stack.append(_V("int", arg))
        elif name == "BINFLOAT":
            stack.append(_V("float", arg))
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(_V("bool", name == "NEWTRUE"))
        elif name == "NONE":
            stack.append(_V("none"))
        elif name in ("BINUNICODE", "SHORT_BINSTRING"):
            self.add_work(1)
            stack.append(_V("str", arg if len(arg) <= 256 else None, length=len(arg)))
        elif name == "EMPTY_TUPLE":
            stack.append(_V("tuple", [], hcost=1))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            stack.append(_V({"EMPTY_LIST": "list", "EMPTY_DICT": "dict", "EMPTY_SET": "set"}[name]))
        elif name == "MARK":
            marks.append(stack[:])
            stack.clear()
        elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            if name == "TUPLE":
                items = stack[:]
                stack[:] = marks.pop()
            else:
                count = int(name[-1])
                if len(stack) < count:
                    raise IndexError
                items = stack[-count:]
                del stack[-count:]
            stack.append(_V("tuple", items, length=len(items), hcost=min(_CAP, 1 + sum(i.hcost for i in items))))
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise MalformedPickleError(f"a malformed pickle (memo entry {arg} read before it is written)")
            stack.append(memo[arg])
        elif name == "BINPERSID":
            stack.append(self.persistent(stack.pop()))
        elif name == "REDUCE":
            args = stack.pop()
            stack[-1] = self.call(stack[-1], args)
        elif name == "NEWOBJ":
            args = stack.pop()
            cls = stack.pop()
            stack.append(self.call(cls, args, newobj=True))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if target.kind in ("odict", "mapping", "record"):
                self.add_work(state.hsum)
                if target.kind == "record" and state.kind == "tuple" and len(state.value) == 5:
                    raw = state.value[4]  # a numpy array's state: (version, shape, dtype, fortran, raw bytes)
                    self.add_bytes(raw.length if raw.kind in ("bytes", "str") else 0)
            else:
                raise self.refuse(f"it sets the state of a {target.kind}")
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else stack[:]
            if name == "APPENDS":
                stack[:] = marks.pop()
            target = stack[-1]
            if target.kind != "list":
                raise self.refuse(f"it appends to a {target.kind}")
            target.length += len(items)
            target.hsum = min(_CAP, target.hsum + sum(i.hcost for i in items))
        elif name in ("SETITEM", "SETITEMS"):
            if name == "SETITEM":
                items = [stack[-2], stack[-1]]
                del stack[-2:]
            else:
                items = stack[:]
                stack[:] = marks.pop()
                if len(items) % 2:
                    raise MalformedPickleError("a malformed pickle (SETITEMS with an odd number of values)")
            target = stack[-1]
            if target.kind not in _DICT_TARGETS:
                raise self.refuse(f"it sets items of a {target.kind}")
            cost = sum(k.hcost for k in items[::2])
            self.add_work(cost)
            target.length += len(items) // 2
            target.hsum = min(_CAP, target.hsum + cost)
        elif name == "PROTO":
            pass


_LATIN1 = ("latin1", "latin-1")


def _torch_allows(name: str) -> bool:
    from .pickle_standins import torch_allows

    return torch_allows(name)


def _storage_dtype(name: str | None) -> torch.dtype | None:
    """The element type of a storage class named in a persistent id, if it is a plain number type."""
    if name is None:
        return None
    if name in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        return torch.uint8
    from torch._weights_only_unpickler import _get_allowed_globals

    kind = _get_allowed_globals().get(name)
    dtype = getattr(kind, "dtype", None) if kind is not None and "Storage" in name else None
    return dtype if dtype in _PLAIN_DTYPES else None


def scan_pickle(
    data: bytes | memoryview, source: str, scan: PickleScan | None = None, *, offset: int = 0
) -> PickleScan:
    """Follow the pickle that starts at ``offset`` of ``data`` (see the module docstring).

    Adds to ``scan`` (a new :class:`PickleScan` by default; the limits apply to all the pickles scanned
    into one) and sets its ``end`` to the offset just after the pickle. ``source`` names the pickle in
    limit messages (the reader passes ``"its pickle"`` and prefixes the file's name).

    Raises:
        UnsafePickleError: a construct outside the allow-list, or a malformed pickle.
        ResourceLimitError: the pickle would exceed a limit of :mod:`pspnet_lib.core.limits`.
        MalformedPickleError, ValueError / EOFError: bytes that are not a pickle (the latter from :mod:`pickletools`).
    """
    scan = scan if scan is not None else PickleScan()
    stream = io.BytesIO(data)
    stream.seek(offset)
    _Scanner(source, scan).run(stream)
    scan.end = stream.tell()
    return scan
