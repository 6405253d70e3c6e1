"""The inputs of a batch prediction: folders, globs and lists of paths; their output names; shards.

* :func:`list_inputs` turns what the user named into :class:`InputFile` s in a stable order, each
  with the **key** its outputs are named by: the input's path relative to its folder, without
  the suffix (``photos/sub/a.jpg`` given as ``photos/`` -> ``sub/a``). When several folders or
  files in different folders are given, the key keeps the path relative to their common parent
  (``a/x.jpg`` and ``b/x.jpg`` -> ``a/x`` and ``b/x``), so inputs with the same stem never write
  the same file.
* :class:`Shard` splits the inputs between processes: input ``key`` belongs to shard
  ``blake2b(key) mod N``, so every process computes the same split from the same list, the
  union of the shards is every input exactly once, and an input keeps its shard when the folder
  grows (a resumed run redoes nothing another shard did). :func:`shard_from_environment` reads
  ``torchrun``'s ``RANK``/``WORLD_SIZE``; :meth:`Shard.within` combines it with ``--shard``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..core.images import IMAGE_EXTENSIONS
from ..core.text import read_lines

__all__ = ["InputFile", "Shard", "list_inputs", "read_path_list", "shard_from_environment", "input_folders"]

logger = logging.getLogger(__name__)

_GLOB_CHARACTERS = frozenset("*?[")


class InputFile(NamedTuple):
    """One input: ``path`` as found (a string, cheap to hold by the million) and ``key``, the
    POSIX-style relative path without suffix that names its outputs (``"sub/a"``)."""

    path: str
    key: str


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the inputs whose key hashes to ``index`` modulo ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"shard {name} must be an integer, got {getattr(self, name)!r}")
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count} does not exist; expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (``--shard 3/8``) as a Shard; a one-line ``ValueError`` for anything else."""
        index, sep, count = str(text).partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise ValueError(f"--shard {text!r} is not I/N with 0 <= I < N (e.g. --shard 0/4){detail}") from None

    def within(self, outer: Shard | None) -> Shard:
        """This shard of ``outer``'s inputs as one shard of all inputs (``--shard`` of a job array,
        then the ranks of ``torchrun`` inside each job): ``(outer.index * count + index) / (outer.count * count)``."""
        if outer is None:
            return self
        return Shard(outer.index * self.count + self.index, outer.count * self.count)

    def owns(self, key: str) -> bool:
        """Whether the input named ``key`` belongs to this shard."""
        if self.count == 1:
            return True
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def select(self, inputs: Iterable[InputFile]) -> list[InputFile]:
        """The inputs of this shard, in their order."""
        return [item for item in inputs if self.owns(item.key)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_from_environment() -> Shard | None:
    """This process's shard under ``torchrun`` (``RANK`` of ``WORLD_SIZE``), or None outside it.

    Raises ``ValueError`` naming the variable when it is set but not a valid rank.
    """
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if not rank or not world:
        return None
    try:
        return Shard(int(rank), int(world))
    except ValueError:
        raise ValueError(
            f"RANK={rank!r} WORLD_SIZE={world!r} (set by torchrun) are not a rank 0 <= RANK < WORLD_SIZE"
        ) from None


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARACTERS for c in text) and not Path(text).exists()


def _glob_root(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard (``photos/2024/**/*.jpg`` -> ``photos/2024``)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in _GLOB_CHARACTERS for c in part):
            break
        fixed.append(part)
    return os.path.join(*fixed) if fixed else "."


