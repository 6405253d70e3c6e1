"""Small generated hostile checkpoints (issue 22): each a few bytes to a few MB, written by the tests.

Pickles are written opcode by opcode (protocol 2, the opcodes torch's weights-only unpickler
reads), so that each file is exactly the construct under test.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch

PROTO = b"\x80\x02"
STOP, MARK, TUPLE, TUPLE1, TUPLE2 = b".", b"(", b"t", b"\x85", b"\x86"
REDUCE, SETITEM, SETITEMS, APPEND, APPENDS = b"R", b"s", b"u", b"a", b"e"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, NONE, FALSE, PERSID = b"}", b"]", b")", b"N", b"\x89", b"Q"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def put(index: int) -> bytes:
    return b"r" + index.to_bytes(4, "little")


def get(index: int) -> bytes:
    return b"j" + index.to_bytes(4, "little")


def storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    """A BINPERSID storage reference of the zip layout: ('storage', torch.<kind>, key, 'cpu', numel)."""
    return MARK + text("storage") + glob("torch", kind) + text(key) + text("cpu") + integer(numel) + TUPLE + PERSID


def tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """``_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())``."""
    dims = lambda values: MARK + b"".join(integer(v) for v in values) + TUPLE  # noqa: E731
    return (
        glob("torch._utils", "_rebuild_tensor_v2")
        + MARK
        + storage(key, numel)
        + integer(0)
        + dims(size)
        + dims(stride)
        + FALSE
        + glob("collections", "OrderedDict")
        + EMPTY_TUPLE
        + REDUCE
        + TUPLE
        + REDUCE
    )


def state_dict(entries: dict[str, bytes]) -> bytes:
    """A pickle of ``{key: value}`` from already-encoded values."""
    body = b"".join(text(k) + v for k, v in entries.items())
    return PROTO + EMPTY_DICT + MARK + body + SETITEMS + STOP


def write_zip(
    path: Path,
    pickle: bytes,
    records: Iterable[tuple[str, bytes]] = (),
    *,
    compression: int = zipfile.ZIP_STORED,
    pickle_name: str = "archive/data.pkl",
) -> Path:
    """A torch.save-like zip archive: ``archive/data.pkl`` plus ``records`` (``archive/data/<key>``, ...)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr(pickle_name, pickle)
        for name, data in records:
            archive.writestr(name, data)
    return path


def legacy_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


# --- the constructs of issue 22, item 1 ---


def bytearray_bomb() -> bytes:
    """``bytearray(3 GiB)``: 30 bytes that torch's weights-only unpickler turns into 3.9 GB."""
    return PROTO + glob("__builtin__", "bytearray") + integer(3 << 30) + TUPLE1 + REDUCE + STOP


def counter_bomb() -> bytes:
    """``Counter(bytearray(3e8))``: 9-26 s of CPU under torch's unpickler."""
    inner = glob("__builtin__", "bytearray") + integer(300_000_000) + TUPLE1 + REDUCE
    return PROTO + glob("collections", "Counter") + inner + TUPLE1 + REDUCE + STOP


def counter_of_text(size: int = 1 << 20) -> bytes:
    """``Counter('aaa...')``: a call torch.save never writes (it writes ``Counter(dict)``)."""
    return PROTO + glob("collections", "Counter") + text("a" * size) + TUPLE1 + REDUCE + STOP


def hash_bomb(levels: int = 60) -> bytes:
    """A dict key ``t60`` where ``t[i] = (t[i-1], t[i-1])``: hashing it walks 2^60 tuples."""
    body = integer(1) + TUPLE1 + put(0)
    for i in range(1, levels + 1):
        body += get(i - 1) + TUPLE2 + put(i)
    return PROTO + EMPTY_DICT + body + integer(1) + SETITEM + STOP


def bytes_bomb(size: int = 1 << 20, copies: int = 300) -> bytes:
    """``[_codecs.encode(s, 'latin1')] * 300`` over one memoised 1 MB string: 300 MB built from 1 MB."""
    head = glob("_codecs", "encode") + put(0) + text("a" * size) + put(1) + text("latin1") + put(2) + TUPLE2 + REDUCE
    again = get(0) + get(1) + get(2) + TUPLE2 + REDUCE
    return PROTO + EMPTY_LIST + MARK + head + again * (copies - 1) + APPENDS + STOP


def tree_bomb(levels: int = 40) -> bytes:
    """``l[i] = [l[i-1], l[i-1]]``: 40 lists that a walk (json, repr, validation) visits 2^40 times."""
    body = EMPTY_LIST + put(0)
    for i in range(1, levels + 1):
        body += EMPTY_LIST + MARK + get(i - 1) + get(i - 1) + APPENDS + put(i)
    # every l[i] stays on the stack: an outer list holds them all
    return PROTO + EMPTY_LIST + MARK + body + APPENDS + STOP


def deep_nesting(depth: int = 5000) -> bytes:
    """5000 lists nested in each other."""
    return PROTO + EMPTY_LIST * depth + APPEND * (depth - 1) + STOP
