"""Writing each input's files and manifest record, and counting: the part of a batch prediction
that every runner shares (:mod:`pspnet_lib.inference.batch` drives it).

Each input's files are staged under temporary names (:func:`~pspnet_lib.inference.jobs.staged_outputs`),
its ``done`` record is appended to the manifest, then the files are renamed into place. A failure
of one input (its decoding, its forward pass, its writing, its runner) is recorded ``failed`` with
a one-line reason and logged; only a manifest that cannot be written stops the run.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from .inputs import InputFile, Shard
from .jobs import InputRunner, RunContext, staged_outputs
from .manifest import ManifestWriteError, ManifestWriter
from .pipeline import Outcome, one_line

__all__ = ["PredictSummary", "Recorder"]

logger = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    """What a run did, for this process's shard. ``failed``: ``(input, one-line reason)`` pairs."""

    out: Path
    manifest: Path
    shard: Shard | None
    total: int
    done: int = 0
    already_done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No input failed (the process should exit 0)."""
        return not self.failed

    def line(self) -> str:
        """The one-line summary ``pspnet predict`` prints."""
        text = f"segmented {self.done} of {self.total} image(s) into {self.out}"
        if self.shard is not None:
            text = f"shard {self.shard}: {text}"
        if self.already_done:
            text += f"; {self.already_done} already done"
        if self.skipped:
            text += f"; {self.skipped} skipped (outputs present)"
        if self.failed:
            shown = ", ".join(path for path, _ in self.failed[:5])
            more = f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
            text += f"; {len(self.failed)} failed: {shown}{more}"
        if self.stopped:
            text += f"; stopped at the first failure ({self.failed[0][1]})" if self.failed else "; stopped"
        return f"{text}; manifest: {self.manifest}"


class Recorder:
    """Writes each input's files and record into ``manifest`` and counts into ``summary``; with
    ``fail_fast`` it stops at the first failure (inputs already being written finish)."""

    def __init__(
        self, out: Path, manifest: ManifestWriter, context: RunContext, summary: PredictSummary, fail_fast: bool
    ) -> None:
        self.out, self.manifest, self.context, self.summary, self.fail_fast = out, manifest, context, summary, fail_fast
        self._lock = threading.Lock()  # writer threads count into one summary

    def _commit(
        self, item: InputFile, runner: InputRunner, work: Callable[[dict[str, Path]], dict[str, Any]], seconds: float
    ) -> None:
        start = time.perf_counter()
        names = runner.outputs(item.key)
        try:
            with staged_outputs({kind: self.out / name for kind, name in names.items()}) as staged:
                fields = work(staged)
                record = {"input": item.path, "status": "done", "outputs": names, **fields}
                record["seconds"] = round(seconds + time.perf_counter() - start, 4)
                self.manifest.append(record)  # before the renames: every present output has its record
        except ManifestWriteError:
            raise
        except Exception as exc:  # this input's failure (a write, a runner): recorded, the run goes on
            self.fail(item, one_line(exc), seconds + time.perf_counter() - start)
            return
        with self._lock:
            self.summary.done += 1

    def fail(self, item: InputFile, reason: str, seconds: float) -> None:
        logger.error("failed %s: %s", item.path, reason)
        self.manifest.append({"input": item.path, "status": "failed", "error": reason, "seconds": round(seconds, 4)})
        with self._lock:
            self.summary.failed.append((item.path, reason))
            if self.fail_fast:
                self.summary.stopped = True

    def unbatched(self, model: nn.Module, item: InputFile, runner: InputRunner) -> None:
        self._commit(item, runner, lambda staged: runner.run(model, item.path, staged, self.context), 0.0)

    def batched(
        self, outcomes: Iterable[Outcome], jobs: list[tuple[InputFile, InputRunner]], threads: int, bar: Any
    ) -> None:
        def write(outcome: Outcome) -> None:
            item, runner = jobs[outcome.index]
            prediction = outcome.prediction
            assert prediction is not None  # failures are recorded before
            self._commit(item, runner, lambda staged: runner.write(prediction, staged, self.context), outcome.seconds)

        pool = (
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pspnet-write") if threads > 0 else None
        )
        pending: set[futures.Future[None]] = set()
        try:
            for outcome in outcomes:
                if outcome.prediction is None:  # recorded here, so that fail_fast stops before the next input
                    self.fail(jobs[outcome.index][0], outcome.error or "unknown error", outcome.seconds)
                    bar.update(1)
                elif pool is None:
                    write(outcome)
                    bar.update(1)
                else:
                    pending.add(pool.submit(write, outcome))
                    if len(pending) >= 2 * threads:  # bounded: decoded pictures wait in the loader, not here
                        done, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                        self._collect(done, bar)
                if self.summary.stopped:
                    break
            self._collect(futures.wait(pending)[0], bar)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    @staticmethod
    def _collect(done: Iterable[futures.Future[None]], bar: Any) -> None:
        for future in done:
            future.result()  # re-raises a manifest failure
            bar.update(1)
