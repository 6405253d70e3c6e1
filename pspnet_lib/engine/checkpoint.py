"""Crash-safe training checkpoints: atomic writes, ``latest.pt``/``best.pt`` and keep-last-K rotation.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed
over its final name (``os.replace`` is atomic on POSIX and Windows), so a run killed at any
moment leaves either the previous complete file or the new complete file, never a torn one.
``latest.pt`` and ``best.pt`` are hard links to the numbered files (copies where the file system
has no hard links), so each is itself a complete checkpoint that ``torch.load`` reads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_save, atomic_write_bytes, fsync_dir
from ..core.constants import CHECKPOINT_FORMAT
from ..core.digest import DIGEST_KEY, content_digest

__all__ = [
    "CHECKPOINT_FORMAT",
    "DIGEST_KEY",
    "content_digest",
    "CheckpointWriteError",
    "explain_write_failure",
    "load_resume_checkpoint",
    "resume_candidates",
    "state_nbytes",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_link",
    "load_checkpoint",
    "find_resume_checkpoint",
    "rotate_checkpoints",
    "get_rng_state",
    "set_rng_state",
    "checkpoint_name",
]

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^iter_(\d+)\.pt$")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_link(source: str | os.PathLike, link: str | os.PathLike) -> None:
    """Make ``link`` name the same complete file as ``source`` (hard link, or a copy), atomically."""
    source, link = Path(source), Path(link)
    tmp = _temp_path(link)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network / FAT file systems): copy instead
            shutil.copyfile(source, tmp)
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(link.parent)


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}.pt"


def rotate_checkpoints(
    directory: str | os.PathLike, keep_last: int, *, protect: str | os.PathLike | None = None
) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``iter_*.pt`` files; returns what was removed.

    ``latest.pt``/``best.pt`` are separate links and survive the removal of the file they share.
    ``protect`` (e.g. the checkpoint a run resumed from, when newer ones were damaged) is never
    removed. Stale temporary files of killed runs are removed too.
    """
    directory = Path(directory)
    numbered = sorted((int(m.group(1)), p) for p in directory.glob("iter_*.pt") if (m := _NUMBERED.match(p.name)))
    kept = Path(os.path.realpath(protect)) if protect is not None else None
    removed = []
    if keep_last > 0:
        for _, path in numbered[:-keep_last]:
            if kept is not None and Path(os.path.realpath(path)) == kept:
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
    for tmp in directory.glob(".*.tmp*"):  # left by a killed writer (atomic_output, atomic_link)
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid != str(os.getpid()):
            tmp.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint with the library's safe reader and check that it is one.

    Reads through :func:`pspnet_lib.hub.serialization.read_checkpoint` (tensors and plain
    containers only, never arbitrary pickled objects), then moves the tensors to ``map_location``.

    The content digest the Trainer records is verified (:func:`~pspnet_lib.hub.serialization.check_content_digest`)
    and removed from the returned state.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: (a ``CheckpointError``) the file is truncated, corrupt, damaged after it was
            written (its content digest differs) or unsafe; or it is not a training checkpoint of
            this library.
    """
    from ..hub.serialization import check_content_digest, read_checkpoint  # the hub sits below the engine

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # No opt-in to full pickle here: a training checkpoint holds tensors and plain data only.
    state = read_checkpoint(path, opt_in="pspnet train never writes such objects: resume only from its own checkpoints")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a pspnet_lib training checkpoint (to start from pretrained weights use "
            "--weights / load_pretrained instead of resume)"
        )
    check_content_digest(state, str(path))
    state.pop(DIGEST_KEY, None)
    if torch.device(map_location).type != "cpu":
        state = _to_device(state, torch.device(map_location))
    return state


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in directory.glob("iter_*.pt") if (m := _NUMBERED.match(p.name)))


def find_resume_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from in a run directory: ``latest.pt``, else the newest ``iter_*.pt``.

    This only looks at names; :func:`load_resume_checkpoint` also reads them and falls back.
    """
    candidates = resume_candidates(Path(out_dir) / "checkpoints")
    return candidates[0] if candidates else None