def read_path_list(path: str | os.PathLike) -> list[str]:
    """The paths listed in the text file ``path``: one per line, blank lines and ``#`` comments skipped.

    Read by :func:`pspnet_lib.core.text.read_lines` (UTF-8, byte-order marks, CRLF line ends).
    Relative paths are taken relative to the current folder (as ``tar -T`` and ``xargs`` do).
    Raises ``FileNotFoundError`` when the list itself is missing and ``ValueError`` when it is
    not such text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list of inputs not found: {path} (--files-from takes a text file, one path a line)")
    return [line for line in read_lines(path) if line and not line.startswith("#")]


def list_inputs(
    inputs: Sequence[str | os.PathLike] = (),
    *,
    recursive: bool = False,
    files_from: str | os.PathLike | None = None,
) -> list[InputFile]:
    """Every input file that ``inputs`` and ``files_from`` name, in a stable order, with output keys.

    Args:
        inputs: files (taken whatever their extension), folders (their files with an image
            extension, :data:`~pspnet_lib.core.images.IMAGE_EXTENSIONS`; sub-folders with
            ``recursive``) and glob patterns (``"photos/**/*.jpg"``; ``**`` crosses folders),
            which keep a shell from expanding millions of names into one command line.
        recursive: also search the sub-folders of folder inputs.
        files_from: a text file listing input files, one a line (:func:`read_path_list`). The
            listed files are not checked here (a million ``stat`` calls): one that is missing is
            reported when it is read.

    Returns the inputs sorted within each argument, duplicates (the same path named twice)
    dropped. The key of each is its path relative to its folder (a folder argument, a glob's
    fixed part, an explicit file's parent), or, when these folders differ, relative to their
    common parent; without the suffix, with ``/`` separators.

    Raises ``FileNotFoundError`` for a named file or folder that does not exist and ``ValueError``
    when two inputs would have the same key (``a.jpg`` and ``a.png`` in one folder), naming both.
    """
    found: list[tuple[str, str]] = []  # (path, the folder its key is relative to)
    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_dir():
            files = _folder_files(path, recursive)
            if not files:
                logger.warning(
                    "no image files in %s%s", path, "" if recursive else " (use --recursive for sub-folders)"
                )
            found += [(f, text) for f in files]
        elif path.is_file():
            found.append((text, str(path.parent)))
        elif _is_glob(text):
            matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not matches:
                logger.warning("no files match %s", text)
            found += [(m, _glob_root(text)) for m in matches]
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if files_from is not None:
        found += [(p, os.path.dirname(p) or ".") for p in read_path_list(files_from)]
    return _keyed(found)


def _folder_files(folder: Path, recursive: bool) -> list[str]:
    if not recursive:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and _has_image_suffix(e.name))
        return [os.path.join(folder, n) for n in names]
    files: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if _has_image_suffix(n)]
    return sorted(files, key=lambda f: Path(f).relative_to(folder).parts)


def _has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _keyed(found: list[tuple[str, str]]) -> list[InputFile]:
    roots = {os.path.abspath(root) for root in {root for _, root in found}}
    base = roots.pop() if len(roots) == 1 else os.path.commonpath(sorted(roots)) if roots else ""
    prefix = base.rstrip(os.sep) + os.sep
    seen: dict[str, str] = {}  # key -> path
    result: list[InputFile] = []
    for path, _ in found:
        absolute = os.path.abspath(path)
        # string slicing, not relpath: a million inputs are listed in seconds
        relative = absolute[len(prefix) :] if absolute.startswith(prefix) else os.path.relpath(absolute, base)
        key = os.path.splitext(relative)[0].replace(os.sep, "/")
        if key in seen:
            if os.path.abspath(seen[key]) == absolute:
                continue  # named twice (a folder and one of its files)
            raise ValueError(
                f"{seen[key]} and {path} would both be written as {key}.png; rename one or segment them in "
                "separate runs with different --out folders"
            )
        seen[key] = path
        result.append(InputFile(path, key))
    return result


def input_folders(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The folders that ``inputs`` search (folder arguments and the fixed part of glob patterns)."""
    folders: list[Path] = []
    for raw in inputs:
        text = os.fspath(raw)
        if Path(text).is_dir():
            folders.append(Path(text))
        elif _is_glob(text):
            folders.append(Path(_glob_root(text)))
    return folders
