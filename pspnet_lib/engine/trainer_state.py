"""The Trainer's state: ``state_dict`` / ``load_state_dict``, atomic checkpoints and exact resumption."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._files import remove_stale_temporaries
from . import distributed as D
from .checkpoint import (
    CHECKPOINT_FORMAT,
    DIGEST_KEY,
    atomic_link,
    atomic_save,
    atomic_write_bytes,
    checkpoint_name,
    content_digest,
    explain_write_failure,
    get_rng_state,
    load_checkpoint,
    load_resume_checkpoint,
    resume_candidates,
    rotate_checkpoints,
    set_rng_state,
    state_nbytes,
)
from .optim import PolyLambda
from .sampler import mix_seed, set_seed
from .trainer_base import TrainerBase

__all__ = ["CheckpointMixin"]

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


class CheckpointMixin(TrainerBase):
    """Checkpoints and resumption of :class:`~pspnet_lib.engine.trainer.Trainer`."""

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to continue this run exactly (what a checkpoint holds)."""
        model_config = getattr(self.model, "config", None)  # a PSPNetConfig (a user's model may have none)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "iteration": self.iteration,
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
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (model, optimiser, schedule, scaler, counters and RNG states)."""
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
        self.iteration = int(state["iteration"])
        self.best_miou = state["best_miou"] if state.get("best_miou") is not None else -math.inf
        self.history = list(state.get("history") or [])
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
            set_seed(mix_seed(self.config.seed, self.dist.rank, self.iteration))

    def _restore_or_seed(self) -> None:
        if self._restored:
            return
        self._restored = True
        # Rank 0 decides, reading the checkpoint (the run directory must be on a file system every
        # process can read); a torn latest.pt falls back to the newest readable iter_*.pt.
        decision: tuple[str | None, str | None, str | None] = (None, None, None)
        state = None
        if self.is_main:
            candidates = resume_candidates(self.ckpt_dir)
            if self._resume is True:
                if not candidates:
                    logger.info("no checkpoint in %s: starting a new run", self.ckpt_dir)
            elif self._resume:
                chosen = Path(self._resume)
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
                    found = load_resume_checkpoint(candidates, map_location=self.device)
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
            set_seed(mix_seed(self.config.seed, self.dist.rank))
            return
        path = Path(found_path)
        if state is None:  # the other processes read the file rank 0 chose
            state = load_checkpoint(path, map_location=self.device)
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
        self.load_state_dict(state)
        self._last_checkpoint = (path, self.iteration)
        self._log("resumed from %s at iteration %d", path, self.iteration)
        if self.is_main:
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

    def save_checkpoint(self, *, numbered: bool = True, best: bool = False) -> Path | None:
        """Write the run's state atomically (rank 0); ``latest.pt`` follows numbered checkpoints."""
        D.average_buffers(self.model, self.dist)
        rng_states = D.all_gather_objects(get_rng_state())
        if not self.is_main:
            return None
        state = self.state_dict(rng_states)
        state[DIGEST_KEY] = content_digest(state)  # verified by --resume and load_pretrained
        path = self.ckpt_dir / (checkpoint_name(self.iteration) if numbered else "best.pt")
        with self._explain_write_failure(path, state=state):
            if numbered:
                atomic_save(state, path)
                atomic_link(path, self.ckpt_dir / "latest.pt")
                if best:
                    atomic_link(path, self.ckpt_dir / "best.pt")
                # Complete and linked: from here on a resume starts here, whatever fails next.
                self._last_checkpoint = (path, self.iteration)
                rotate_checkpoints(self.ckpt_dir, self.config.keep_last)
                self._saved_at = self.iteration
            elif best:
                atomic_save(state, path)
            self._write_history()
        logger.debug("checkpoint written: %s", path)
        return path

    def _checkpoint_note(self) -> str:
        """What a stop leaves: the last good checkpoint (and how to resume), or none yet."""
        latest = self.ckpt_dir / "latest.pt"
        if self._saved_at >= 0 or latest.is_file():
            return (
                f"the last good checkpoint {latest} (iteration {self._saved_at}) is intact; resume from it with "
                "resume=True / --resume after changing the settings"
            )
        return "no checkpoint had been written yet"

    def _explain_write_failure(
        self, path: Path, *, state: Any = None, nbytes: int | None = None, what: str = "checkpoint"
    ) -> contextlib.AbstractContextManager:
        """A failed write (a full disk above all) becomes one line naming the file, the space needed
        and free, the last complete checkpoint and ``--resume`` (see :func:`explain_write_failure`).

        The space needed is ``nbytes`` if given, else the size of the last checkpoint, else the
        size of ``state``'s tensors."""
        last = self._last_checkpoint
        if nbytes is not None:
            needed, source = nbytes, f"the size of the {what}"
        elif last is not None and last[0].is_file():
            needed, source = last[0].stat().st_size, f"the size of {last[0].name}"
        else:
            needed, source = state_nbytes(state), f"the size of the {what}'s tensors"
        return explain_write_failure(path, needed=needed, needed_source=source, last_checkpoint=last, what=what)

    def _write_history(self) -> None:
        payload = {"config": self.config.to_dict(), "history": self.history}
        atomic_write_bytes(self.out_dir / "history.json", (json.dumps(payload, indent=1) + "\n").encode())
