"""The Trainer's state: ``state_dict`` / ``load_state_dict``, atomic checkpoints and exact resumption
(:class:`RunCheckpoints`, a collaborator with explicit inputs held as ``Trainer.checkpoints``)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._files import atomic_save, atomic_write_bytes, remove_stale_temporaries
from ..core.digest import content_digest
from . import distributed as D
from .checkpoint import (
    CHECKPOINT_FORMAT,
    DIGEST_KEY,
    atomic_link,
    checkpoint_name,
    explain_write_failure,
    get_rng_state,
    load_checkpoint,
    load_resume_checkpoint,
    resume_candidates,
    rotate_checkpoints,
    set_rng_state,
    state_nbytes,
)
from .config import TrainConfig
from .optim import PolyLambda
from .sampler import mix_seed, set_seed

__all__ = ["RunCheckpoints"]

logger = logging.getLogger("pspnet_lib.engine.trainer")

#: The files a run writes in its directory besides ``checkpoints/`` (``model/``: ``save_pretrained``'s).
RUN_FILES = (
    "train_config.json",
    "history.json",
    "metrics.json",
    "model/config.json",
    "model/model.safetensors",
    "model/README.md",
)

# Settings whose change between a checkpoint and its resumption alters the training trajectory.
_TRAJECTORY_FIELDS = (
    "iters",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "head_lr_mult",
    "poly_power",
    "min_lr",
    "warmup_iters",
    "aux_weight",
    "loss",
    "aux_loss",
    "class_weight",
    "sampler",
    "grad_accum",
    "amp",
    "seed",
    "freeze_backbone",
    "freeze_bn",
)


class RunCheckpoints:
    """Checkpoints and resumption of :class:`~pspnet_lib.engine.trainer.Trainer`, with everything it
    uses given here: what a checkpoint holds, its atomic write with ``latest.pt``/``best.pt`` links
    and rotation, ``history.json``, finding the checkpoint to resume from, and the one-line error of
    a failed write.

    Args:
        config: the run's :class:`~pspnet_lib.engine.TrainConfig` (recorded, ``keep_last``, ``seed``,
            the schedule restored on resumption).
        dist: the process set-up (rank 0 writes; ``dist.device`` is where states are loaded).
        model: the bare model (not the DDP wrapper); ``optimizer``, ``scheduler``, ``scaler``: the run's.
        out_dir: the run directory (checkpoints in ``out_dir/checkpoints``).

    The run's counters (iteration, best mIoU, history) stay the Trainer's: the methods take them as
    arguments and :meth:`load_state_dict` returns them. This object keeps what only checkpoints
    need: the iteration of the last numbered checkpoint written (``saved_at``, -1 before one) and
    ``last_checkpoint``, ``(path, iteration)`` of the newest complete numbered checkpoint (written
    or resumed from), or ``None``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        dist: D.DistInfo,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        scaler: torch.amp.GradScaler,
        out_dir: Path,
    ) -> None:
        self.config, self.dist, self.model = config, dist, model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.out_dir = out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.saved_at = -1
        self.last_checkpoint: tuple[Path, int] | None = None

    def _log(self, msg: str, *args: Any, level: int = logging.INFO) -> None:
        if self.dist.is_main:
            logger.log(level, msg, *args)

    def state_dict(
        self,
        *,
        iteration: int,
        best_miou: float,
        history: list[dict[str, Any]],
        rng_states: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Everything needed to continue this run exactly (what a checkpoint holds)."""
        model_config = getattr(self.model, "config", None)  # a PSPNetConfig (a user's model may have none)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "iteration": iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states if rng_states is not None else [get_rng_state()],
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "model_config": model_config.to_dict()
            if model_config is not None and hasattr(model_config, "to_dict")
            else None,
            "pretrained_cfg": getattr(self.model, "pretrained_cfg", {}),
            "best_miou": best_miou if math.isfinite(best_miou) else None,
            "history": history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> tuple[int, float, list[dict[str, Any]]]:
        """Restore a :meth:`state_dict`'s model, optimiser, schedule, scaler and RNG states; returns
        its counters ``(iteration, best_miou, history)`` (``best_miou`` ``-inf`` before a validation)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # Keep the schedule of *this* config (a resumed run may extend iters) at the restored position.
        c = self.config
        for lam in self.scheduler.lr_lambdas:
            if isinstance(lam, PolyLambda):
                lam.total_iters, lam.power, lam.warmup_iters, lam.warmup_ratio = (
                    c.iters,
                    c.poly_power,
                    c.warmup_iters,
                    c.warmup_ratio,
                )
        for group, base, lam in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * lam(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        iteration = int(state["iteration"])
        best_miou = state["best_miou"] if state.get("best_miou") is not None else -math.inf
        history = list(state.get("history") or [])
        rng = state.get("rng") or []
        if len(rng) == self.dist.world_size:
            set_rng_state(rng[self.dist.rank])
        else:
            self._log(
                "the checkpoint was written by %d processes and %d resume it: dropout and other RNG streams "
                "are re-seeded (the data order still continues exactly)",
                len(rng),
                self.dist.world_size,
                level=logging.WARNING,
            )
            set_seed(mix_seed(self.config.seed, self.dist.rank, iteration))
        return iteration, best_miou, history

    def find_resume(self, resume: bool | str | Path) -> tuple[Path, Mapping[str, Any]] | None:
        """The checkpoint to resume from and its state, or ``None`` to start a new run.

        ``resume`` is the Trainer's: ``False`` (an existing run in ``out_dir`` is a
        ``FileExistsError``), ``True`` (``latest.pt``, falling back to the newest readable
        ``iter_*.pt``; none: a new run) or a path. Rank 0 decides, reading the checkpoint (the run
        directory must be on a file system every process can read), and every process gets its
        decision or its error (``FileNotFoundError``, ``ValueError``). Changed settings that alter
        the trajectory are logged as a warning."""
        decision: tuple[str | None, str | None, str | None] = (None, None, None)
        state = None
        if self.dist.is_main:
            candidates = resume_candidates(self.ckpt_dir)
            if resume is True:
                if not candidates:
                    logger.info("no checkpoint in %s: starting a new run", self.ckpt_dir)
            elif resume:
                chosen = Path(resume)
                # An explicit latest.pt falls back like the default; another file is taken as given.
                candidates = [chosen] + (resume_candidates(chosen.parent)[1:] if chosen.name == "latest.pt" else [])
            elif candidates:
                decision = (
                    None,
                    "exists",
                    f"{self.out_dir} already holds checkpoints of a run; resume it "
                    "(resume=True / --resume) or choose another out_dir",
                )
                candidates = []
            else:
                candidates = []
            if candidates:
                try:
                    found = load_resume_checkpoint(candidates, map_location=self.dist.device)
                except (ValueError, OSError) as exc:
                    decision = (None, type(exc).__name__, str(exc))
                else:
                    if found is not None:
                        path, state = found
                        decision = (str(path), None, None)
        found_path, kind, error = D.broadcast_object(decision)
        if error:
            raise {"exists": FileExistsError, "FileNotFoundError": FileNotFoundError}.get(kind, ValueError)(error)
        if found_path is None:
            return None
        path = Path(found_path)
        if state is None:  # the other processes read the file rank 0 chose
            state = load_checkpoint(path, map_location=self.dist.device)
        saved = state.get("config") or {}
        changed = [
            f"{k}: {saved[k]!r} -> {getattr(self.config, k)!r}"
            for k in _TRAJECTORY_FIELDS
            if k in saved and saved[k] != getattr(self.config, k)
        ]
        if changed:
            self._log(
                "resuming with changed settings (the run will differ from an uninterrupted one): %s",
                "; ".join(changed),
                level=logging.WARNING,
            )
        return path, state

    def resumed(self, path: Path, iteration: int) -> None:
        """Record that the run resumed from ``path`` (restored at ``iteration``) and, on rank 0, remove
        what a kill left behind."""
        self.last_checkpoint = (path, iteration)
        self._log("resumed from %s at iteration %d", path, iteration)
        if self.dist.is_main:
            self._tidy_run_dir(path)

    def _tidy_run_dir(self, resumed_from: Path) -> None:
        """What a kill left behind: numbered checkpoints beyond ``keep_last`` (a kill between writing one
        and rotating) and temporary files of interrupted writes, removed before the run goes on (a
        resumed run that has nothing left to train writes no checkpoint that would rotate them)."""
        removed = rotate_checkpoints(self.ckpt_dir, self.config.keep_last, protect=resumed_from)
        for name in RUN_FILES:
            removed += remove_stale_temporaries(self.out_dir / name)
        if removed:
            self._log("removed what an interrupted run left: %s", ", ".join(p.name for p in removed))

    def save(
        self,
        *,
        iteration: int,
        best_miou: float,
        history: list[dict[str, Any]],
        numbered: bool = True,
        best: bool = False,
    ) -> Path | None:
        """Write the run's state atomically (rank 0; every process takes part in gathering the RNG
        states and averaging BatchNorm buffers); ``latest.pt`` follows numbered checkpoints, then
        ``history.json`` is rewritten. Returns the path written (``None`` on other ranks)."""
        D.average_buffers(self.model, self.dist)
        rng_states = D.all_gather_objects(get_rng_state())
        if not self.dist.is_main:
            return None
        state = self.state_dict(iteration=iteration, best_miou=best_miou, history=history, rng_states=rng_states)
        state[DIGEST_KEY] = content_digest(state)  # verified by --resume and load_pretrained
        path = self.ckpt_dir / (checkpoint_name(iteration) if numbered else "best.pt")
        with self.explain_write_failure(path, state=state):
            if numbered:
                atomic_save(state, path)
                atomic_link(path, self.ckpt_dir / "latest.pt")
                if best:
                    atomic_link(path, self.ckpt_dir / "best.pt")
                # Complete and linked: from here on a resume starts here, whatever fails next.
                self.last_checkpoint = (path, iteration)
                rotate_checkpoints(self.ckpt_dir, self.config.keep_last)
                self.saved_at = iteration
            elif best:
                atomic_save(state, path)
            self.write_history(history)
        logger.debug("checkpoint written: %s", path)
        return path

    def note(self) -> str:
        """What a stop leaves: the last good checkpoint (and how to resume), or none yet."""
        latest = self.ckpt_dir / "latest.pt"
        if self.saved_at >= 0 or latest.is_file():
            return (
                f"the last good checkpoint {latest} (iteration {self.saved_at}) is intact; resume from it with "
                "resume=True / --resume after changing the settings"
            )
        return "no checkpoint had been written yet"

    def explain_write_failure(
        self, path: Path, *, state: Any = None, nbytes: int | None = None, what: str = "checkpoint"
    ) -> contextlib.AbstractContextManager:
        """A failed write (a full disk above all) becomes one line naming the file, the space needed
        and free, the last complete checkpoint and ``--resume`` (see
        :func:`~pspnet_lib.engine.checkpoint.explain_write_failure`).

        The space needed is ``nbytes`` if given, else the size of the last checkpoint, else the
        size of ``state``'s tensors."""
        last = self.last_checkpoint
        if nbytes is not None:
            needed, source = nbytes, f"the size of the {what}"
        elif last is not None and last[0].is_file():
            needed, source = last[0].stat().st_size, f"the size of {last[0].name}"
        else:
            needed, source = state_nbytes(state), f"the size of the {what}'s tensors"
        return explain_write_failure(path, needed=needed, needed_source=source, last_checkpoint=last, what=what)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """``history.json``: the run's settings and ``history``, written atomically."""
        payload = {"config": self.config.to_dict(), "history": history}
        atomic_write_bytes(self.out_dir / "history.json", (json.dumps(payload, indent=1) + "\n").encode())
