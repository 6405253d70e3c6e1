"""``TrainConfig``: every setting of a training run, and ``SettingError``, the error that names one.

Each field carries its own description in ``dataclasses.field(metadata=...)``: the help text,
the group it belongs to and, where the command line spells it differently, its flag. The
``pspnet train`` command derives its flags from these fields (:func:`setting_specs`), so a new
field is a new flag without a second list to keep in step (``tests/test_train_run.py`` checks
that every field has one, or a stated reason not to).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..core.constants import IGNORE_INDEX
from ..core.geometry import MODES
from ..core.inference_protocol import MAX_SCALE, MAX_SCALES, MAX_SIDE, InferenceProtocol
from ..core.setting_error import SettingError
from .losses.settings import LossSettingError, check_class_counts, loss_settings
from .optim import OPTIMIZERS

__all__ = ["AMP_MODES", "SettingError", "SettingSpec", "TrainConfig", "auto_amp", "setting_specs"]

AMP_MODES = ("none", "bf16", "fp16")


def _setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    group: str,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **cli: Any,
) -> Any:
    """A field with its description: ``help``, ``group`` (a section of ``pspnet train --help``) and
    ``cli`` (``flag`` when the flag is not ``--field-name``, ``metavar``, ``choices``, ``nargs`` /
    ``const``, ``kind`` when the flag reads the value otherwise than the field's type says (e.g.
    ``"str"`` for a spec that is stored as a list), or ``no_flag="why"`` for a setting the command
    line does not offer)."""
    metadata = {"help": help, "group": group, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_OPT, _SPEED, _RUN, _DATA, _EVAL = "optimisation", "speed and memory", "run", "data", "validation protocol"


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
        loss, aux_loss: the main / auxiliary head's loss terms, a spec line (``"ce + 0.5*dice"``) or
            the stored list of ``{"type", "loss_weight", ...}`` dicts (aux None: as ``loss``).
        class_weight: per-class loss weights: a list, or a rule (``"auto"`` = ``"inverse_log"``,
            ``"median_frequency"``) the Trainer computes from the training masks and records as
            the list (:mod:`.class_weights`).
        sampler: the main head's pixel sampler: None or ``"ohem(thresh=.., min_kept=..)"``.
            Terms, options and references: :mod:`pspnet_lib.engine.losses`, docs/training.md.
        ignore_index: mask value of unscored pixels; one setting for every stage that uses it (the
            folder dataset, the padding of masks by the augmentation, the loss, the metrics, the
            recorded ``pretrained_cfg``). The zoo datasets mark unscored pixels 255.
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
        val_amp: validate under the training's ``amp`` autocast as well. Off by default: validation
            runs in full precision, so its numbers are those of ``pspnet eval`` (without ``--amp``).
            On, the log line and ``metrics.json`` (``"precision"``) say ``bf16``/``fp16`` and
            ``pspnet eval --amp <it>`` reproduces them.

    Raises:
        SettingError: (a ``ValueError``) a value out of range, naming the field.
    """

    iters: int = _setting(20000, "iterations (optimiser steps)", group=_OPT)
    batch_size: int = _setting(8, "images per process per step (before --grad-accum)", group=_OPT)
    lr: float = _setting(0.01, "base (backbone) learning rate", group=_OPT)
    optimizer: str = _setting("sgd", "optimiser", group=_OPT, choices=OPTIMIZERS)
    momentum: float = _setting(0.9, "SGD momentum", group=_OPT)
    weight_decay: float = _setting(1e-4, "weight decay (AdamW: decoupled)", group=_OPT)
    head_lr_mult: float = _setting(10.0, "heads' LR factor (paper: 10)", group=_OPT)
    no_decay_norm_bias: bool = _setting(False, "no weight decay on normalisation weights and biases", group=_OPT)
    poly_power: float = _setting(0.9, "exponent of the poly schedule", group=_OPT)
    min_lr: float = _setting(0.0, "floor of the backbone LR (mmseg: 1e-4)", group=_OPT)
    warmup_iters: int = _setting(0, "linear warm-up iterations", group=_OPT)
    warmup_ratio: float = _setting(0.1, "warm-up starts at this fraction of --lr", group=_OPT)
    aux_weight: float = _setting(0.4, "weight of the auxiliary loss (0 disables the auxiliary head)", group=_OPT)
    loss: str | list[dict[str, Any]] = _setting(
        "cross_entropy", "main head's loss terms (ce, focal, dice, lovasz): 'ce + 0.5*dice'", group=_OPT, kind="str"
    )
    aux_loss: str | list[dict[str, Any]] | None = _setting(
        None, "auxiliary head's loss terms (default: --loss)", group=_OPT, kind="str", metavar="LOSS"
    )
    class_weight: str | list[float] | None = _setting(
        None,
        "auto (ENet's 1/ln(1.02+p)), median_frequency or one per class",
        group=_OPT,
        kind="str",
        metavar="auto|W0,..",
    )
    sampler: str | dict[str, Any] | None = _setting(
        None, "main head's pixel sampler: 'ohem(thresh=0.7, min_kept=100000)'", group=_OPT, kind="str"
    )
    ignore_index: int = _setting(
        IGNORE_INDEX,
        "mask value of unscored pixels, used by the dataset, the augmentation's padding, the loss, the metrics and "
        "the pictures (folder datasets: the value your masks store; the zoo datasets use 255)",
        group=_DATA,
        metavar="V",
    )
    clip_grad_norm: float | None = _setting(None, "clip the global gradient norm to X", group=_OPT, metavar="X")
    grad_accum: int = _setting(1, "accumulate N batches per step", group=_OPT, metavar="N")
    amp: str = _setting(
        "none",
        "mixed precision; bare --amp = fp16 on CUDA, bf16 on the CPU",
        group=_SPEED,
        nargs="?",
        const="auto",
        choices=("auto", *AMP_MODES),
    )
    channels_last: bool = _setting(False, "NHWC memory format (faster on tensor-core GPUs)", group=_SPEED)
    grad_checkpointing: bool = _setting(False, "recompute backbone stages in the backward pass", group=_SPEED)
    freeze_backbone: bool = _setting(False, "train the heads only", group=_SPEED)
    freeze_bn: bool = _setting(False, "keep BatchNorm statistics fixed (small batches)", group=_SPEED)
    sync_bn: bool = _setting(True, "SyncBatchNorm when several GPU processes train", group=_SPEED)
    num_workers: int = _setting(4, "DataLoader workers per process", group=_DATA, metavar="N")
    device: str | None = _setting(None, "cuda or cpu (default: cuda if available)", group=_SPEED)
    val_interval: int = _setting(0, "validate every N iterations (0: at the end)", group=_RUN, metavar="N")
    ckpt_interval: int = _setting(1000, "checkpoint every N iterations", group=_RUN, metavar="N")
    keep_last: int = _setting(3, "numbered checkpoints to keep", group=_RUN, metavar="N")
    log_interval: int = _setting(50, "iterations between log lines", group=_RUN, metavar="N")
    seed: int = _setting(
        0,
        "seed of the initial weights, data order and augmentation: the same seed on the same machine reproduces a run",
        group=_RUN,
    )
    deterministic: bool = _setting(False, "deterministic PyTorch algorithms (slower on GPUs)", group=_RUN)
    out_dir: str = _setting(
        "runs/pspnet", "run directory (default runs/<dataset>)", group=_RUN, flag="--out", metavar="DIR"
    )
    progress: bool | None = _setting(
        None, "no progress bar (e.g. in log files)", group=_RUN, flag="--no-progress", const=False
    )
    export: bool = _setting(True, "write the final model to OUT/model", group=_RUN)
    eval_mode: str = _setting("whole", "inference mode", group=_EVAL, choices=MODES)
    eval_resize: list[int] | None = _setting(None, "keep-ratio resize limits", group=_EVAL, metavar="LONG,SHORT")
    eval_crop: list[int] | None = _setting(None, "sliding-window size", group=_EVAL, metavar="N|H,W")
    eval_stride: list[int] | None = _setting(None, "sliding-window step", group=_EVAL, metavar="N|H,W")
    eval_scales: list[float] = _setting(
        help="scale factors", group=_EVAL, metavar="S1,S2,..", default_factory=lambda: [1.0]
    )
    eval_flip: bool = _setting(False, "add horizontally flipped runs", group=_EVAL)
    val_amp: bool = _setting(
        False,
        "validate under the training's --amp autocast too (faster on GPUs; the numbers then differ slightly from "
        "full precision: metrics.json says which, pspnet eval --amp reproduces them); default: full precision, "
        "as pspnet eval",
        group=_EVAL,
    )

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "grad_accum", "log_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"{{{name}}} must be a positive integer, got {SettingError.quote(value)}")
        for name in ("val_interval", "ckpt_interval", "keep_last", "warmup_iters", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SettingError(f"{{{name}}} must be a non-negative integer, got {SettingError.quote(value)}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise SettingError(f"{{lr}} must be a positive number, got {SettingError.quote(self.lr)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not -(2**63) <= self.seed < 2**63:
            raise SettingError(f"{{seed}} must be a 64-bit integer, got {SettingError.quote(self.seed)}")
        for name in ("no_decay_norm_bias", "channels_last", "grad_checkpointing", "freeze_backbone", "freeze_bn",
                     "sync_bn", "deterministic", "export", "eval_flip"):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise SettingError(f"{{{name}}} must be true or false, got {SettingError.quote(getattr(self, name))}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise SettingError(f"{{progress}} must be true, false or null, got {SettingError.quote(self.progress)}")
        if self.device is not None and not isinstance(self.device, str):
            raise SettingError(
                f"{{device}} must be a device name such as cpu or cuda, got {SettingError.quote(self.device)}"
            )
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise SettingError(f"{{out_dir}} must be a folder name, got {SettingError.quote(self.out_dir)}")
        # Every number in its range, NaN and infinity refused (aux_weight=nan silenced the aux loss).
        _number("momentum", self.momentum, "in [0, 1)", lambda v: 0 <= v < 1)
        _number("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        _number("head_lr_mult", self.head_lr_mult, "> 0", lambda v: v > 0)
        _number("poly_power", self.poly_power, "in [0, 100] (0: a constant rate)", lambda v: 0 <= v <= 100)
        _number("min_lr", self.min_lr, ">= 0", lambda v: v >= 0)
        _number("warmup_ratio", self.warmup_ratio, "in [0, 1]", lambda v: 0 <= v <= 1)
        _number("aux_weight", self.aux_weight, ">= 0 (0 disables the auxiliary head)", lambda v: v >= 0)
        if self.clip_grad_norm is not None:
            _number("clip_grad_norm", self.clip_grad_norm, "> 0 (leave it unset for no clipping)", lambda v: v > 0)
        self.optimizer = self.optimizer.lower()
        if self.optimizer not in OPTIMIZERS:
            raise SettingError(
                f"unknown {{optimizer}} {SettingError.quote(self.optimizer)}; expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.amp not in AMP_MODES:
            raise SettingError(
                f"unknown {{amp}} mode {SettingError.quote(self.amp)}; expected one of {', '.join(AMP_MODES)}"
            )
        if self.eval_mode not in MODES:
            raise SettingError(
                f"unknown {{eval_mode}} {SettingError.quote(self.eval_mode)}; expected one of {', '.join(MODES)}"
            )
        if self.eval_mode == "slide" and (self.eval_crop is None or self.eval_stride is None):
            raise SettingError(
                "{eval_mode=} needs {eval_crop} and {eval_stride}, e.g. 512,512 and 341,341", eval_mode="slide"
            )
        value = self.ignore_index
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise SettingError(
                f"{{ignore_index}} must be a mask value 0..65535 (masks store non-negative integers), got "
                f"{SettingError.quote(value)}"
            )
        self._check_loss()
        for name in ("eval_resize", "eval_crop", "eval_stride"):
            value = getattr(self, name)
            if value is not None:
                items = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
                if not (
                    isinstance(items, (list, tuple))
                    and len(items) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in items)
                ):
                    raise SettingError(
                        f"{{{name}}} must be two integers (h, w) in [1, {MAX_SIDE}], got "
                        f"{SettingError.quote(getattr(self, name))}"
                    )
                setattr(self, name, [int(v) for v in items])
        scales = self.eval_scales
        if not (
            isinstance(scales, (list, tuple))
            and 1 <= len(scales) <= MAX_SCALES
            and all(_finite(v) and 0 < v <= MAX_SCALE for v in scales)
        ):
            raise SettingError(
                f"{{eval_scales}} must be 1 to {MAX_SCALES} numbers in (0, {MAX_SCALE:g}], got {SettingError.quote(scales)}"
            )
        self.eval_scales = [float(v) for v in scales]

    def _check_loss(self) -> None:
        try:
            self.loss, self.aux_loss, self.class_weight, self.sampler = loss_settings(
                self.loss, self.aux_loss, self.class_weight, self.sampler
            )
        except LossSettingError as error:
            raise _naming(error) from None

    def check_num_classes(self, num_classes: int) -> None:
        """Raise a :class:`SettingError` when a class-weight list does not hold ``num_classes`` weights."""
        try:
            check_class_counts(num_classes, self.loss, self.aux_loss, self.class_weight)  # type: ignore[arg-type]  # stored forms
        except LossSettingError as error:
            raise _naming(error) from None

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

    def eval_protocol(self) -> InferenceProtocol:
        """The validation protocol (the ``eval_*`` fields) as one object, as stored with the trained weights."""
        return InferenceProtocol(
            mode=self.eval_mode,
            resize=self.eval_resize,
            crop=self.eval_crop,
            stride=self.eval_stride,
            scales=tuple(self.eval_scales),
            flip=self.eval_flip,
        )


def _naming(error: LossSettingError) -> SettingError:
    return SettingError(f"{{{error.setting}=}}: {SettingError.escape(error)}", **{error.setting: error.value})


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(name: str, value: Any, expected: str, ok: Callable[[float], bool]) -> None:
    """Raise a :class:`SettingError` naming ``name`` unless ``value`` is a finite number for which ``ok`` holds."""
    if not (_finite(value) and ok(float(value))):
        raise SettingError(f"{{{name}}} must be a number {expected}, got {SettingError.quote(value)}")


def auto_amp(device: str | None) -> str:
    """The mixed precision ``--amp`` alone means: ``"fp16"`` on CUDA (with a GradScaler), else ``"bf16"``."""
    import torch

    cuda = torch.cuda.is_available() and (device or "cuda").startswith("cuda")
    return "fp16" if cuda else "bf16"


class SettingSpec(NamedTuple):
    """How a :class:`TrainConfig` field is offered as an option (derived from the field)."""

    name: str
    #: ``"int"``, ``"float"``, ``"str"``, ``"bool"`` (a switch), ``"ints"`` (a pair) or ``"floats"``.
    kind: str
    default: Any
    help: str
    group: str
    #: ``--field-name`` unless the field says otherwise; None when there is no flag.
    flag: str | None
    #: Why a field has no flag (None when it has one).
    no_flag: str | None
    #: The remaining option details (``metavar``, ``choices``, ``nargs``, ``const``).
    options: dict[str, Any]


_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


def _kind(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if origin is list and args and args[0] in (int, float):
        return "ints" if args[0] is int else "floats"
    if annotation in _KINDS:
        return _KINDS[annotation]
    raise TypeError(f"no option kind for a field of type {annotation!r}")  # a new field type: add it here


def setting_specs() -> list[SettingSpec]:
    """One :class:`SettingSpec` per :class:`TrainConfig` field, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    specs = []
    for f in dataclasses.fields(TrainConfig):
        cli = dict(f.metadata["cli"])
        no_flag = cli.pop("no_flag", None)
        kind = cli.pop("kind", None) or _kind(hints[f.name])  # a field may say how its flag reads it
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        flag = cli.pop("flag", None)
        if flag is None and not no_flag:
            # A switch that is on by default is turned off: --no-sync-bn.
            flag = "--" + ("no-" if kind == "bool" and default is True else "") + f.name.replace("_", "-")
        specs.append(SettingSpec(f.name, kind, default, f.metadata["help"], f.metadata["group"], flag, no_flag, cli))
    return specs
