"""``TrainingRun``: a recipe (or settings) and a data root become a model, datasets and a ``TrainConfig``.

What ``pspnet train`` does, as a library call (the command only parses its flags and calls this)::

    from pspnet_lib.engine import TrainingRun

    run = TrainingRun.from_recipe("ade20k-mmseg-80k", "data/ade20k", weights_backbone="resnet50_v1c",
                                  overrides={"iters": 4000, "amp": "bf16"}, out_dir="runs/ade")
    summary = run.fit()            # or run.trainer() for the Trainer itself

Errors are one line. Those about a setting are :class:`~pspnet_lib.engine.config.SettingError`\\ s,
which name it as a Python argument (``num_classes=3``); the command line renders the same error
with its flags (``--num-classes 3``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn
from torch.utils.data import Dataset

from .._files import OverwritesInputError, check_outputs_spare_inputs, local_files, sibling_folder
from ..core.constants import MAX_NUM_CLASSES
from ..core.pretrained_cfg import PretrainedCfg
from ..data import DATASETS, DEFAULT_SPLITS, build_dataset, eval_transforms, train_transforms
from ..data.datasets import has_split
from ..hub.loading import load_pretrained
from ..models import build_pspnet
from ..recipes import check_recipe, load_recipe
from . import distributed as D
from .config import SettingError, TrainConfig, auto_amp
from .preflight import (
    check_augment,
    check_band_settings,
    check_batching,
    check_class_count,
    check_crop_size,
    check_val_size,
    generic_classes,
)
from .sampler import set_seed
from .trainer import Trainer
from .trainer_state import RUN_FILES

__all__ = [
    "FOLDER_OPTIONS",
    "PREFLIGHT_SAMPLES",
    "RUN_FILES",
    "RunDirectoryError",
    "TrainingRun",
    "check_band_settings",
    "check_dataset_options",
    "generic_classes",
    "resolve_settings",
]

logger = logging.getLogger(__name__)

#: How many training samples are read before a run starts (spread over the dataset).
PREFLIGHT_SAMPLES = 32
#: ``build_dataset`` options that only the ``folder`` dataset takes.
FOLDER_OPTIONS = ("classes", "val_fraction", "mask_suffix", "label_map", "ignore_colours")


def resolve_settings(
    recipe: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    num_classes: int | None = None,
    model: Mapping[str, Any] | None = None,
    augment: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A recipe (a built-in name, a JSON file or a dict of the same shape; None: the defaults)
    overlaid with the given settings; values that are None are not given.

    Returns a dict with ``dataset``, ``num_classes``, ``model`` (:func:`~pspnet_lib.build_pspnet`
    arguments, ``backbone`` resnet50 by default), ``augment`` (:func:`~pspnet_lib.data.train_transforms`
    arguments, ``crop_size`` [512, 512] by default), ``train`` (:class:`TrainConfig` fields; ``amp="auto"``
    resolved, ``out_dir`` ``runs/<dataset>`` by default) and ``gpus`` (the published process count).
    Resolving a result again changes nothing.

    Raises:
        ValueError: an unknown recipe or section; :class:`SettingError` when no dataset is named.
    """
    if recipe is None:
        base: dict[str, Any] = {}
    elif isinstance(recipe, Mapping):
        base = dict(check_recipe(recipe))
    else:
        base = dict(load_recipe(recipe))
    settings: dict[str, Any] = {
        "dataset": dataset or base.get("dataset"),
        "num_classes": num_classes if num_classes is not None else base.get("num_classes"),
        "model": {"backbone": "resnet50", **base.get("model", {}), **_given(model)},
        "augment": {"crop_size": [512, 512], **base.get("augment", {}), **_given(augment)},
        "train": {**base.get("train", {}), **_given(train)},
        "gpus": base.get("gpus"),
    }
    if settings["train"].get("amp") == "auto":
        settings["train"]["amp"] = auto_amp(settings["train"].get("device"))
    if not settings["dataset"]:
        raise SettingError(f"no dataset: pass {{dataset}} ({', '.join(DATASETS)}) or a {{recipe}} that names one")
    settings["train"]["out_dir"] = str(settings["train"].get("out_dir") or os.path.join("runs", settings["dataset"]))
    return settings


def _given(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if v is not None}


def check_dataset_options(dataset: str, options: Mapping[str, Any]) -> None:
    """Refuse folder-only ``build_dataset`` options (:data:`FOLDER_OPTIONS`) for another dataset.

    Raises:
        SettingError: naming the options given.
    """
    given = [name for name in FOLDER_OPTIONS if options.get(name) is not None]
    if dataset != "folder" and given:
        names = ", ".join(f"{{{name}}}" for name in given)
        raise SettingError(f"{names} appl{'ies' if len(given) == 1 else 'y'} to {{dataset=}} only", dataset="folder")


