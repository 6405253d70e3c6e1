"""Iteration-based PSPNet training: the paper's recipe, mixed precision, DDP, crash-safe resumable checkpoints.

Typical use::

    from pspnet_lib import build_pspnet
    from pspnet_lib.engine import Trainer, TrainConfig

    model = build_pspnet("resnet50", num_classes=21)
    trainer = Trainer(model, train_set, val_set, TrainConfig(iters=20000, batch_size=4, out_dir="runs/voc"))
    summary = trainer.fit()            # or Trainer(..., resume=True).fit() after an interruption

Run the same script under ``torchrun --nproc_per_node N`` to train on N GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from .._files import ensure_dir
from .._progress import progress_bar
from ..core.constants import IGNORE_INDEX
from ..core.geometry import MODES
from ..core.pretrained_cfg import InferenceProtocol, PretrainedCfg
from . import distributed as D
from .checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_link,
    atomic_save,
    atomic_write_bytes,
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
from .evaluate import evaluate, normalize_images
from .loss import PSPNetLoss
from .metrics import format_metrics_table, metrics_to_json
from .optim import OPTIMIZERS, PolyLambda, build_optimizer, build_poly_scheduler
from .sampler import InfiniteSampler, SeededDataset, mix_seed

__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "AMP_MODES", "set_seed"]

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad step touched the weights."""


