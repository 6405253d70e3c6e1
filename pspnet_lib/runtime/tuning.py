"""The fast path's timing decisions, remembered across processes.

With ``space_to_batch="auto"`` or ``winograd="auto"``, the first call of a
:class:`~pspnet_lib.runtime.FastPSPNet` per input shape times the alternatives (direct or
Winograd 3x3 convolutions, dilated or space-to-batch stages): several seconds for ResNet-50-D8 at
512x512 on two cores, against about half a second for later calls. The answers depend on the
machine and the problem shape, not on the weights, so they are stored in a small JSON file and a
new process (e.g. each ``pspnet predict --fast`` run) reuses them instead of timing again.

Entries are keyed by a fingerprint of the device (CPU model or GPU name, torch version, number of
threads) and of the operation (channels, dtype, back end, input shape), so a different machine,
torch build or thread count calibrates afresh. The file is ``<torch hub dir>/pspnet_lib/tuning.json``
(``TORCH_HOME`` moves it), or the path in ``PSPNET_TUNING_CACHE``; set that variable to ``off``
(or pass ``tuning_cache=False`` to ``optimize_for_inference``) to keep decisions in memory only.
Deleting the file is always safe: it only costs one calibration.

A damaged file is ignored with a warning and rewritten; a file that cannot be written (read-only
home, full disk) only costs the persistence, never the inference.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write_bytes

__all__ = ["TuningCache", "default_tuning_path", "tuning_cache", "device_fingerprint", "clear_tuning_cache"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_ENV = "PSPNET_TUNING_CACHE"
_OFF = {"0", "off", "false", "no", "none", ""}
# Oldest sections are dropped beyond this many, so a long-lived cache cannot grow without bound.
_MAX_SECTIONS = 2048


def default_tuning_path() -> Path | None:
    """Where decisions are stored: ``$PSPNET_TUNING_CACHE``, else ``<torch hub dir>/pspnet_lib/tuning.json``.

    ``None`` when the variable disables persistence (``off``, ``0``, ``false``).
    """
    env = os.environ.get(_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "pspnet_lib" / "tuning.json"


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(device: torch.device) -> str:
    """What a timing decision depends on besides the problem: hardware, torch build, threads."""
    index = device.index
    if device.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    return _fingerprint(device.type, index, torch.get_num_threads())


@functools.cache
def _fingerprint(device_type: str, index: int | None, threads: int) -> str:
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability(index)
        hw = f"cuda:{torch.cuda.get_device_name(index)}:sm{major}{minor}:cudnn{torch.backends.cudnn.version()}"
    else:
        hw = f"{device_type}:{_cpu_model()}:threads{threads}"
    return f"{hw}|torch{torch.__version__}"


class TuningCache:
    """Decisions in sections (one per operation and device), each mapping an input shape to a value.

    Reads the file lazily on first use; :meth:`flush` merges new decisions into the file under a
    lock and writes it atomically. ``path=None`` keeps everything in memory.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self._sections: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._loaded = self.path is None

    def _load(self) -> None:
        self._loaded = True
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if (
                not isinstance(data, dict)
                or data.get("version") != _FORMAT_VERSION
                or not isinstance(data.get("sections"), dict)
            ):
                raise ValueError(f"expected {{'version': {_FORMAT_VERSION}, 'sections': {{...}}}}")
            sections = {k: dict(v) for k, v in data["sections"].items() if isinstance(v, dict)}
        except (OSError, ValueError) as exc:
            logger.warning(
                "ignoring the fast path's tuning cache %s (%s); it will be recalibrated and rewritten",
                self.path,
                exc,
            )
            return
        for name, entries in sections.items():
            self._sections.setdefault(name, {}).update(entries)

    def section(self, name: str) -> dict[str, Any]:
        """The decisions recorded under ``name`` (shape key -> value); do not modify it."""
        if not self._loaded:
            self._load()
        return self._sections.get(name, {})

    def sections(self) -> dict[str, dict[str, Any]]:
        """A copy of every decision known to this process (for reports and debugging)."""
        if not self._loaded:
            self._load()
        return {name: dict(entries) for name, entries in self._sections.items()}

    def lookup(self, name: str, shape: Sequence[int], valid: Callable[[Any], bool], max_shapes: int) -> Any | None:
        """The decision recorded under ``name`` for an ``(N, C, H, W)`` input ``shape``, or ``None``: calibrate.

        Only values for which ``valid`` holds count (a file may hold anything). Once ``max_shapes``
        shapes are recorded, an unseen shape gets the decision of the recorded one with the closest
        pixel count ``N * H * W`` instead of a new calibration (e.g. whole-image inference on
        pictures of many sizes).
        """
        known = {k: v for k, v in self.section(name).items() if valid(v)}
        value = known.get(shape_key(shape))
        if value is None and len(known) >= max_shapes:
            pixels = shape[0] * shape[2] * shape[3]

            def distance(key: str) -> int:
                n, _, h, w = parse_shape(key)
                return abs(n * h * w - pixels)

            value = known[min(known, key=distance)]
        return value

    def put(self, name: str, shape: str, value: Any) -> None:
        """Record a decision (in memory; :meth:`flush` persists it)."""
        if not self._loaded:
            self._load()
        self._sections.setdefault(name, {})[shape] = value
        self._pending.setdefault(name, {})[shape] = value

    @torch.compiler.disable  # file I/O: keep out of compiled graphs
    def flush(self) -> None:
        """Merge new decisions into the file (other processes' entries are kept). Never raises."""
        if not self._pending or self.path is None:
            self._pending.clear()
            return
        pending, self._pending = self._pending, {}
        try:
            from filelock import FileLock

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path.with_name(f".{self.path.name}.lock")), timeout=30):
                sections: dict[str, dict[str, Any]] = {}
                if self.path.exists():
                    try:
                        data = json.loads(self.path.read_text())
                        stored = (
                            data.get("sections")
                            if isinstance(data, dict) and data.get("version") == _FORMAT_VERSION
                            else None
                        )
                        if isinstance(stored, dict):
                            sections = {k: v for k, v in stored.items() if isinstance(v, dict)}
                    except (OSError, ValueError):
                        pass  # damaged: replaced below (the warning came from _load)
                for name, entries in pending.items():
                    merged = sections.pop(name, {})
                    merged.update(entries)
                    sections[name] = merged  # re-inserted last: the newest survive trimming
                while len(sections) > _MAX_SECTIONS:
                    sections.pop(next(iter(sections)))
                text = json.dumps({"version": _FORMAT_VERSION, "sections": sections}, indent=1, sort_keys=False)
                atomic_write_bytes(self.path, text.encode())
            logger.info(
                "stored %d fast-path timing decisions in %s: later processes on this machine skip that calibration",
                sum(len(entries) for entries in pending.values()),
                self.path,
            )
        except Exception as exc:  # persistence is an optimisation: never fail inference over it
            logger.warning(
                "could not save the fast path's tuning decisions to %s (%s); they stay in memory for this "
                "process. Set %s to a writable file, or to 'off'.",
                self.path,
                exc,
                _ENV,
            )
            self.path = None


_CACHES: dict[Path | None, TuningCache] = {}


def _resolve(path: str | os.PathLike | bool | None) -> Path | None:
    if path is True:
        return default_tuning_path()
    if path is False or path is None:
        return None
    return Path(path).expanduser()


def tuning_cache(path: str | os.PathLike | bool | None = True) -> TuningCache:
    """The process-wide cache for ``path``: ``True`` = :func:`default_tuning_path`, ``False``/``None`` = memory only.

    Models optimised in one process share it, so identical layers are calibrated once.
    """
    resolved = _resolve(path)
    cache = _CACHES.get(resolved)
    if cache is None:
        cache = _CACHES[resolved] = TuningCache(resolved)
    return cache


def clear_tuning_cache(path: str | os.PathLike | bool | None = True) -> None:
    """Forget stored decisions, on disk and in this process: models optimised afterwards calibrate again."""
    resolved = _resolve(path)
    if resolved is not None:
        resolved.unlink(missing_ok=True)
    _CACHES.pop(resolved, None)


def shape_key(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def parse_shape(key: str) -> tuple[int, ...]:
    return tuple(int(s) for s in key.split("x"))
