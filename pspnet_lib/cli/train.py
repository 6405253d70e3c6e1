"""``pspnet train``: train or fine-tune a PSPNet on a dataset, from a recipe or flags, on 1..N GPUs (torchrun)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("pspnet_lib.cli.train")

#: Kept in step with pspnet_lib.data.DATASETS (a test checks); written out so that building the
#: parser does not import the data package.
DATASET_CHOICES = (
    "voc",
    "ade20k",
    "cityscapes",
    "pascal-context",
    "pascal-context-59",
    "coco-stuff10k",
    "coco-stuff164k",
    "loveda",
    "potsdam",
    "vaihingen",
    "isaid",
    "folder",
)
#: How many training samples ``pspnet train`` reads before starting (spread over the dataset).
_PREFLIGHT_SAMPLES = 32


def _ints(text: str) -> list[int]:
    """``512`` or ``512,1024`` / ``512x1024`` -> [512, 512] / [512, 1024]."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or H,W (e.g. 512 or 512,1024), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or H,W with positive values, got {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


#: Zoo dataset keys that name a dataset differently (pspnet list shows voc12aug for the VOC models).
_DATASET_ALIASES = {"voc12aug": "voc"}


def _dataset_name(text: str) -> str:
    key = text.strip().lower()
    return _DATASET_ALIASES.get(key, key)


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """Dataset flags shared by ``train`` and ``eval``."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        type=_dataset_name,
        choices=DATASET_CHOICES,
        help="dataset layout (see docs/datasets.md; the zoo's voc12aug is voc); a recipe sets it",
    )
    group.add_argument("--data-root", metavar="DIR", help="the dataset's directory")
    group.add_argument(
        "--classes",
        metavar="FILE|A,B,..",
        help="folder datasets: class names (a file with one per line, or comma-separated); "
        "default DATA_ROOT/classes.txt",
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="folder datasets without split information: hold out this fraction as 'val'",
    )
    group.add_argument(
        "--mask-suffix",
        metavar="SUFFIX",
        help="folder datasets: mask stem = image stem + SUFFIX (e.g. _mask pairs a.jpg with a_mask.png)",
    )
    group.add_argument(
        "--label-map",
        type=_label_map,
        metavar="SRC:DST,..",
        help="folder datasets: remap stored mask values, e.g. 255:1 for binary masks saved as 0/255 "
        "(255 otherwise means 'ignore')",
    )
    group.add_argument(
        "--ignore-colour",
        "--ignore-color",
        dest="ignore_colour",
        type=_colour,
        action="append",
        metavar="R,G,B",
        help="folder datasets with colour masks: a colour read as ignore (255), e.g. "
        "255,255,255; repeatable (VOC's void colour 224,224,192 is ignored with the VOC palette anyway)",
    )
    group.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers per process")


def _colour(text: str) -> tuple[int, int, int]:
    """``224,224,192`` -> (224, 224, 192)."""
    try:
        colour = tuple(int(v) for v in text.replace(" ", ",").split(",") if v.strip())
    except ValueError:
        colour = ()
    if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
        raise argparse.ArgumentTypeError(f"expected R,G,B with values 0..255 such as 224,224,192, got {text!r}")
    return colour  # type: ignore[return-value]


def _label_map(text: str) -> dict[int, int]:
    """``255:1`` or ``1:0,2:255`` -> {255: 1} / {1: 0, 2: 255}."""
    mapping = {}
    for item in (part for part in text.split(",") if part.strip()):
        try:
            source, target = (int(v) for v in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected SRC:DST pairs of integers such as 255:1, got {text!r}"
            ) from None
        mapping[source] = target
    if not mapping:
        raise argparse.ArgumentTypeError(f"expected SRC:DST pairs of integers such as 255:1, got {text!r}")
    return mapping


_FOLDER_FLAGS = ("classes", "val_fraction", "mask_suffix", "label_map", "ignore_colour")


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Extra ``build_dataset`` arguments from the flags (folder datasets only)."""
    if args.dataset != "folder":
        given = [f"--{flag.replace('_', '-')}" for flag in _FOLDER_FLAGS if getattr(args, flag, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --dataset folder only")
        return {}
    kwargs: dict[str, Any] = {}
    if args.classes:
        kwargs["classes"] = (
            args.classes if os.path.isfile(args.classes) else [c.strip() for c in args.classes.split(",")]
        )
    if args.val_fraction is not None:
        kwargs["val_fraction"] = args.val_fraction
    if args.mask_suffix:
        kwargs["mask_suffix"] = args.mask_suffix
    if args.label_map:
        kwargs["label_map"] = args.label_map
    if getattr(args, "ignore_colour", None):
        kwargs["ignore_colours"] = args.ignore_colour
    return kwargs


def generic_classes(data_root: str, num_classes: int | None, kwargs: dict[str, Any]) -> None:
    """A folder with no class names (no ``--classes``, no ``classes.txt``) and a known class count:
    name the classes ``class_0`` ... (in ``kwargs``), with a warning."""
    if "classes" in kwargs or not num_classes or os.path.isfile(os.path.join(data_root, "classes.txt")):
        return
    kwargs["classes"] = [f"class_{i}" for i in range(num_classes)]
    logger.warning(
        "no class names for %s (no --classes, no classes.txt): using class_0 .. class_%d; write "
        "classes.txt (one name per line) to name them",
        data_root,
        num_classes - 1,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a PSPNet (recipes, AMP, resume, torchrun)",
        description="Train a PSPNet by iterations with the paper's recipe. Start from a --recipe (see "
        "--list-recipes) or give the settings as flags; flags override the recipe. Multi-GPU: "
        "torchrun --nproc_per_node N -m pspnet_lib train ... (see docs/training.md).",
    )
    p.add_argument("--recipe", metavar="NAME|FILE", help="a built-in recipe or a JSON recipe file")
    p.add_argument("--list-recipes", action="store_true", help="list the built-in recipes and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
    add_dataset_args(p)
    g = p.add_argument_group("data splits and augmentation")
    g.add_argument("--train-split", help="training split (default: the dataset's usual one)")
    g.add_argument("--val-split", help="validation split (default: the dataset's usual one)")
    g.add_argument("--no-val", action="store_true", help="do not validate")
    g.add_argument("--crop-size", type=_ints, metavar="N|H,W", help="training crop (default 512)")
    g.add_argument("--scale-range", type=_floats, metavar="LO,HI", help="random scale range (default 0.5,2.0)")
    g.add_argument(
        "--base-size",
        type=_ints,
        metavar="LONG,SHORT",
        help="scale relative to a keep-ratio fit into these edges (mmseg); default: each image's size",
    )
    g.add_argument("--rotation", type=float, metavar="DEG", help="max random rotation (default 10; 0 disables)")
    g.add_argument("--blur-p", type=float, metavar="P", help="Gaussian blur probability (default 0.5)")
    g = p.add_argument_group("model")
    g.add_argument("--num-classes", type=int, metavar="K", help="classes (default: the dataset's)")
    g.add_argument("--backbone", help="resnet18/34/50/101/152 (default resnet50)")
    g.add_argument("--preset", help="layout preset: mmseg (default), mmseg-b, semseg")
    g.add_argument(
        "--weights",
        metavar="NAME|PATH",
        help="start from these weights: a zoo name, an ImageNet backbone (e.g. resnet50_v1c), a Hub id "
        "(via pspnet_lib.load_pretrained), a saved model directory or a training checkpoint; the "
        "classifiers are replaced when the number of classes differs",
    )
    g.add_argument(
        "--backbone-weights",
        metavar="NAME|PATH",
        help="ImageNet backbone weights only (heads start fresh): a zoo name such as resnet50_v1c or "
        "resnet50_torchvision, or a checkpoint file/URL in torchvision, mmseg v1c or semseg layout; "
        "the stem follows the weights",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--iters", type=int, help="iterations (optimiser steps)")
    g.add_argument("--batch-size", type=int, help="images per process per step (before --grad-accum)")
    g.add_argument("--lr", type=float, help="base (backbone) learning rate")
    g.add_argument("--optimizer", choices=("sgd", "adamw"))
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--head-lr-mult", type=float, help="heads' LR factor (paper: 10)")
    g.add_argument("--warmup-iters", type=int)
    g.add_argument("--min-lr", type=float)
    g.add_argument("--aux-weight", type=float)
    g.add_argument("--grad-accum", type=int, metavar="N", help="accumulate N batches per step")
    g.add_argument("--clip-grad-norm", type=float, metavar="X")
    g = p.add_argument_group("speed and memory")
    g.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        choices=("auto", "none", "bf16", "fp16"),
        help="mixed precision; bare --amp = fp16 on CUDA, bf16 on the CPU",
    )
    g.add_argument("--channels-last", action="store_true", default=None)
    g.add_argument("--grad-checkpointing", action="store_true", default=None)
    g.add_argument("--freeze-backbone", action="store_true", default=None)
    g.add_argument("--freeze-bn", action="store_true", default=None)
    g.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="run directory (default runs/<dataset>)")
    g.add_argument(
        "--resume", nargs="?", const=True, metavar="CKPT", help="continue the run in --out (or from this checkpoint)"
    )
    g.add_argument("--val-interval", type=int)
    g.add_argument("--ckpt-interval", type=int)
    g.add_argument("--keep-last", type=int)
    g.add_argument("--log-interval", type=int)
    g.add_argument(
        "--seed",
        type=int,
        help="seed of the initial weights, data order and augmentation (default 0): "
        "the same seed on the same machine reproduces a run",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in log files)")
    g = p.add_argument_group("validation protocol")
    g.add_argument("--eval-mode", choices=("whole", "slide"))
    g.add_argument("--eval-crop", type=_ints, metavar="N|H,W")
    g.add_argument("--eval-stride", type=_ints, metavar="N|H,W")
    g.add_argument("--eval-resize", type=_ints, metavar="LONG,SHORT")
    g.add_argument("--eval-scales", type=_floats, metavar="S1,S2,..")
    g.add_argument("--eval-flip", action="store_true", default=None)
    p.set_defaults(func=run)


# Flag name -> TrainConfig field, for flags that map one to one.
_TRAIN_FLAGS = {
    "iters": "iters",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "head_lr_mult": "head_lr_mult",
    "warmup_iters": "warmup_iters",
    "min_lr": "min_lr",
    "aux_weight": "aux_weight",
    "grad_accum": "grad_accum",
    "clip_grad_norm": "clip_grad_norm",
    "channels_last": "channels_last",
    "grad_checkpointing": "grad_checkpointing",
    "freeze_backbone": "freeze_backbone",
    "freeze_bn": "freeze_bn",
    "device": "device",
    "val_interval": "val_interval",
    "ckpt_interval": "ckpt_interval",
    "keep_last": "keep_last",
    "log_interval": "log_interval",
    "seed": "seed",
    "num_workers": "num_workers",
    "eval_mode": "eval_mode",
    "eval_crop": "eval_crop",
    "eval_stride": "eval_stride",
    "eval_resize": "eval_resize",
    "eval_scales": "eval_scales",
    "eval_flip": "eval_flip",
}
_AUGMENT_FLAGS = {
    "crop_size": "crop_size",
    "scale_range": "scale_range",
    "base_size": "base_size",
    "rotation": "rotation",
    "blur_p": "blur_p",
}


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Recipe (if any) overlaid with the flags given: ``dataset``, ``num_classes``, ``model``, ``augment``, ``train``."""
    from ..recipes import load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else {}
    settings: dict[str, Any] = {
        "dataset": recipe.get("dataset"),
        "num_classes": recipe.get("num_classes"),
        "model": {"backbone": "resnet50", **recipe.get("model", {})},
        "augment": {"crop_size": [512, 512], **recipe.get("augment", {})},
        "train": dict(recipe.get("train", {})),
        "gpus": recipe.get("gpus"),
    }
    if args.dataset:
        settings["dataset"] = args.dataset
    if args.num_classes:
        settings["num_classes"] = args.num_classes
    for flag, key in (("backbone", "backbone"), ("preset", "preset")):
        if getattr(args, flag):
            settings["model"][key] = getattr(args, flag)
    for flag, key in _AUGMENT_FLAGS.items():
        if getattr(args, flag) is not None:
            settings["augment"][key] = getattr(args, flag)
    for flag, key in _TRAIN_FLAGS.items():
        if getattr(args, flag) is not None:
            settings["train"][key] = getattr(args, flag)
    if args.amp is not None:
        amp = args.amp
        if amp == "auto":
            import torch

            cuda = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
            amp = "fp16" if cuda else "bf16"
        settings["train"]["amp"] = amp
    if args.no_progress:
        settings["train"]["progress"] = False
    if not settings["dataset"]:
        raise ValueError(f"no dataset: pass --dataset {{{','.join(DATASET_CHOICES)}}} (or a --recipe that names one)")
    settings["train"]["out_dir"] = (
        args.out or settings["train"].get("out_dir") or os.path.join("runs", settings["dataset"])
    )
    return settings


def build_model(settings: dict[str, Any], args: argparse.Namespace, num_classes: int):
    """The network to train: from --weights, or built from the model settings (+ --backbone-weights)."""
    from ..hub.loading import load_pretrained
    from ..models import build_pspnet

    if args.weights:
        return load_pretrained(args.weights, num_classes=num_classes)
    options = dict(settings["model"])
    backbone = options.pop("backbone", "resnet50")
    model = build_pspnet(backbone, num_classes, weights_backbone=args.backbone_weights, **options)
    if not args.backbone_weights and not args.resume:
        logger.warning(
            "training from scratch: no --weights or --backbone-weights given (the published recipes "
            "start from an ImageNet-pretrained backbone)"
        )
    return model


#: What a run writes directly into its directory (besides ``checkpoints/``).
RUN_FILES = (
    "train_config.json",
    "history.json",
    "metrics.json",
    "model/config.json",
    "model/model.safetensors",
    "model/README.md",
)


def check_run_dir(out_dir: str, args: argparse.Namespace) -> None:
    """Refuse a run directory whose files would replace the run's inputs (before anything is read)."""
    from .._files import OverwritesInputError, check_outputs_spare_inputs, local_files, sibling_folder

    out = Path(out_dir)
    advice = f"choose another --out, e.g. --out {sibling_folder(out, 'run')}"
    if args.data_root and os.path.realpath(out) == os.path.realpath(args.data_root):
        raise OverwritesInputError(
            f"--out {out} is the dataset's directory --data-root {args.data_root}: the run's "
            f"checkpoints and model would be mixed with the data; {advice}"
        )
    inputs = [p for spec in (args.weights, args.backbone_weights) if spec for p in local_files(spec)]
    inputs += [Path(spec) for spec in (args.recipe, args.classes) if spec and os.path.isfile(spec)]
    check_outputs_spare_inputs([out / name for name in RUN_FILES], inputs, advice=advice)


def run(args: argparse.Namespace) -> int:
    if args.list_recipes:
        from ..recipes import RECIPES

        for name in sorted(RECIPES):
            r = RECIPES[name]
            t = r["train"]
            note = r.get("_published", "")
            sys.stdout.write(
                f"{name:28s} {r['dataset']:17s} {t['iters']:>7d} it  {r['gpus']}x{t['batch_size']} img  "
                f"crop {r['augment']['crop_size'][0]}x{r['augment']['crop_size'][1]}  {note}\n"
            )
        return 0
    if os.environ.get("RANK", "0") != "0":  # one process speaks for all
        logging.getLogger("pspnet_lib").setLevel(logging.ERROR)
    settings = resolve_settings(args)
    if args.print_config:
        sys.stdout.write(json.dumps(settings, indent=2) + "\n")
        return 0
    if not args.data_root:
        raise ValueError("--data-root DIR is required (the dataset's directory)")
    check_run_dir(settings["train"]["out_dir"], args)

    from ..core.pretrained_cfg import PretrainedCfg
    from ..data import DEFAULT_SPLITS, build_dataset, eval_transforms, train_transforms
    from ..data.datasets import has_split
    from ..engine import TrainConfig, Trainer, set_seed
    from ..engine import distributed as D

    name = settings["dataset"]
    config = TrainConfig.from_dict(settings["train"])  # validates every setting before any work
    # Seed before anything random happens (the model's initialisation, the data split and sample,
    # the transforms): two runs with the same --seed then start from the same weights, and a run
    # killed before its first checkpoint restarts from the same initialisation.
    set_seed(config.seed)
    train_split = args.train_split or DEFAULT_SPLITS[name][0]
    val_split = args.val_split or DEFAULT_SPLITS[name][1]
    kwargs = dataset_kwargs(args)
    if name == "folder":
        generic_classes(args.data_root, settings["num_classes"], kwargs)
    if (
        name == "folder"
        and args.no_val
        and not args.train_split
        and "val_fraction" not in kwargs
        and not has_split(args.data_root, train_split)
    ):
        train_split = None  # a flat folder without validation: train on every pair
    # Classes first (the model's classifier width), from the dataset without transforms.
    probe = build_dataset(name, args.data_root, train_split, None, **kwargs)
    # Read a sample of the data now: a bad mask or unreadable file fails here, not hours into the
    # run, and in your own folders classes that never occur (e.g. 0/255 binary masks) are warned
    # about (the published datasets have many classes that a small sample misses).
    probe.verify(max_images=_PREFLIGHT_SAMPLES, warn_absent=name == "folder")
    num_classes = settings["num_classes"] or probe.num_classes
    if settings["num_classes"] and settings["num_classes"] != probe.num_classes:
        raise ValueError(
            f"--num-classes {settings['num_classes']} but the {name} dataset at {args.data_root} has "
            f"{probe.num_classes} classes ({', '.join(probe.classes[:6])}...)"
        )
    model = build_model(settings, args, num_classes)
    cfg = PretrainedCfg.of(model)
    mean, std = list(cfg.mean), list(cfg.std)
    aug = dict(settings["augment"])
    train_set = build_dataset(
        name, args.data_root, train_split, train_transforms(aug.pop("crop_size"), mean=mean, std=std, **aug), **kwargs
    )
    val_set = None
    if not args.no_val:
        val_set = build_dataset(name, args.data_root, val_split, eval_transforms(normalize=False), **kwargs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if settings.get("gpus"):
        published = settings["gpus"] * settings["train"].get("batch_size", 0)
        ours = world * config.batch_size * config.grad_accum
        if published and ours != published:
            logger.warning(
                "the recipe was published with %d images per step (%d GPUs x %d); this run uses %d "
                "(%d processes x %d x grad-accum %d): adjust --grad-accum or the process count to match",
                published,
                settings["gpus"],
                settings["train"]["batch_size"],
                ours,
                world,
                config.batch_size,
                config.grad_accum,
            )
    trainer = Trainer(model, train_set, val_set, config, resume=args.resume or False)
    try:
        summary = trainer.fit()
    finally:
        D.cleanup(trainer.dist)
    if trainer.is_main:
        if summary["metrics"]:
            m = summary["metrics"]
            sys.stdout.write(
                f"final: mIoU {100 * m['mIoU']:.2f}  mAcc {100 * m['mAcc']:.2f}  aAcc {100 * m['aAcc']:.2f}"
                f"  (best mIoU {100 * summary['best_miou']:.2f})\n"
            )
        sys.stdout.write(
            f"run directory: {config.out_dir} (checkpoints/, history.json"
            f"{', metrics.json' if summary['metrics'] else ''}); model: {summary['model_dir']}\n"
        )
    return 0