def usable_workers(requested: int) -> int:
    """``requested`` DataLoader workers, at most one per CPU this process may run on.

    More workers than CPUs only add processes (torch warns about it on every loader); the data
    order and augmentation do not depend on the worker count (each sample is seeded by its index).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))


@dataclass
class TrainConfig:
    """Every setting of a training run (JSON-serialisable; stored in each checkpoint).

    Optimisation
        iters: optimiser steps of the whole run (the poly schedule reaches its end here).
        batch_size: images per process per forward pass; the effective batch is
            ``batch_size * grad_accum * number of processes``.
        lr: base learning rate (the backbone's); heads use ``lr * head_lr_mult``.
        optimizer: ``"sgd"`` (paper) or ``"adamw"``.
        momentum, weight_decay: SGD momentum / weight decay (AdamW: decoupled decay).
        head_lr_mult: LR factor of the decode and auxiliary heads (10 in the paper).
        no_decay_norm_bias: no weight decay on normalisation weights and biases.
        poly_power: exponent of the poly schedule (0.9).
        min_lr: floor of the backbone LR (mmsegmentation uses 1e-4; the paper 0).
        warmup_iters, warmup_ratio: linear warm-up from ``warmup_ratio * lr`` (0 iters: none).
        aux_weight: weight of the auxiliary loss (0.4; 0 disables the auxiliary head).
        ignore_index: mask value of unscored pixels.
        clip_grad_norm: clip the global gradient norm to this value (None: no clipping).
        grad_accum: forward/backward passes per optimiser step.

    Speed and memory
        amp: ``"none"``, ``"bf16"`` (CPU or GPU autocast) or ``"fp16"`` (CUDA, with a GradScaler).
        channels_last: NHWC memory format (faster convolutions on tensor-core GPUs).
        grad_checkpointing: recompute backbone stages in the backward pass (less memory).
        freeze_backbone: train the heads only.
        freeze_bn: keep every BatchNorm's running statistics fixed (for small batches).
        sync_bn: convert BatchNorm to SyncBatchNorm when several GPU processes train.
        num_workers: DataLoader worker processes per training process (at most one per usable CPU).
        device: ``"cuda"``, ``"cpu"`` or None (CUDA when available).

    Bookkeeping
        val_interval: validate every this many iterations (0: only at the end).
        ckpt_interval: write a checkpoint every this many iterations (0: only at the end).
        keep_last: numbered checkpoints to keep (``latest.pt`` and ``best.pt`` are kept anyway).
        log_interval: iterations between log lines and training-curve points.
        seed: seed of the data order, augmentation and the RNG state training starts from (the
            model's initial weights are drawn when it is built: call :func:`set_seed` first).
        deterministic: ask PyTorch for deterministic algorithms (slower on GPUs).
        out_dir: run directory (``checkpoints/``, ``history.json``, ``metrics.json``, ``model/``).
        progress: the tqdm progress bar (rank 0): None = on a terminal only, True = always, False = never.
        export: write the final model to ``out_dir/model`` with ``save_pretrained``.

    Validation protocol (see :func:`pspnet_lib.inference.modes.infer`)
        eval_mode: ``"whole"`` or ``"slide"``; eval_resize: keep-ratio resize ``(long, short)``;
        eval_crop / eval_stride: sliding-window size and step ``(h, w)``; eval_scales: scale
        factors; eval_flip: add horizontally flipped runs.
    """

    iters: int = 20000
    batch_size: int = 8
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    no_decay_norm_bias: bool = False
    poly_power: float = 0.9
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    aux_weight: float = 0.4
    ignore_index: int = IGNORE_INDEX
    clip_grad_norm: float | None = None
    grad_accum: int = 1
    amp: str = "none"
    channels_last: bool = False
    grad_checkpointing: bool = False
    freeze_backbone: bool = False
    freeze_bn: bool = False
    sync_bn: bool = True
    num_workers: int = 4
    device: str | None = None
    val_interval: int = 0
    ckpt_interval: int = 1000
    keep_last: int = 3
    log_interval: int = 50
    seed: int = 0
    deterministic: bool = False
    out_dir: str = "runs/pspnet"
    progress: bool | None = None
    export: bool = True
    eval_mode: str = "whole"
    eval_resize: list[int] | None = None
    eval_crop: list[int] | None = None
    eval_stride: list[int] | None = None
    eval_scales: list[float] = field(default_factory=lambda: [1.0])
    eval_flip: bool = False

    def __post_init__(self) -> None:
        positive = ("iters", "batch_size", "grad_accum", "log_interval")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("val_interval", "ckpt_interval", "keep_last", "warmup_iters", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        self.optimizer = self.optimizer.lower()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp mode {self.amp!r}; expected one of {', '.join(AMP_MODES)}")
        if self.eval_mode not in MODES:
            raise ValueError(f"unknown eval_mode {self.eval_mode!r}; expected one of {', '.join(MODES)}")
        if self.eval_mode == "slide" and (self.eval_crop is None or self.eval_stride is None):
            raise ValueError("eval_mode='slide' needs eval_crop and eval_stride, e.g. [512, 512] and [341, 341]")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        for name in ("eval_resize", "eval_crop", "eval_stride"):
            value = getattr(self, name)
            if value is not None:
                value = [int(v) for v in ([value, value] if isinstance(value, (int, float)) else value)]
                if len(value) != 2 or min(value) < 1:
                    raise ValueError(f"{name} must be two positive integers (h, w), got {getattr(self, name)!r}")
                setattr(self, name, value)
        self.eval_scales = [float(s) for s in self.eval_scales]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys (keys starting with ``_`` are comments)."""
        values = {k: v for k, v in values.items() if not k.startswith("_")}
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid options are: {', '.join(sorted(valid))}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    Call it before building the model (and before anything else that draws random numbers): the
    :class:`Trainer` re-seeds its own streams from ``TrainConfig.seed`` when ``fit()`` starts, but
    the initial weights of a model built from scratch come from the global RNG at build time.
    ``pspnet train --seed N`` does this first.
    """
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


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
    "grad_accum",
    "amp",
    "seed",
    "freeze_backbone",
    "freeze_bn",
)


class _Meter:
    """Averages of the loss terms and throughput over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, terms: Mapping[str, float], images: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}

    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0


def _eval_protocol(config: TrainConfig) -> InferenceProtocol:
    """The validation protocol of ``config`` (its ``eval_*`` fields) as one object."""
    return InferenceProtocol(
        mode=config.eval_mode,
        resize=config.eval_resize,
        crop=config.eval_crop,
        stride=config.eval_stride,
        scales=tuple(config.eval_scales),
        flip=config.eval_flip,
    )


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
        loss_fn: replaces ``PSPNetLoss(config.aux_weight, config.ignore_index)``; called as
            ``loss_fn(outputs, masks)`` where ``outputs`` is ``(main, aux)`` (or the logits
            without an auxiliary head) and may return a Tensor or a dict with ``"loss"``.
        collate_fn: DataLoader collate function (default stacking).

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
        self.collate_fn = collate_fn
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.loss_fn = loss_fn or PSPNetLoss(config.aux_weight, config.ignore_index)
        self.model = self._prepare_model(model)
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
        self.iteration = 0
        self.best_miou = -math.inf
        self.history: list[dict[str, Any]] = []
        self.last_metrics: dict[str, Any] | None = None
        self._resume = resume
        self._restored = False
        self._saved_at = -1
        self._validated_at = -1
        #: ``(path, iteration)`` of the newest complete numbered checkpoint (written or resumed from).
        self._last_checkpoint: tuple[Path, int] | None = None

    # ------------------------------------------------------------------ set-up
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _log(self, msg: str, *args: Any, level: int = logging.INFO) -> None:
        if self.is_main:
            logger.log(level, msg, *args)

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        config = self.config
        uses_aux = getattr(model, "aux_head", None) is not None and config.aux_weight > 0
        if getattr(model, "aux_head", None) is not None and not uses_aux:
            # An unused head would receive no gradient (DDP refuses that) and waste compute.
            model.aux_head.requires_grad_(False)
        self.uses_aux = uses_aux
        if config.freeze_backbone:
            if not hasattr(model, "backbone"):
                raise ValueError("freeze_backbone needs a model with a .backbone")
            model.backbone.requires_grad_(False)
        if config.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError("grad_checkpointing needs a model with set_grad_checkpointing()")
            model.set_grad_checkpointing(True)
        if self.dist.distributed and config.sync_bn:
            if self.device.type == "cuda":
                model = D.convert_sync_batchnorm(model)
            else:
                self._log(
                    "SyncBatchNorm needs GPUs; on the CPU each process keeps its own BatchNorm statistics "
                    "(averaged over processes before validation and checkpoints)"
                )
        self._check_batch_statistics(model)
        self._fill_pretrained_cfg(model)
        model = model.to(self.device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _check_batch_statistics(self, model: nn.Module) -> None:
        """Refuse batch size 1 when a 1x1 pyramid branch would train its BatchNorm (before any work).

        The 1x1 branch pools each image to one value per channel; with one image BatchNorm has
        no batch statistics and the forward pass fails. The model checks this too, but only at
        the first step, after the run directory is made, and with advice for the Python API.
        """
        from ..models.ppm import PoolingBranch

        if self.config.batch_size > 1 or self.config.freeze_bn:
            return
        for module in model.modules():
            if isinstance(module, PoolingBranch) and module.bin_size == 1 and type(module.norm) is nn.BatchNorm2d:
                raise ValueError(
                    "batch_size=1 cannot train BatchNorm here: the 1x1 pyramid pooling branch then holds one value "
                    "per channel, so there are no batch statistics. Use batch_size >= 2 (add grad_accum to keep "
                    "memory low; CLI: --batch-size 2 --grad-accum N), or freeze_bn=True to keep the pretrained "
                    "statistics when fine-tuning (CLI: --freeze-bn), or build the model with norm='group'"
                )

    def _fill_pretrained_cfg(self, model: nn.Module) -> None:
        """Record what users of the trained weights need: classes, palette, normalisation, protocol."""
        typed = PretrainedCfg.of(model)
        changes: dict[str, Any] = {"mean": typed.mean, "std": typed.std}  # written out, one value per input channel
        for key in ("classes", "palette"):
            value = getattr(self.train_dataset, key, None)
            if value is not None:
                changes[key] = value
        changes["ignore_index"] = self.config.ignore_index
        cfg = typed.replace(**changes).to_dict()
        cfg["inference"] = _eval_protocol(self.config).to_dict(full=True)  # all six keys, as the CLI flags
        if hasattr(model, "pretrained_cfg"):
            model.pretrained_cfg = cfg

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
            frozen = [self.model.backbone]
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

    # ------------------------------------------------------------------ state
    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to continue this run exactly (what a checkpoint holds)."""
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
            "model_config": self.model.config.to_dict()
            if hasattr(getattr(self.model, "config", None), "to_dict")
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

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        amp = self.config.amp
        if amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    def _loss_terms(self, outputs: Any, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(self.loss_fn, PSPNetLoss):
            return self.loss_fn.components(outputs, masks)
        result = self.loss_fn(outputs, masks)
        return dict(result) if isinstance(result, Mapping) else {"loss": result}

    def _step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(c.grad_accum):
            images, masks = next(batches)
            images = normalize_images(images.to(self.device, non_blocking=True), self.model)
            if c.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            masks = masks.to(self.device, non_blocking=True)
            last = micro == c.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.distributed else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    outputs = self.train_model(images, return_aux=True) if self.uses_aux else self.train_model(images)
                terms = self._loss_terms(outputs, masks)
                loss = terms["loss"]
                # All processes must stop together, or the others would wait forever in backward.
                if D.any_true(~torch.isfinite(loss.detach())):
                    raise NonFiniteLossError(self._non_finite_message(terms))
                self.scaler.scale(loss / c.grad_accum).backward()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / c.grad_accum
        if c.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return totals

    def _non_finite_message(self, terms: Mapping[str, torch.Tensor]) -> str:
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        latest = self.ckpt_dir / "latest.pt"
        kept = (
            (
                f"the last good checkpoint {latest} (iteration {self._saved_at}) is intact; resume from it with "
                "resume=True / --resume after changing the settings"
            )
            if self._saved_at >= 0 or latest.is_file()
            else "no checkpoint had been written yet"
        )
        return (
            f"training stopped: the loss became non-finite at iteration {self.iteration + 1} ({values}); {kept}. "
            "Usual causes: a learning rate too high for the batch size (lower --lr or add warm-up), fp16 overflow "
            "(use amp='bf16' or 'none'), or corrupt input data"
        )

    def _sync_buffers(self) -> None:
        """Average BatchNorm statistics over processes (each saw different batches when not synchronised)."""
        if not self.dist.distributed:
            return
        world = self.dist.world_size
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(world)
            else:
                dist.broadcast(buffer, src=0)

    # ------------------------------------------------------------------ validation and checkpoints
    def validate(self) -> dict[str, Any]:
        """Evaluate the current model on the validation set with the configured protocol."""
        if self.val_dataset is None:
            raise ValueError("validate() needs a val_dataset")
        c = self.config
        self._sync_buffers()
        rng = get_rng_state()  # evaluation draws from the global RNG; keep training's stream unchanged
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp)
        try:
            metrics = evaluate(
                self.model,
                self.val_dataset,
                num_classes=self.model.config.num_classes if hasattr(self.model, "config") else None,
                protocol=_eval_protocol(c),
                ignore_index=c.ignore_index,
                device=self.device,
                amp_dtype=amp_dtype,
                num_workers=usable_workers(min(c.num_workers, 2)),
                progress=c.progress,
            )
        finally:
            set_rng_state(rng)
        self.last_metrics = metrics
        self._validated_at = self.iteration
        entry = {"iter": self.iteration, "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"]}
        self.history.append({"type": "val", **entry})
        self._log(
            "iter %d validation: mIoU %.2f  mAcc %.2f  aAcc %.2f",
            self.iteration,
            100 * metrics["mIoU"],
            100 * metrics["mAcc"],
            100 * metrics["aAcc"],
        )
        return metrics

    def save_checkpoint(self, *, numbered: bool = True, best: bool = False) -> Path | None:
        """Write the run's state atomically (rank 0); ``latest.pt`` follows numbered checkpoints."""
        self._sync_buffers()
        rng_states = D.all_gather_objects(get_rng_state())
        if not self.is_main:
            return None
        state = self.state_dict(rng_states)
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

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``config.iters`` (or until iteration ``stop_at``, checkpointing there, as a
        time-limited job would), validating and checkpointing on the way."""
        c = self.config
        self._restore_or_seed()
        if self.is_main:
            ensure_dir(self.out_dir)
            settings = (c.to_json() + "\n").encode()
            with self._explain_write_failure(
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
        meter = _Meter()
        with progress_bar(
            total=c.iters, initial=self.iteration, desc="train", progress=c.progress if self.is_main else False
        ) as bar:
            try:
                while self.iteration < end:
                    self._apply_train_mode()
                    lr = self.optimizer.param_groups[0]["lr"]
                    terms = self._step(batches)
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
                        self._log_window(meter, lr)
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
            summary["model_dir"] = self._finish()
        D.barrier()
        return summary

    def _log_window(self, meter: _Meter, lr: float) -> None:
        means = meter.means()
        if self.dist.distributed:  # the average over all processes' batches
            keys = sorted(means)
            values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            means = dict(zip(keys, (values / self.dist.world_size).tolist()))
        speed = meter.images_per_second()
        entry = {"type": "train", "iter": self.iteration, "lr": lr, "img_per_s": speed, **means}
        self.history.append(entry)
        parts = " ".join(f"{k} {v:.4f}" for k, v in means.items() if k != "loss")
        remaining = (self.config.iters - self.iteration) * meter.images / max(meter.steps, 1) / max(speed, 1e-9)
        self._log(
            "iter %d/%d  loss %.4f (%s)  lr %.3e  %.1f img/s  eta %s",
            self.iteration,
            self.config.iters,
            means.get("loss", math.nan),
            parts,
            lr,
            speed,
            time.strftime("%H:%M:%S", time.gmtime(remaining)),
        )

    def _finish(self) -> str | None:
        """Final metrics file and model export (rank 0)."""
        if not self.is_main:
            return None
        if self.last_metrics is not None:
            classes = getattr(self.val_dataset, "classes", None)
            payload = json.loads(metrics_to_json(self.last_metrics, classes))
            payload["iteration"] = self._validated_at
            report = (json.dumps(payload, indent=2) + "\n").encode()
            with self._explain_write_failure(self.out_dir / "metrics.json", nbytes=len(report), what="metrics"):
                atomic_write_bytes(self.out_dir / "metrics.json", report)
            logger.info(
                "validation at iteration %d:\n%s", self._validated_at, format_metrics_table(self.last_metrics, classes)
            )
        if not self.config.export:
            return None
        directory = self.out_dir / "model"
        with self._explain_write_failure(
            directory / "model.safetensors", nbytes=state_nbytes(self.model.state_dict()), what="final model"
        ):
            self.model.save_pretrained(directory)  # config.json + model.safetensors + model card, written atomically
        logger.info("final model written to %s", directory)
        return str(directory)
