"""The record next to each URL download in the cache: ``<file>.source.json``.

When a download enters the cache (:func:`~pspnet_lib.hub.http_download.fetch_url`), the record
says where it came from and what it was: its URL, sha256 and stamp (size, mtime, ctime, inode:
:func:`~pspnet_lib.hub.cache_dir.file_stamp`), and, once its weights were read and found finite
floats, ``values_checked``. A later use trusts the file without hashing it while its stamp is the
recorded one, and hashes it in full otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from .._files import atomic_write_bytes
from ..core.escape import printable
from .cache_dir import _verify, file_lock, file_stamp, sha256_file

__all__ = [
    "RECORD_SUFFIX",
    "record_path",
    "recorded",
    "check_record",
    "url_values_checked",
    "mark_url_values_checked",
]

logger = logging.getLogger(__name__)

#: Next to each URL download: where it came from and what it was (see :func:`check_record`).
RECORD_SUFFIX = ".source.json"
_RECORD_FORMAT = 1
_NO_RECORD = "no record of its source"


def record_path(dest: Path) -> Path:
    """``<dest>.source.json``."""
    return dest.with_name(dest.name + RECORD_SUFFIX)


def _write(dest: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(record_path(dest), (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def _write_record(dest: Path, url: str, digest: str | None = None, **extra: Any) -> None:
    """Record ``dest`` as the download of ``url``: its sha256 and its stamp, taken before hashing
    (a file that changes while it is hashed then no longer has the recorded stamp)."""
    stamp = file_stamp(dest)  # a digest passed in is of the bytes this process just wrote, under the lock
    _write(dest, {"format": _RECORD_FORMAT, "url": url, "sha256": digest or sha256_file(dest), **stamp, **extra})


def _read_record(dest: Path) -> dict[str, Any] | str:
    """The record of ``dest``, or why there is none to use."""
    path = record_path(dest)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return _NO_RECORD
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return f"its record {path} is unreadable"
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        return f"its record {path} is not one this version writes"
    return record


def _stamp_holds(dest: Path, record: dict[str, Any]) -> bool:
    return all(record.get(key) == value for key, value in file_stamp(dest).items())


def recorded(dest: Path, url: str, digest: str | None = None) -> Path:
    """Record ``dest`` (just downloaded from ``url``, with its sha256 ``digest`` if known, or placed
    by hand and checked); returns it.

    A cache where the record cannot be written (read-only) is logged: the file itself was checked.
    """
    try:
        _write_record(dest, url, digest)
    except OSError as exc:
        logger.warning("could not record the source of %s in %s: %s", dest, record_path(dest), exc)
    return dest


def check_record(dest: Path, url: str, prefix: str | None) -> str | None:
    """None if ``dest`` is what was recorded when it entered the cache from ``url``, else why not.

    Call under the file's lock. The file is trusted without hashing while its stamp is the
    recorded one; otherwise it is hashed once, against the ``-<hex>.`` ``prefix`` of its name (a
    mismatch removes it and raises :class:`~pspnet_lib.hub.cache_dir.ChecksumError`) and the
    recorded sha256 (a match records the new stamp). A file without a record (placed by hand)
    is checked against ``prefix`` and gives ``"no record of its source"``.
    """
    record = _read_record(dest)
    if isinstance(record, str):
        if record == _NO_RECORD and prefix:
            _verify(dest, prefix, "cached file")
        return record
    if record.get("url") != url:
        return f"it was downloaded from {printable(record.get('url'))}, not from this URL"
    size = dest.stat().st_size
    if size != record.get("size"):
        return f"it has {size} bytes, {record.get('size')} were recorded at download time"
    digest = str(record.get("sha256"))
    if _stamp_holds(dest, record) and (not prefix or digest.startswith(prefix)):
        return None
    actual = sha256_file(dest)
    if prefix:
        _verify(dest, prefix, "cached file", actual)
    if actual != digest:
        return f"its sha256 {actual[:16]}... differs from the {digest[:16]}... recorded at download time"
    checked = {"values_checked": True} if record.get("values_checked") is True else {}
    with contextlib.suppress(OSError):  # a read-only cache keeps its record (and hashes on every use)
        _write_record(dest, url, actual, **checked)
    return None


def url_values_checked(path: Path) -> bool:
    """Whether the record of the cached download at ``path`` says its weights were checked (finite
    floats) and the file still has the stamp it was recorded with."""
    record = _read_record(path)
    return isinstance(record, dict) and record.get("values_checked") is True and _stamp_holds(path, record)


def mark_url_values_checked(path: Path) -> None:
    """Record that the weights of the cached download at ``path`` were checked (finite floats).

    Only while the file has the recorded stamp (the file checked is the file recorded); a
    read-only cache keeps its record.
    """
    with file_lock(path):
        record = _read_record(path)
        if isinstance(record, dict) and _stamp_holds(path, record):
            with contextlib.suppress(OSError):
                _write(path, {**record, "values_checked": True})