@dataclass
class TrainingRun:
    """Everything a training run needs: the model, the datasets, the settings and where to resume.

    Build one with :meth:`from_recipe` (a recipe plus overrides) or :meth:`from_settings` (settings
    resolved by :func:`resolve_settings`), or directly from your own model and datasets; then
    :meth:`fit` (or :meth:`trainer` for the :class:`~pspnet_lib.engine.Trainer`).

    Attributes:
        model: the network to train (its classifier width is the dataset's class count).
        train_dataset: augmented ``(image, mask)`` pairs (uint8 images; see :class:`Trainer`).
        val_dataset: ``(image, mask)`` pairs at their own sizes, or None (no validation).
        config: the :class:`TrainConfig`; ``config.out_dir`` is the run directory.
        resume: ``Trainer``'s ``resume`` (False, True or a checkpoint path).
        settings: the resolved settings the run was built from (empty when built directly).
    """

    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    config: TrainConfig
    resume: bool | str | Path = False
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @classmethod
    def from_recipe(
        cls,
        recipe: str | os.PathLike | Mapping[str, Any] | None,
        data_root: str | os.PathLike,
        *,
        dataset: str | None = None,
        num_classes: int | None = None,
        out_dir: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TrainingRun:
        """A run from a recipe (name, JSON file, dict or None) and a data root; the keyword arguments
        override the recipe: ``dataset``, ``num_classes``, ``out_dir``, ``overrides`` (:class:`TrainConfig`
        fields), ``model`` (:func:`~pspnet_lib.build_pspnet` arguments), ``augment``
        (:func:`~pspnet_lib.data.train_transforms` arguments). ``options`` are those of :meth:`from_settings`.
        """
        train = {**(overrides or {}), **({"out_dir": str(out_dir)} if out_dir is not None else {})}
        settings = resolve_settings(
            recipe, dataset=dataset, num_classes=num_classes, model=model, augment=augment, train=train
        )
        recipe_file = [Path(recipe)] if isinstance(recipe, (str, os.PathLike)) and os.path.isfile(recipe) else []
        options["protect"] = [*options.get("protect", ()), *recipe_file]
        return cls.from_settings(settings, data_root, **options)

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any],
        data_root: str | os.PathLike | None,
        *,
        weights: str | os.PathLike | None = None,
        weights_backbone: str | os.PathLike | None = None,
        resume: bool | str | os.PathLike = False,
        train_split: str | None = None,
        val_split: str | None = None,
        validate: bool = True,
        dataset_options: Mapping[str, Any] | None = None,
        world_size: int | None = None,
        protect: Iterable[str | os.PathLike] = (),
        band_spec: str | os.PathLike | Mapping[str, Any] | None = None,
        rgb_bands: Sequence[int] | None = None,
    ) -> TrainingRun:
        """A run from settings of the recipe shape (see :func:`resolve_settings`) and a data root.

        In order, before any training: the run directory is checked (it must not be the data
        root, nor would its files replace an input: the weights, the class file, ``protect``), the
        settings are validated, the global RNG is seeded with ``seed`` (the model's initial weights
        come from it), the training split is built and :data:`PREFLIGHT_SAMPLES` samples are read
        (a bad mask or unreadable file fails now), then the model (``weights``: any
        :func:`~pspnet_lib.load_pretrained` source, its classifiers replaced when the class count
        differs; else :func:`~pspnet_lib.build_pspnet` with ``weights_backbone``) and the datasets
        with their transforms (normalised with the model's mean/std).

        Args:
            settings: ``dataset``, ``num_classes``, ``model``, ``augment``, ``train``, ``gpus``.
            data_root: the dataset's directory.
            weights / weights_backbone: where the model starts (default: from scratch, with a warning).
            resume: continue the run in ``out_dir`` (True) or from this checkpoint.
            train_split / val_split: default the dataset's usual ones (``DEFAULT_SPLITS``); a flat
                folder without validation trains on every pair.
            validate: False: no validation dataset.
            dataset_options: more ``build_dataset`` arguments (folder datasets: :data:`FOLDER_OPTIONS`).
            world_size: processes of the run (default ``$WORLD_SIZE`` or 1), to compare the
                images per step with the recipe's.
            protect: more files the run must never write over.
            band_spec, rgb_bands: folder images in their own units (a band settings file or dict, recorded with
                the model; default: the spec of ``weights``) and where RGB weights go in them (see
                :func:`~pspnet_lib.engine.preflight.check_band_settings`, :func:`~pspnet_lib.load_pretrained`).

        Raises:
            SettingError: a setting out of range or contradicting the data (a ``ValueError``);
            OverwritesInputError, ValueError, FileNotFoundError: the data or the weights.
        """
        settings = resolve_settings(settings)
        name = settings["dataset"]
        if name not in DEFAULT_SPLITS:
            raise SettingError(
                "unknown {dataset=}; expected one of " + SettingError.escape(", ".join(DEFAULT_SPLITS)), dataset=name
            )
        if not data_root:
            raise SettingError("{data_root} is required (the dataset's directory)")
        given = settings["num_classes"]
        if given is not None and (
            isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= MAX_NUM_CLASSES
        ):
            raise SettingError(
                f"{{num_classes}} must be an integer in [1, {MAX_NUM_CLASSES}] to train (the classes of the dataset), "
                f"got {SettingError.quote(given)}"
            )
        options = dict(dataset_options or {})
        check_dataset_options(name, options)
        out_dir = settings["train"]["out_dir"]
        _check_run_dir(out_dir, data_root, [weights, weights_backbone], [options.get("classes"), *protect, band_spec])
        config = TrainConfig.from_dict(settings["train"])  # validates every setting before any work
        check_augment(settings["augment"])
        channels, band_cfg, spec = check_band_settings(
            name, settings["model"], band_spec, rgb_bands, weights or weights_backbone
        )
        # Seed before anything random happens (the model's initialisation, the data split and sample,
        # the transforms): two runs with the same seed then start from the same weights, and a run
        # killed before its first checkpoint restarts from the same initialisation.
        set_seed(config.seed)
        first: str = train_split or DEFAULT_SPLITS[name][0]
        split: str | None = first
        val_split = val_split or DEFAULT_SPLITS[name][1]
        if name == "folder":
            generic_classes(data_root, settings["num_classes"], options)
            flat = (
                not validate and not train_split and "val_fraction" not in options and not has_split(data_root, first)
            )
            if flat:
                split = None  # a flat folder without validation: train on every pair
            options["ignore_index"] = config.ignore_index  # the value the user's masks store
            options.update(in_channels=channels, band_spec=spec)
        # Classes first (the model's classifier width), from the dataset without transforms.
        probe = build_dataset(name, data_root, split, None, **options)
        check_class_count(probe.classes)
        num_classes = settings["num_classes"] or probe.num_classes
        if num_classes != probe.num_classes:
            raise SettingError(
                f"{{num_classes=}} but the {name} dataset at {SettingError.escape(data_root)} has {probe.num_classes} classes "
                f"({SettingError.escape(', '.join(probe.classes[:6]))}...)",
                num_classes=num_classes,
            )
        config.check_num_classes(num_classes)  # a class-weight list of another length, before the model is built
        if probe.ignore_index != config.ignore_index:
            raise SettingError(
                f"{{ignore_index=}} but the {name} dataset marks unscored pixels {probe.ignore_index}; leave "
                "{ignore_index} at its default (another value is for folder datasets whose masks store it)",
                ignore_index=config.ignore_index,
            )
        # Read a sample of the data now: a bad mask or unreadable file fails here, not hours into the
        # run, and in your own folders classes that never occur (e.g. 0/255 binary masks) are warned
        # about (the published datasets have many classes that a small sample misses).
        sizes = probe.verify(max_images=PREFLIGHT_SAMPLES, warn_absent=name == "folder")["sizes"]
        aug = dict(settings["augment"])
        check_batching(aug, sizes, config.batch_size)
        check_crop_size(aug.get("crop_size"), sizes)
        model = _build_model(settings["model"], num_classes, weights, weights_backbone, resume, rgb_bands)
        if band_cfg is not None:  # recorded with the weights: predict, export and calibration read the data so
            setattr(model, "pretrained_cfg", {**(getattr(model, "pretrained_cfg", None) or {}), **band_cfg})
        cfg = PretrainedCfg.of(model)
        if name == "folder" and (cfg.in_channels, cfg.bands) != (channels, spec):
            # The weights take other bands (e.g. they carry a band spec): read the data so, check again.
            options.update(in_channels=cfg.in_channels, band_spec=cfg.bands)
            build_dataset(name, data_root, split, None, **options).verify(
                max_images=PREFLIGHT_SAMPLES, warn_absent=False
            )
        mean, std = list(cfg.mean), list(cfg.std)
        transforms = train_transforms(  # augmentation settings checked in check_augment
            aug.pop("crop_size"), mean=mean, std=std, ignore_index=config.ignore_index, band_spec=cfg.bands, **aug
        )
        train_set = build_dataset(name, data_root, split, transforms, **options)
        val_transforms = eval_transforms(mean, std, normalize=False, band_spec=cfg.bands)  # evaluate normalises
        val_set = build_dataset(name, data_root, val_split, val_transforms, **options) if validate else None
        if val_set is not None:
            fraction = options.get("val_fraction")
            check_val_size(len(val_set), len(val_set) + len(train_set) if fraction else None, fraction)
        _compare_batch(settings, config, world_size or int(os.environ.get("WORLD_SIZE", "1")))
        resume = resume if isinstance(resume, (bool, str)) else Path(resume)
        return cls(model, train_set, val_set, config, resume=resume, settings=settings)

    def trainer(self, **kwargs: Any) -> Trainer:
        """The :class:`Trainer` of this run (``kwargs``: its ``loss_fn``, ``collate_fn``)."""
        return Trainer(self.model, self.train_dataset, self.val_dataset, self.config, resume=self.resume, **kwargs)

    def fit(self, stop_at: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Train (see :meth:`Trainer.fit`) and leave the process group this run joined; returns the
        Trainer's summary (``iteration``, ``metrics``, ``best_miou``, ``checkpoint``, ``model_dir``, ``history``)."""
        trainer = self.trainer(**kwargs)
        try:
            return trainer.fit(stop_at)
        finally:
            D.cleanup(trainer.dist)


def _build_model(
    options: Mapping[str, Any],
    num_classes: int,
    weights: str | os.PathLike | None,
    weights_backbone: str | os.PathLike | None,
    resume: bool | str | os.PathLike,
    rgb_bands: Sequence[int] | None = None,
) -> nn.Module:
    """The network to train: from ``weights``, or built from the model settings (+ ``weights_backbone``);
    RGB weights are adapted to ``in_channels`` bands (``rgb_bands``, see :func:`~pspnet_lib.load_pretrained`)."""
    adapt: dict[str, Any] = {"rgb_bands": rgb_bands} if rgb_bands is not None else {}
    if weights:
        if "in_channels" in options:
            adapt["in_channels"] = options["in_channels"]
        return load_pretrained(weights, num_classes=num_classes, **adapt)
    options = dict(options)
    backbone = options.pop("backbone", "resnet50")
    model = build_pspnet(backbone, num_classes, weights_backbone=weights_backbone, **options, **adapt)
    if not weights_backbone and not resume:
        logger.warning(
            "training from scratch: no weights or weights_backbone given (CLI: --weights, --backbone-weights; the "
            "published recipes start from an ImageNet-pretrained backbone)"
        )
    return model


def _check_run_dir(
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    weights: Iterable[str | os.PathLike | None],
    files: Iterable[Any],
) -> None:
    """Refuse a run directory whose files would replace the run's inputs (before anything is read)."""
    out = Path(out_dir)
    advice = "choose another {out_dir}, e.g. {out_dir=}"
    suggestion = str(sibling_folder(out, "run"))
    if os.path.realpath(out) == os.path.realpath(data_root):
        raise RunDirectoryError(
            f"{{out_dir}} {SettingError.escape(out)} is the dataset's directory {{data_root}} {SettingError.escape(data_root)}: the run's "
            f"checkpoints and model would be mixed with the data; {advice}",
            out_dir=suggestion,
        )
    inputs = [p for spec in weights if spec for p in local_files(spec)]
    inputs += [Path(spec) for spec in files if isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec)]
    mark = "\0advice\0"
    try:
        check_outputs_spare_inputs([out / name for name in RUN_FILES], inputs, input_roots=[data_root], advice=mark)
    except OverwritesInputError as exc:
        head, _, tail = str(exc).partition(mark)
        raise RunDirectoryError(
            SettingError.escape(head) + advice + SettingError.escape(tail), out_dir=suggestion
        ) from None


class RunDirectoryError(SettingError, OverwritesInputError):
    """The run directory would mix the run with its inputs (the data root, the starting weights...)."""


def _compare_batch(settings: Mapping[str, Any], config: TrainConfig, world: int) -> None:
    """Warn when the images per optimiser step differ from the recipe's published ones."""
    if not settings.get("gpus"):
        return
    published = settings["gpus"] * settings["train"].get("batch_size", 0)
    ours = world * config.batch_size * config.grad_accum
    if published and ours != published:
        logger.warning(
            "the recipe was published with %d images per step (%d GPUs x %d); this run uses %d "
            "(%d processes x %d x grad_accum %d): adjust grad_accum (CLI: --grad-accum) or the process count "
            "to match",
            published,
            settings["gpus"],
            settings["train"]["batch_size"],
            ours,
            world,
            config.batch_size,
            config.grad_accum,
        )
