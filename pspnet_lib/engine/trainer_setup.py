"""The Trainer's set-up, as functions of explicit inputs: the up-front checks, class weights computed
from a rule, and the model prepared for training (auxiliary head, freezing, SyncBatchNorm, the
``pretrained_cfg`` the trained weights carry)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..core.pretrained_cfg import PretrainedCfg
from . import distributed as D
from .class_weights import DEFAULT_RULE, compute_class_weights
from .config import SettingError, TrainConfig
from .preflight import check_mask_fill

__all__ = ["check_setup", "prepare_model", "resolve_class_weight"]

logger = logging.getLogger("pspnet_lib.engine.trainer")


def resolve_class_weight(
    config: TrainConfig, model: nn.Module, dataset: Dataset, dist: D.DistInfo
) -> tuple[TrainConfig, str | None]:
    """``(config, rule)``: the config with its class weights checked against the class count and a
    rule (``"auto"``, ``"median_frequency"``, ...) replaced by the weights computed from ``dataset``'s
    masks (rank 0 reads them; every rank gets the weights or the error, a :class:`SettingError`), and
    the rule's name (``None`` when ``config.class_weight`` was no rule)."""
    c = config
    num_classes = getattr(getattr(model, "config", None), "num_classes", None) or getattr(dataset, "num_classes", None)
    if isinstance(num_classes, int):
        c.check_num_classes(num_classes)
    if not isinstance(c.class_weight, str):
        return c, None
    outcome: tuple[list[float] | None, str | None] = (None, None)
    if dist.is_main:
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
    rule = DEFAULT_RULE if c.class_weight == "auto" else c.class_weight
    return c.replace(class_weight=weights), rule


def check_setup(
    config: TrainConfig,
    model: nn.Module,
    loss_fn: Callable[..., Any] | None,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
) -> None:
    """Refuse, before any work, a set-up that cannot learn or would stop at its first batches
    (``ValueError``; see :mod:`.preflight`): one class with the cross-entropy loss, datasets whose
    ignore index is not the config's, transforms that pad masks with a value that is no class."""
    ignore = config.ignore_index
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if loss_fn is None and num_classes is not None and num_classes < 2:
        raise ValueError(
            f"the model predicts {num_classes} class: a 1-class softmax always predicts it (cross-entropy 0, mIoU "
            "100, nothing learnt). Build it for 2 classes (background + object; binary masks saved as 0/255: "
            "label_map={255: 1}), or pass a loss_fn made for one output"
        )
    for role, dataset in (("training", train_dataset), ("validation", val_dataset)):
        theirs = getattr(dataset, "ignore_index", None)
        if isinstance(theirs, int) and theirs != ignore:
            raise ValueError(
                f"the {role} dataset marks unscored pixels {theirs} but TrainConfig.ignore_index is {ignore}; "
                f"set one value for both (e.g. TrainConfig(ignore_index={theirs}))"
            )
    transforms = getattr(train_dataset, "transforms", None)
    if transforms is not None and num_classes is not None:
        check_mask_fill(transforms, ignore, num_classes)


def prepare_model(
    model: nn.Module,
    config: TrainConfig,
    dist: D.DistInfo,
    train_dataset: Dataset,
    class_weight_rule: str | None,
) -> tuple[nn.Module, bool]:
    """``(model, uses_aux)``: the model ready to train on ``dist.device`` (an unused auxiliary head
    frozen, the backbone frozen if asked, gradient checkpointing, SyncBatchNorm under torchrun on
    GPUs, channels-last, its ``pretrained_cfg`` filled from ``train_dataset`` and ``config``) and
    whether the forward pass returns the auxiliary logits. Raises ``ValueError`` for an option the
    model cannot take or batch size 1 with a trained 1x1 pyramid BatchNorm."""
    uses_aux = getattr(model, "aux_head", None) is not None and config.aux_weight > 0
    if getattr(model, "aux_head", None) is not None and not uses_aux:
        # An unused head would receive no gradient (DDP refuses that) and waste compute.
        model.aux_head.requires_grad_(False)
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
    if dist.distributed and config.sync_bn:
        if dist.device.type == "cuda":
            model = D.convert_sync_batchnorm(model)
        elif dist.is_main:
            logger.info(
                "SyncBatchNorm needs GPUs; on the CPU each process keeps its own BatchNorm statistics "
                "(averaged over processes before validation and checkpoints)"
            )
    _check_batch_statistics(model, config)
    _fill_pretrained_cfg(model, config, train_dataset, class_weight_rule)
    model = model.to(dist.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, uses_aux


def _check_batch_statistics(model: nn.Module, config: TrainConfig) -> None:
    """Refuse batch size 1 when a 1x1 pyramid branch would train its BatchNorm (before any work).

    The 1x1 branch pools each image to one value per channel; with one image BatchNorm has
    no batch statistics and the forward pass fails. The model checks this too, but only at
    the first step, after the run directory is made, and with advice for the Python API.
    """
    from ..models.ppm import PoolingBranch

    if config.batch_size > 1 or config.freeze_bn:
        return
    for module in model.modules():
        if isinstance(module, PoolingBranch) and module.bin_size == 1 and type(module.norm) is nn.BatchNorm2d:
            raise ValueError(
                "batch_size=1 cannot train BatchNorm here: the 1x1 pyramid pooling branch then holds one value "
                "per channel, so there are no batch statistics. Use batch_size >= 2 (add grad_accum to keep "
                "memory low; CLI: --batch-size 2 --grad-accum N), or freeze_bn=True to keep the pretrained "
                "statistics when fine-tuning (CLI: --freeze-bn), or build the model with norm='group'"
            )


def _fill_pretrained_cfg(
    model: nn.Module, config: TrainConfig, train_dataset: Dataset, class_weight_rule: str | None
) -> None:
    """Record what users of the trained weights need: classes, palette, normalisation, protocol."""
    typed = PretrainedCfg.of(model)
    changes: dict[str, Any] = {"mean": typed.mean, "std": typed.std}  # written out, one value per input channel
    for key in ("classes", "palette"):
        value = getattr(train_dataset, key, None)
        if value is not None:
            changes[key] = value
    changes["ignore_index"] = config.ignore_index
    cfg = typed.replace(**changes).to_dict()
    for key in ("class_weight", "class_weight_rule"):  # this run's, not those of the weights it started from
        cfg.pop(key, None)
    if isinstance(config.class_weight, list):
        cfg["class_weight"] = config.class_weight
        cfg["class_weight_rule"] = class_weight_rule or "given"
    cfg["inference"] = config.eval_protocol().to_dict(full=True)  # all six keys, as the CLI flags
    if hasattr(model, "pretrained_cfg"):
        setattr(model, "pretrained_cfg", cfg)  # nn.Module's typing hides the attribute
