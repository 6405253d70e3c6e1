"""Iteration-based PSPNet training: the paper's recipe, mixed precision, DDP, crash-safe resumable checkpoints.

Typical use::

    from pspnet_lib import build_pspnet
    from pspnet_lib.engine import Trainer, TrainConfig

    model = build_pspnet("resnet50", num_classes=21)
    trainer = Trainer(model, train_set, val_set, TrainConfig(iters=20000, batch_size=4, out_dir="runs/voc"))
    summary = trainer.fit()            # or Trainer(..., resume=True).fit() after an interruption

Run the same script under ``torchrun --nproc_per_node N`` to train on N GPUs. To build the model,
datasets and settings from a recipe and a data root, see :class:`pspnet_lib.engine.run.TrainingRun`.

The Trainer is written in parts: the settings (:mod:`.config`), one optimisation step
(:mod:`.trainer_step`), checkpoints and resumption (:mod:`.trainer_state`), validation and reports
(:mod:`.trainer_report`); this module holds the set-up, the data stream and the loop.
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

from .._files import ensure_dir
from .._progress import progress_bar
from ..core.pretrained_cfg import PretrainedCfg
from . import distributed as D
from .checkpoint import atomic_write_bytes
from .class_weights import DEFAULT_RULE, compute_class_weights
from .config import AMP_MODES, SettingError, TrainConfig
from .loss import PSPNetLoss
from .optim import build_optimizer, build_poly_scheduler
from .preflight import check_mask_fill, one_size_collate
from .sampler import InfiniteSampler, SeededDataset, set_seed, usable_workers
from .trainer_report import Meter, ReportMixin
from .trainer_state import CheckpointMixin
from .trainer_step import NonFiniteLossError, TrainStep

# TrainConfig, AMP_MODES, set_seed and usable_workers moved to .config / .sampler; importing them from here still works.
__all__ = ["TrainConfig", "Trainer", "NonFiniteLossError", "AMP_MODES", "SettingError", "set_seed", "usable_workers"]

logger = logging.getLogger(__name__)


class Trainer(CheckpointMixin, ReportMixin):
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
        self._check_setup(model, loss_fn)
        self.collate_fn = collate_fn or one_size_collate
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.class_weight_rule: str | None = None
        if loss_fn is None:
            self.config = config = self._resolve_class_weight(model, train_dataset)
            self.loss_fn = PSPNetLoss(
                config.aux_weight,
                config.ignore_index,
                loss=config.loss,
                aux_loss=config.aux_loss,
                class_weight=config.class_weight,  # type: ignore[arg-type]  # a list or None once resolved
                sampler=config.sampler,
            )
            self._log("loss: %s", self.loss_fn.describe())
        else:
            self.loss_fn = loss_fn
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
    def _resolve_class_weight(self, model: nn.Module, dataset: Dataset) -> TrainConfig:
        """The config with its class weights checked against the class count and a rule computed
        (rank 0 reads the masks; every rank gets the weights or the error)."""
        c = self.config
        num_classes = getattr(getattr(model, "config", None), "num_classes", None) or getattr(
            dataset, "num_classes", None
        )
        if isinstance(num_classes, int):
            c.check_num_classes(num_classes)
        if not isinstance(c.class_weight, str):
            return c
        outcome: tuple[list[float] | None, str | None] = (None, None)
        if self.is_main:
            try:
                weights = compute_class_weights(
                    dataset, num_classes, c.class_weight, c.ignore_index, num_workers=c.num_workers, progress=c.progress
                )
                outcome = (weights, None)
            except (ValueError, FileNotFoundError) as exc:
                outcome = (None, str(exc))
        weights, failure = D.broadcast_object(outcome)
        if failure is not None:
            raise SettingError(
                "{class_weight=} could not be computed: " + SettingError.escape(failure), class_weight=c.class_weight
            )
        self.class_weight_rule = DEFAULT_RULE if c.class_weight == "auto" else c.class_weight
        return c.replace(class_weight=weights)

    def _check_setup(self, model: nn.Module, loss_fn: Callable[..., Any] | None) -> None:
        """Refuse, before any work, a set-up that cannot learn or would stop at its first batches
        (see :mod:`.preflight`): one class with the cross-entropy loss, datasets whose ignore index
        is not the config's, transforms that pad masks with a value that is no class."""
        ignore = self.config.ignore_index
        num_classes = getattr(getattr(model, "config", None), "num_classes", None)
        if loss_fn is None and num_classes is not None and num_classes < 2:
            raise ValueError(
                f"the model predicts {num_classes} class: a 1-class softmax always predicts it (cross-entropy 0, mIoU "
                "100, nothing learnt). Build it for 2 classes (background + object; binary masks saved as 0/255: "
                "label_map={255: 1}), or pass a loss_fn made for one output"
            )
        for role, dataset in (("training", self.train_dataset), ("validation", self.val_dataset)):
            theirs = getattr(dataset, "ignore_index", None)
            if isinstance(theirs, int) and theirs != ignore:
                raise ValueError(
                    f"the {role} dataset marks unscored pixels {theirs} but TrainConfig.ignore_index is {ignore}; "
                    f"set one value for both (e.g. TrainConfig(ignore_index={theirs}))"
                )
        transforms = getattr(self.train_dataset, "transforms", None)
        if transforms is not None and num_classes is not None:
            check_mask_fill(transforms, ignore, num_classes)

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        config = self.config
        uses_aux = getattr(model, "aux_head", None) is not None and config.aux_weight > 0
        if getattr(model, "aux_head", None) is not None and not uses_aux:
            # An unused head would receive no gradient (DDP refuses that) and waste compute.
            model.aux_head.requires_grad_(False)
        self.uses_aux = uses_aux
        if config.freeze_backbone:
            freeze = getattr(model, "freeze_backbone", None)
            if callable(freeze):
                freeze()  # PSPNet's: parameters and BatchNorm statistics, also after train()
            elif not hasattr(model, "backbone"):
                raise ValueError("freeze_backbone needs a model with a .backbone")
            else:
                model.backbone.requires_grad_(False)
        if config.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ValueError("grad_checkpointing needs a model with set_grad_checkpointing()")
            getattr(model, "set_grad_checkpointing")(True)
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
        for key in ("class_weight", "class_weight_rule"):  # this run's, not those of the weights it started from
            cfg.pop(key, None)
        if isinstance(self.config.class_weight, list):
            cfg["class_weight"] = self.config.class_weight
            cfg["class_weight_rule"] = self.class_weight_rule or "given"
        cfg["inference"] = self.config.eval_protocol().to_dict(full=True)  # all six keys, as the CLI flags
        if hasattr(model, "pretrained_cfg"):
            setattr(model, "pretrained_cfg", cfg)  # nn.Module's typing hides the attribute

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
        meter = Meter()
        with progress_bar(
            total=c.iters, initial=self.iteration, desc="train", progress=c.progress if self.is_main else False
        ) as bar:
            try:
                while self.iteration < end:
                    self._apply_train_mode()
                    lr = self.optimizer.param_groups[0]["lr"]
                    terms = self.step(batches, iteration=self.iteration, checkpoint_note=self._checkpoint_note)
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
