"""The manifest of a batch prediction: one JSON object a line, one line an input.

``<out>/manifest.jsonl`` (``manifest-<I>-of-<N>.jsonl`` for shard I of N: each process writes its
own part, so no two processes append to one file). A record::

    {"input": "photos/sub/a.jpg", "status": "done", "outputs": {"mask": "sub/a.png"},
     "height": 480, "width": 640, "seconds": 0.231}

* ``status``: ``"done"`` (outputs written), ``"skipped"`` (``skip_existing``: the outputs were
  already there and no earlier record of them was found) or ``"failed"`` (with ``"error"``, one
  line: the reason);
* ``outputs``: kind -> path relative to the manifest's folder (``mask``, ``overlay``, the
  confidence kind);
* ``height``/``width``: the picture's size in pixels; ``seconds``: the time spent on this input
  (its decoding, its share of its batch's forward pass, its writing);
* with a confidence map: ``confidence_kind``, ``confidence_mean`` (the mean of the map on the
  picture's [0, 1] scale) and ``uncertainty`` (see :mod:`pspnet_lib.inference.confidence`).

A record is appended (and flushed) *before* its outputs are renamed into place, so every output
present has its record. A killed run can leave a truncated last line; :func:`read_manifest`
skips it. Read all parts with ``pandas.read_json(path, lines=True)`` or :func:`read_manifest`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .._files import atomic_output
from .inputs import Shard

__all__ = ["MANIFEST_NAME", "ManifestWriteError", "ManifestWriter", "manifest_path", "manifest_parts", "read_manifest"]

logger = logging.getLogger(__name__)

#: File name of the manifest of an unsharded run.
MANIFEST_NAME = "manifest.jsonl"


def manifest_path(out: str | os.PathLike, shard: Shard | None = None) -> Path:
    """Where the manifest (part) of a run into ``out`` is written: ``manifest.jsonl`` or ``manifest-00003-of-00008.jsonl``."""
    if shard is None or shard.count == 1:
        return Path(out) / MANIFEST_NAME
    return Path(out) / f"manifest-{shard.index:05d}-of-{shard.count:05d}.jsonl"


def manifest_parts(folder: str | os.PathLike) -> list[Path]:
    """The manifest files (``manifest.jsonl`` and every ``manifest-*-of-*.jsonl``) in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder} (expected the --out folder of a pspnet predict run)")
    return sorted(p for p in folder.glob("manifest*.jsonl") if p.is_file())


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):  # not the (possibly cut) last line of a killed run
                logger.warning("%s line %d is not JSON; ignored", path, number)
            continue
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            yield record
        else:
            logger.warning("%s line %d is not a manifest record; ignored", path, number)


def read_manifest(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The records of a manifest file, of every part in a folder, or of several of these, in order.

    A line that is not a JSON record (the cut last line of a killed run) is skipped. Raises
    ``FileNotFoundError`` for a missing file or folder, or a folder without a manifest.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[Path] = []
    for item in sources:
        path = Path(item)
        if path.is_dir():
            parts = manifest_parts(path)
            if not parts:
                raise FileNotFoundError(
                    f"no manifest*.jsonl in {path}; pspnet predict writes one into its --out folder"
                )
            files += parts
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"manifest not found: {path}")
    return [record for file in files for record in _records(file)]


class ManifestWriteError(OSError):
    """The manifest cannot be written (e.g. the disk is full): a run stops, since nothing can be recorded."""


class ManifestWriter:
    """Appends records to a manifest part, one flushed line each; safe to call from several threads.

    ``ManifestWriter(path, keep=records)`` first rewrites ``path`` atomically with ``keep`` (the
    earlier records a resumed run keeps), then appends. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, keep: Iterable[dict[str, Any]] = ()) -> None:
        self.path = Path(path)
        with atomic_output(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for record in keep:
                    f.write(_line(record))
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and flush it to the operating system (it survives a SIGKILL)."""
        line = _line(record)
        with self._lock:
            if self._file is None:
                raise ManifestWriteError(f"the manifest {self.path} is closed")
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                raise ManifestWriteError(f"cannot write the manifest {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"
