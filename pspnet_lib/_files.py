"""Atomic file output: write to a temporary file next to the target, flush it, then ``os.replace``.

Every file the library writes (checkpoints, converted weights, configs, masks, exports) goes
through here, so an interrupted write never leaves a half-written file that a later run trusts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "OverwritesInputError",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_save",
    "atomic_save_safetensors",
    "check_outputs_spare_inputs",
    "current_umask",
    "ensure_dir",
    "fsync_dir",
    "local_files",
    "parse_json",
    "read_json",
    "remove_stale_temporaries",
    "sibling_folder",
    "temporary_target",
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


#: Any name :func:`atomic_output` gives a temporary file: ".<target name>.<8 characters>.tmp<target suffix>".
_ANY_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]*)?)$")


def temporary_target(name: str) -> str | None:
    """The file name an :func:`atomic_output` temporary called ``name`` was going to become, else None.

    ``".a.png.k2j4_9xq.tmp.png"`` -> ``"a.png"``. Lets a resumed job find (and remove, under the
    rule of :func:`remove_stale_temporaries`) the temporaries of its own outputs in one listing of
    a folder, instead of one listing per output.
    """
    match = _ANY_TEMPORARY.match(name)
    if match is None or not match["name"].endswith(match["suffix"]):
        return None
    return match["name"]


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_output` writes of ``path`` left.

    Only call this while holding the lock that serialises every writer of ``path``: a temporary
    file of a write still in progress looks the same as one left by a killed process. Returns
    the removed paths.
    """
    path = Path(path)
    pattern = _temporary_pattern(path)
    removed: list[Path] = []
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


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically and byte-for-byte reproducibly.

    ``safetensors`` serialises the metadata through a Rust hash map, whose key order changes from
    one call to the next, so the same tensors and metadata gave different bytes (and checksums).
    The header is written back as JSON with sorted keys; tensor data and offsets are unchanged,
    so any safetensors reader reads the same file.
    """
    from safetensors.torch import save

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save(contiguous, metadata=dict(metadata) if metadata else None)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    canonical += b" " * (-len(canonical) % 8)  # the format pads the header to 8 bytes with spaces
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(len(canonical).to_bytes(8, "little"))
            f.write(canonical)
            f.write(memoryview(data)[8 + size :])


class OverwritesInputError(ValueError):
    """An output file would replace one of the command's own input files."""


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """``path`` with symlinks and ``..`` resolved, and its (device, inode) when it exists (hard links)."""
    resolved = Path(os.path.realpath(path))
    try:
        st = os.stat(resolved)
    except OSError:
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def check_outputs_spare_inputs(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    *,
    input_roots: Iterable[str | os.PathLike | None] = (),
    advice: str = "choose another --out",
) -> None:
    """Refuse to write any of ``outputs`` that is one of the command's inputs, whatever ``--overwrite`` says.

    ``inputs`` are files the command reads (weights, class files, pictures, lists);
    ``input_roots`` are folders it reads as a whole (a dataset's ``--data-root``): an output that
    is an existing file anywhere inside one (``<root>/masks/s00.png``, ``<root>/classes.txt``) is
    an input too. Paths are compared after resolving symlinks and ``..``, and existing files also
    by (device, inode), so a symlink or hard link to an input counts as that input (conservative:
    the atomic writers of :func:`atomic_output` would replace a file-level link rather than its
    target, but a link through a folder, or a writer that is not atomic, would reach the input).
    Call it before anything is read or written: every command does, with all its outputs.

    Raises:
        OverwritesInputError: a ``ValueError`` naming the output, the input it would replace and
            ``advice`` (how to pick another output).
    """
    by_path: dict[Path, Path] = {}
    by_inode: dict[tuple[int, int], Path] = {}
    for raw in inputs:
        path = Path(raw)
        resolved, inode = _identity(path)
        by_path.setdefault(resolved, path)
        if inode is not None:
            by_inode.setdefault(inode, path)
    roots = [(Path(os.path.realpath(r)), Path(r)) for r in input_roots if r is not None and os.path.isdir(r)]
    if not by_path and not roots:
        return
    for raw in outputs:
        output = Path(raw)
        resolved, inode = _identity(output)
        source = by_path.get(resolved) or (by_inode.get(inode) if inode is not None else None)
        if source is not None:
            how = (
                "is" if Path(os.path.abspath(source)) == Path(os.path.abspath(output)) else "is a link to (or through)"
            )
            raise OverwritesInputError(f"refusing to write {output}: it {how} the input {source}; {advice}")
        if inode is None or not os.path.isfile(resolved):
            continue  # a new file, or a folder: nothing of the data is replaced
        for real_root, root in roots:
            if resolved.is_relative_to(real_root):
                raise OverwritesInputError(
                    f"refusing to write {output}: it is the file {resolved.relative_to(real_root)} of the input folder "
                    f"{root}; {advice}"
                )


def local_files(spec: str | os.PathLike) -> list[Path]:
    """The files that a weights/source argument names on this machine: the file itself, the files
    directly inside a folder, or nothing (a zoo name, Hub id or URL)."""
    path = Path(spec)
    try:
        if path.is_dir():
            return [p for p in path.iterdir() if p.is_file()]
        return [path] if path.is_file() else []
    except OSError:  # unreadable: the command's own loading reports it
        return []


def sibling_folder(folder: str | os.PathLike, tag: str) -> Path:
    """``<folder>-<tag>`` next to ``folder`` (to suggest another output folder in messages)."""
    folder = Path(folder)
    if folder.name not in ("", ".", ".."):
        return folder.with_name(f"{folder.name}-{tag}")
    resolved = Path(os.path.realpath(folder))  # "." or "..": name the folder itself
    return resolved.with_name(f"{resolved.name or 'out'}-{tag}")


def parse_json(text: str | bytes, source: str) -> Any:
    """``json.loads(text)`` whose every failure is one ``ValueError`` naming ``source``: invalid JSON,
    bytes that are not UTF-8, and nesting deeper than the parser's recursion (a ``RecursionError``
    otherwise, naming nothing)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{source} is not usable JSON: it is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source} is not valid JSON ({exc})") from None


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """The JSON value in the file ``path`` (see :func:`parse_json`); ``what`` describes it in messages
    (``"recipe file"``). A missing file stays ``FileNotFoundError``; other read errors are ``OSError``s
    naming it."""
    path = Path(path)
    return parse_json(path.read_bytes(), f"{what} {path}".strip())
