"""Atomic file output: write to a temporary file next to the target, flush it, then ``os.replace``.

Every file the library writes (checkpoints, converted weights, configs, masks, exports) goes
through here, so an interrupted write never leaves a half-written file that a later run trusts.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_save",
    "current_umask",
    "ensure_dir",
    "fsync_dir",
    "remove_stale_temporaries",
]


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort: not every OS/file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and its parents) if needed; a file in the way is a clear error."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), directory)
        raise NotADirectoryError(
            f"cannot create the folder {directory}: {blocker} is a file; choose another path or move the file"
        ) from None
    return directory


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` atomically.

    The temporary file keeps ``path``'s suffix (libraries that pick a format from it still
    work) and is flushed to disk before the rename. If the body raises, it is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the file {path}: a folder of that name exists")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only; give the result the permissions
        # an ordinary open() would (or keep those of the file it replaces), so that masks, models
        # and exports written for others to read are readable.
        _set_final_mode(tmp_path, path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def current_umask() -> int:
    """The process umask (the permission bits new files and folders do not get)."""
    try:  # Linux reports it without changing it
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere os.umask can only be read by setting it; set it straight back. (Process-wide: a
    # file another thread creates in between would get 0o022.)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_final_mode(tmp_path: Path, path: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask()
        os.chmod(tmp_path, mode)
    except OSError:  # e.g. file systems without POSIX permissions; the content is what matters
        pass


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    # The names atomic_output's mkstemp call gives: ".<name>.<8 random characters>.tmp<suffix>".
    return re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp{re.escape(path.suffix)}$")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_output` writes of ``path`` left.

    Only call this while holding the lock that serialises every writer of ``path``: a temporary
    file of a write still in progress looks the same as one left by a killed process. Returns
    the removed paths.
    """
    path = Path(path)
    pattern = _temporary_pattern(path)
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.match(p.name)]
    except OSError:  # no folder yet, or not listable: nothing to clean
        return removed
    for candidate in candidates:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partially written ``path``."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