def resume_candidates(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints of a run, in the order to try them: ``latest.pt``, then ``iter_*.pt`` newest first."""
    directory = Path(checkpoint_dir)
    latest = directory / "latest.pt"
    return ([latest] if latest.is_file() else []) + [p for _, p in reversed(_numbered(directory))]


def load_resume_checkpoint(
    candidates: Sequence[str | os.PathLike], map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """Load the first readable training checkpoint of ``candidates`` (see :func:`resume_candidates`).

    A torn or corrupt ``latest.pt`` (e.g. a copy cut short, a disk error) must not stop a resume
    while an intact ``iter_*.pt`` lies beside it: the files are tried in order and a fallback is
    logged as a warning naming the unreadable file(s) and the one used. Returns None for no
    candidates.

    Raises:
        ValueError: (a ``CheckpointError``) none is readable; the message lists every file tried and why.
    """
    from ..hub.serialization import CheckpointError

    failures: list[tuple[Path, str]] = []
    for raw in candidates:
        path = Path(raw)
        try:
            state = load_checkpoint(path, map_location=map_location)
        except (ValueError, OSError, RuntimeError) as exc:
            failures.append((path, _short_reason(exc, path)))
            continue
        if failures:
            logger.warning(
                "cannot resume from %s (%s); resuming from %s instead (iteration %s), the newest readable checkpoint",
                ", ".join(str(p) for p, _ in failures),
                "; ".join(reason for _, reason in failures),
                path,
                state.get("iteration"),
            )
        return path, state
    if not failures:
        return None
    tried = "; ".join(f"{p}: {reason}" for p, reason in failures)
    raise CheckpointError(
        f"cannot resume: none of the {len(failures)} checkpoint(s) can be read ({tried}). Restore a copy of one, "
        "or start a new run with another --out (out_dir)"
    )


def _short_reason(exc: BaseException, path: Path) -> str:
    """The gist of a reader's error about ``path``, without the path and the advice around it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = text.replace(f"cannot read checkpoint {path} ", "").replace(str(path), "it")
    text = re.sub(r"^\((\d+ bytes)\): ", r"\1, ", text).split(". ")[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


#: The message of the RuntimeError that torch's zip writer raises when the file system stops taking data.
_TORCH_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos", "file write failed")


class CheckpointWriteError(OSError):
    """A checkpoint or model file could not be written (e.g. no space left); nothing half-written was kept.

    ``errno`` is ``errno.ENOSPC`` when the cause is a full disk (or quota).
    """


def state_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: about the size of its ``torch.save`` file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _free_space(path: Path) -> int | None:
    for folder in (path.parent, *path.parent.parents):
        if folder.is_dir():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


@contextlib.contextmanager
def explain_write_failure(
    path: str | os.PathLike,
    *,
    needed: int,
    needed_source: str,
    last_checkpoint: tuple[Path, int] | None,
    what: str = "checkpoint",
) -> Iterator[None]:
    """Turn a failed write inside the block into one :class:`CheckpointWriteError` line for the user.

    The message names ``path``, the space needed (``needed`` bytes, estimated from
    ``needed_source``) and the free space, says whether the disk is full, names the last complete
    checkpoint (``(path, iteration)``, or says none was written) and how to continue
    (``--resume``). torch's zip writer reports a full disk only as ``[enforce fail at
    inline_container.cc] . unexpected pos ...``: a writer failure while less space is free than
    needed counts as a full disk. Other exceptions pass through unchanged.
    """
    path = Path(path)
    try:
        yield
    except CheckpointWriteError:
        raise
    except (OSError, RuntimeError) as exc:
        text = str(exc)
        writer_failure = isinstance(exc, RuntimeError) and any(m in text for m in _TORCH_WRITER_FAILURES)
        if not (isinstance(exc, OSError) or writer_failure):
            raise
        free = _free_space(path)
        no_space = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            writer_failure and free is not None and free < needed
        )
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        cause = "no space left on the device" if no_space else f"the write failed ({first_line})"
        space = f"{_size(free)} free" if free is not None else "free space unknown"
        if last_checkpoint is not None:
            kept = (
                f"the last complete checkpoint is {last_checkpoint[0]} (iteration {last_checkpoint[1]}), "
                f"and nothing half-written was kept: {'free some space' if no_space else 'fix the cause'} "
                "(or keep fewer files with --keep-last) and continue with --resume"
            )
        else:
            kept = (
                f"no checkpoint had been written yet and nothing half-written was kept: "
                f"{'free some space' if no_space else 'fix the cause'} and run the same command again "
                "(the same --seed starts from the same initialisation)"
            )
        error = CheckpointWriteError(
            f"cannot write the {what} {path}: {cause} ({space} in {path.parent}, about {_size(needed)} needed: "
            f"{needed_source}); {kept}"
        )
        if no_space:
            error.errno = errno.ENOSPC
        raise error from exc


def get_rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy form, which get_state() returns by default
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python[-1], tuple(python[:-1]), state["python_gauss"]))
