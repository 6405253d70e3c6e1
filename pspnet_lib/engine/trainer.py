"""Iteration-based PSPNet training: the paper's recipe, mixed precision, DDP, crash-safe resumable checkpoints.

Typical use::

    from pspnet_lib import build_pspnet
    from pspnet_lib.engine import Trainer, TrainConfig

    model = build_pspnet("resnet50", num_classes=21)
    trainer = Trainer(model, train_set, val_set, TrainConfig(iters=20000, batch_size=4, out_dir="runs/voc"))
    summary = trainer.fit()            # or Trainer(..., resume=True).fit() after an interruption

Run the same script under ``torchrun --nproc_per_node N`` to train on N GPUs. To build the model,
datasets and settings from a recipe and a data root, see :class:`pspnet_lib.engine.run.TrainingRun`.

The Trainer is one class using parts with explicit inputs: the settings (:mod:`.config`), the
set-up checks and model preparation (functions of :mod:`.trainer_setup`), and the collaborators
it holds: one optimisation step (``Trainer.step``, :mod:`.trainer_step`), checkpoints and
resumption (``Trainer.checkpoints``, :mod:`.trainer_state`), validation and reports
(``Trainer.reports``, :mod:`.trainer_report`). This module holds the construction, the data
stream, the loop and the run's counters (``iteration``, ``best_miou``, ``history``), which it
gives to them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from .._files import atomic_write_bytes, ensure_dir
from .._progress import progress_bar
from . import distributed as D
from .config import AMP_MODES, SettingError, TrainConfig
from .loss import PSPNetLoss
from .optim import build_optimizer, build_poly_scheduler
from .preflight import one_size_collate
from .sampler import InfiniteSampler, SeededDataset, mix_seed, set_seed, usable_workers
from .trainer_report import Meter, RunReports
from .trainer_setup import check_setup, prepare_model, resolve_class_weight
from .trainer_state import RunCheckpoints
from .trainer_step import NonFiniteLossError, TrainStep

# TrainConfig, AMP_MODES, set_seed and usable_workers moved to .config / .sampler; importing them from here still works.
__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "AMP_MODES", "SettingError", "set_seed", "usable_workers"]

logger = logging.getLogger(__name__)


class Trainer:
    """Train a PSPNet by iterations with the paper's recipe.

    Args:
        model: the network; it is moved to the training device (and wrapped in
            ``DistributedDataParallel`` under torchrun). ``trainer.model`` is the bare model.
        train_dataset: yields ``(image, mask)`` after augmentation, all of one size per batch:
            image ``(3, H, W)`` uint8 (normalised here with ``model.pretrained_cfg``'s mean/std,
            ImageNet by default) or float already normalised; mask ``(H, W)`` integer with
            ``ignore_index`` for unscored pixels.
        val_dataset: optional, yields ``(image, mask)`` of any sizes (uint8 or normalised);
            validated every ``config.val_interval`` iterations and at the end.
        config: a :class:`TrainConfig`.
        resume: ``False`` (start fresh; an existing run in ``out_dir`` is an error), ``True``
            (continue from ``out_dir/checkpoints/latest.pt`` if present, else start fresh) or the
            path of a checkpoint.
        loss_fn: replaces the :class:`PSPNetLoss` built from the config's ``loss``, ``aux_loss``,
            ``class_weight``, ``sampler``, ``aux_weight`` and ``ignore_index``; called as
            ``loss_fn(outputs, masks)`` where ``outputs`` is ``(main, aux)`` (or the logits
            without an auxiliary head) and may return a Tensor or a dict with ``"loss"``.
        collate_fn: DataLoader collate function (default: stacking, with a one-line error for
            pictures of several sizes in one batch).

    A ``config.class_weight`` rule (``"auto"``, ``"median_frequency"``) is computed here from the
    training masks (one pass, rank 0, with a progress bar; see :mod:`.class_weights`) and replaced
    by the weights, which ``train_config.json``, the checkpoints and the saved model's
    ``pretrained_cfg`` (``class_weight``, ``class_weight_rule``) then record.

    Its parts are objects it holds, built here with what they use: ``step``
    (:class:`~.trainer_step.TrainStep`), ``checkpoints`` (:class:`~.trainer_state.RunCheckpoints`)
    and ``reports`` (:class:`~.trainer_report.RunReports`); the counters ``iteration``,
    ``best_miou`` and ``history`` are the Trainer's and given to them.

    ``fit()`` returns a summary dict: ``iteration``, ``metrics`` (last validation), ``best_miou``,
    ``checkpoint`` and ``model_dir`` paths, and ``history``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        config: TrainConfig | None = None,
        *,
        resume: bool | str | Path = False,
        loss_fn: Callable[..., Any] | None = None,
        collate_fn: Callable | None = None,
    ) -> None:
        self.config = config = config if config is not None else TrainConfig()
        # map-style datasets define __len__; torch's Dataset type does not declare it
        if len(train_dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the training dataset is empty")
        self.dist = D.init_distributed(config.device)
        self.device = self.dist.device
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        check_setup(config, model, loss_fn, train_dataset, val_dataset)
        self.collate_fn = collate_fn or one_size_collate
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        #: the rule ``config.class_weight`` named (its weights replace it in ``config``), or ``None``.
        self.class_weight_rule: str | None = None
        if loss_fn is None:
            config, self.class_weight_rule = resolve_class_weight(config, model, train_dataset, self.dist)
            self.config = config
            loss_fn = PSPNetLoss(
                config.aux_weight,
                config.ignore_index,
                loss=config.loss,
                aux_loss=config.aux_loss,
                class_weight=config.class_weight,  # type: ignore[arg-type]  # a list or None once resolved
                sampler=config.sampler,
            )
            self._log("loss: %s", loss_fn.describe())
        self.loss_fn: Any = loss_fn
        self.model, self.uses_aux = prepare_model(model, config, self.dist, train_dataset, self.class_weight_rule)
        self.train_model: nn.Module = self.model
        if self.dist.distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(
            self.model,
            config.optimizer,
            config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            head_lr_mult=config.head_lr_mult,
            no_decay_norm_bias=config.no_decay_norm_bias,
        )
        self.scheduler = self._build_scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.step = TrainStep(
            config,
            model=self.model,
            train_model=self.train_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            loss_fn=self.loss_fn,
            device=self.device,
            distributed=self.dist.distributed,
            uses_aux=self.uses_aux,
        )
        self.checkpoints = RunCheckpoints(
            config,
            dist=self.dist,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            out_dir=self.out_dir,
        )
        self.reports = RunReports(
            config,
            dist=self.dist,
            model=self.model,
            out_dir=self.out_dir,
            explain_write_failure=self.checkpoints.explain_write_failure,
        )
        self.iteration = 0
        self.best_miou = -math.inf
        self.history: list[dict[str, Any]] = []
        self._resume = resume
        self._restored = False

    @property
    def is_main(self) -> bool:
        """This process writes the run's files and logs (rank 0, or the only process)."""
        return self.dist.is_main

    def _log(self, msg: str, *args: Any, level: int = logging.INFO) -> None:
        if self.is_main:
            logger.log(level, msg, *args)

    @property
    def last_metrics(self) -> dict[str, Any] | None:
        """The last validation's metrics (see :meth:`validate`), ``None`` before one."""
        return self.reports.last_metrics

    # ------------------------------------------------------------------ state and reports (delegated)
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to continue this run exactly (what a checkpoint holds)."""
        return self.checkpoints.state_dict(
            iteration=self.iteration, best_miou=self.best_miou, history=self.history, rng_states=rng_states
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (model, optimiser, schedule, scaler, counters and RNG states)."""
        self.iteration, self.best_miou, self.history = self.checkpoints.load_state_dict(state)

    def save_checkpoint(self, *, numbered: bool = True, best: bool = False) -> Path | None:
        """Write the run's state atomically (rank 0); ``latest.pt`` follows numbered checkpoints."""
        return self.checkpoints.save(
            iteration=self.iteration, best_miou=self.best_miou, history=self.history, numbered=numbered, best=best
        )

    def validate(self) -> dict[str, Any]:
        """Evaluate the current model on the validation set with the configured protocol."""
        return self.reports.validate(self.val_dataset, iteration=self.iteration, history=self.history)

    def _restore_or_seed(self) -> None:
        """Once: resume as ``resume`` asks (see :meth:`RunCheckpoints.find_resume`), else seed the run."""
        if self._restored:
            return
        self._restored = True
        found = self.checkpoints.find_resume(self._resume)
        if found is None:
            set_seed(mix_seed(self.config.seed, self.dist.rank))
            return
        path, state = found
        self.load_state_dict(state)
        self.checkpoints.resumed(path, self.iteration)

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        c = self.config
        return build_poly_scheduler(
            self.optimizer,
            c.iters,
            c.poly_power,
            warmup_iters=c.warmup_iters,
            warmup_ratio=c.warmup_ratio,
            min_lr=c.min_lr,
        )

    def _apply_train_mode(self) -> None:
        self.train_model.train()
        frozen: list[nn.Module] = []
        if self.config.freeze_bn:
            frozen = [self.model]
        elif self.config.freeze_backbone:
            frozen = [self.model.get_submodule("backbone")]
        for part in frozen:
            for m in part.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    # ------------------------------------------------------------------ data
    def _batches(self, start_iteration: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        per_iteration = c.batch_size * c.grad_accum
        sampler = InfiniteSampler(
            len(self.train_dataset),  # type: ignore[arg-type]
            seed=c.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start=start_iteration * per_iteration,
        )
        loader = DataLoader(
            SeededDataset(self.train_dataset),
            batch_size=c.batch_size,
            sampler=sampler,
            num_workers=usable_workers(c.num_workers),
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            # Its own generator: creating the iterator must not consume the global RNG (exact resume).
            generator=torch.Generator().manual_seed(c.seed),
            persistent_workers=False,
        )
        for batch in loader:
            if isinstance(batch, Mapping):
                batch = (batch["image"], batch["mask"])
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError("the training dataset must yield (image, mask) pairs")
            yield batch[0], batch[1]

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``config.iters`` (or until iteration ``stop_at``, checkpointing there, as a
        time-limited job would), validating and checkpointing on the way."""
        c = self.config
        self._restore_or_seed()
        if self.is_main:
            ensure_dir(self.out_dir)
            settings = (c.to_json() + "\n").encode()
            with self.checkpoints.explain_write_failure(
                self.out_dir / "train_config.json", nbytes=len(settings), what="run settings"
            ):
                atomic_write_bytes(self.out_dir / "train_config.json", settings)
        end = c.iters if stop_at is None else max(self.iteration, min(int(stop_at), c.iters))
        images_per_iteration = c.batch_size * c.grad_accum * self.dist.world_size
        self._log(
            "training %s for %d iterations (from %d) on %s x%d: %d images/iteration, lr %g, %s, amp %s -> %s",
            type(self.model).__name__,
            c.iters,
            self.iteration,
            self.device,
            self.dist.world_size,
            images_per_iteration,
            c.lr,
            c.optimizer,
            c.amp,
            self.out_dir,
        )
        batches = self._batches(self.iteration)
        meter = Meter()
        with progress_bar(
            total=c.iters, initial=self.iteration, desc="train", progress=c.progress if self.is_main else False
        ) as bar:
            try:
                while self.iteration < end:
                    self._apply_train_mode()
                    lr = self.optimizer.param_groups[0]["lr"]
                    terms = self.step(batches, iteration=self.iteration, checkpoint_note=self.checkpoints.note)
                    self.iteration += 1
                    meter.add(terms, images_per_iteration)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{terms['loss']:.4f}",
                        lr=f"{lr:.2e}",
                        img_s=f"{meter.images_per_second():.1f}",
                        refresh=False,
                    )
                    if self.iteration % c.log_interval == 0 or self.iteration == end:
                        self.reports.log_window(meter, lr, iteration=self.iteration, history=self.history)
                        meter.reset()
                    improved = False
                    if self.val_dataset is not None and (
                        (c.val_interval and self.iteration % c.val_interval == 0) or self.iteration == c.iters
                    ):
                        metrics = self.validate()
                        improved = metrics["mIoU"] > self.best_miou
                        if improved:
                            self.best_miou = metrics["mIoU"]
                    due = (c.ckpt_interval and self.iteration % c.ckpt_interval == 0) or self.iteration == end
                    if due or improved:
                        self.save_checkpoint(numbered=bool(due), best=improved)
            finally:
                del batches  # shuts the DataLoader workers down
        summary = {
            "iteration": self.iteration,
            "metrics": self.last_metrics,
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "checkpoint": str(self.ckpt_dir / "latest.pt"),
            "model_dir": None,
            "history": self.history,
        }
        if self.iteration >= c.iters:
            summary["model_dir"] = self.reports.finish(self.val_dataset)
        D.barrier()
        return summary
