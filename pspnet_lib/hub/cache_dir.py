"""The cache folder's basics: where it is, offline mode, sha256 checks, file locks and leftovers.

Shared by the downloads (:mod:`pspnet_lib.hub.http_download`) and the converted cache
(:mod:`pspnet_lib.hub.converted_cache`); the cache layout is described in
:mod:`pspnet_lib.hub.download`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.hub
from filelock import FileLock, Timeout

from .._files import remove_stale_temporaries
from .serialization import CheckpointError

__all__ = [
    "ChecksumError",
    "OfflineError",
    "LOCK_DIR",
    "default_cache_dir",
    "is_offline",
    "sha256_file",
    "file_stamp",
    "file_lock",
    "remove_leftovers",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


class ChecksumError(CheckpointError):
    """A file's sha256 does not start with the expected prefix."""


class OfflineError(FileNotFoundError):
    """Downloads are disabled and the file is not in the cache."""


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``torch.hub.get_dir()/checkpoints`` (honours ``TORCH_HOME``)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"


def is_offline(local_files_only: bool = False) -> bool:
    """True if downloads are disabled: ``local_files_only`` or ``HF_HUB_OFFLINE`` set (read now, not at import)."""
    if local_files_only:
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_stamp(path: str | os.PathLike) -> dict[str, int]:
    """What a file looks like now, without reading it: size, ``mtime_ns``, inode and (POSIX)
    ``ctime_ns``; symbolic links are followed.

    A cache file is hashed once, when it enters the cache (or on a mismatch), and its stamp
    recorded; a later load trusts it without hashing while the stamp is unchanged. Writing to a
    file moves its mtime and ctime, replacing it (a rename) gives another inode, and ``touch -d``
    or ``os.utime`` can set the mtime back but move the ctime to now: none passes. What the stamp
    cannot see is a change below the file system (a disk's bit rot, writes to the raw device, a
    clock set back), which a full hash does (``pspnet download NAME``; docs/weights.md).
    """
    stat = os.stat(path)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}
    if os.name == "posix":  # on Windows st_ctime is the creation time
        stamp["ctime_ns"] = stat.st_ctime_ns
    return stamp


def _verify(path: Path, sha256_prefix: str, what: str, digest: str | None = None) -> str:
    """Hash ``path`` (unless its ``digest`` is known) against a sha256 prefix; remove it and raise on a
    mismatch. Returns the sha256."""
    digest = digest or sha256_file(path)
    if not digest.startswith(sha256_prefix):
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{what} {path} ({size} bytes) has sha256 {digest[:16]}..., expected a hash starting with "
            f"{sha256_prefix}: the file is truncated, corrupt or not the published one. It was removed; "
            "load again to re-download it (or place the correct file there)."
        )
    return digest


# --- locks and leftovers ---

#: Lock files live in this sub-folder of the cache, never next to the weights. filelock keeps a
#: lock file after release on purpose: deleting it would let a process that waits on the old inode
#: and a newcomer that creates a fresh file both "hold" the lock. huggingface_hub keeps its lock
#: files in ``.locks/`` for the same reason.
LOCK_DIR = ".locks"
#: A ``<file>.<hex>.partial`` of torch.hub's downloader (older pspnet_lib versions, or another
#: program sharing the folder, which takes no lock of ours) is only removed once it has not grown
#: for this long: a live download writes to it continuously.
_FOREIGN_PARTIAL_AGE_S = 3600.0


def _lock(cache_dir: Path, name: str, timeout: float = -1) -> Any:
    try:
        lock_dir = cache_dir / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return contextlib.nullcontext()
    if not os.access(lock_dir, os.W_OK):
        return contextlib.nullcontext()
    return FileLock(str(lock_dir / f"{name}.lock"), timeout=timeout)


def file_lock(dest: Path) -> Any:
    """The lock serialising every download of the cache file ``dest`` (``<cache>/.locks/<name>.lock``).

    Where the cache is not writable (a read-only shared cache) nothing can be written and there
    is nothing to serialise: a no-op context is returned.
    """
    return _lock(dest.parent, dest.name)


def _partial_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")


def remove_leftovers(dest: Path) -> list[Path]:
    """Remove what interrupted downloads or writes of ``dest`` left next to it; call under its lock.

    * ``.<name>.<hex>.partial``: this module's downloads (only ever written under the lock, so any
      found while holding it belongs to a process that died);
    * ``<name>.<hex>.partial`` (torch.hub's downloader): only when older than an hour, since a
      program that does not take our lock may still be writing it;
    * ``.<name>.<random>.tmp<suffix>``: interrupted atomic writes (``pspnet_lib._files``);
    * ``.<name>.lock``: the lock files older versions kept next to the weights, when free.
    """
    removed: list[Path] = []
    ours = re.compile(rf"^\.{re.escape(dest.name)}\.[0-9a-f]{{32}}\.partial$")
    torch_hub = re.compile(rf"^{re.escape(dest.name)}\.[0-9a-f]{{32}}\.partial$")
    try:
        names = [p for p in dest.parent.iterdir() if p.name.endswith(".partial")]
    except OSError:
        return removed
    now = time.time()
    for path in names:
        try:
            if ours.match(path.name) or (
                torch_hub.match(path.name) and now - path.stat().st_mtime > _FOREIGN_PARTIAL_AGE_S
            ):
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    removed += remove_stale_temporaries(dest)
    removed += _remove_legacy_lock(dest.with_name(f".{dest.name}.lock"))
    if removed:
        logger.info("removed leftovers of interrupted downloads or writes: %s", ", ".join(str(p) for p in removed))
    return removed


def _remove_legacy_lock(legacy: Path) -> list[Path]:
    """Remove a lock file that an older version left next to the weights, if no process holds it."""
    with contextlib.suppress(OSError, Timeout):
        if legacy.is_file() and legacy.stat().st_size == 0:
            with FileLock(str(legacy), timeout=0):  # held by an older version's process: leave it
                legacy.unlink()
            return [legacy]
    return []
