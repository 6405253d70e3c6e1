"""``pspnet train``: train or fine-tune a PSPNet on a dataset, from a recipe or flags, on 1..N GPUs (torchrun).

The command parses flags and calls :class:`pspnet_lib.engine.TrainingRun`; the settings' flags are
derived from ``TrainConfig``'s fields (``cli.common.add_setting_args``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..core.constants import MAX_NUM_CLASSES
from ..engine.run import TrainingRun, resolve_settings
from .common import (
    DATASET_CHOICES,
    add_dataset_args,
    add_setting_args,
    dataset_options,
    flag_names,
    float_in,
    floats,
    int_in,
    int_list,
    ints,
    setting_overrides,
)

__all__ = ["AUGMENT_FLAGS", "DATASET_CHOICES", "add_dataset_args", "register", "run"]

#: ``train_transforms`` arguments given as flags (``--crop-size`` ...).
AUGMENT_FLAGS = ("crop_size", "scale_range", "base_size", "rotation", "blur_p")


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
    groups = {"data": add_dataset_args(p, workers=False)}
    g = p.add_argument_group("data splits and augmentation")
    g.add_argument("--train-split", help="training split (default: the dataset's usual one)")
    g.add_argument("--val-split", help="validation split (default: the dataset's usual one)")
    g.add_argument("--no-val", dest="validate", action="store_false", help="do not validate")
    g.add_argument("--crop-size", type=ints, metavar="N|H,W", help="training crop (default 512)")
    g.add_argument("--scale-range", type=floats, metavar="LO,HI", help="random scale range (default 0.5,2.0)")
    g.add_argument(
        "--base-size",
        type=ints,
        metavar="LONG,SHORT",
        help="scale relative to a keep-ratio fit into these edges (mmseg); default: each image's size",
    )
    g.add_argument(
        "--rotation", type=float_in(0, 180), metavar="DEG", help="max random rotation (default 10; 0 disables)"
    )
    g.add_argument("--blur-p", type=float_in(0, 1), metavar="P", help="Gaussian blur probability (default 0.5)")
    g = p.add_argument_group("model")
    g.add_argument(
        "--num-classes", type=int_in(1, MAX_NUM_CLASSES), metavar="K", help="classes (default: the dataset's)"
    )
    g.add_argument(
        "--backbone", help="resnet18/34/50/101/152 (default resnet50), or timm:<name> (a timm encoder, docs/model.md)"
    )
    g.add_argument("--preset", help="layout preset: mmseg (default), mmseg-b, semseg")
    g.add_argument(
        "--weights",
        metavar="NAME|PATH",
        help="start from these weights: a zoo name, an ImageNet backbone (e.g. resnet50_v1c), a Hub id "
        "(via pspnet_lib.load_pretrained), a saved model directory or a training checkpoint; the "
        "classifiers are replaced when the number of classes differs",
    )
    g.add_argument(
        "--in-channels",
        type=int,
        metavar="N",
        help="input bands of the model (folder datasets; default 3: RGB pictures)",
    )
    g.add_argument(
        "--band-spec",
        metavar="FILE",
        help="band settings (JSON: a band spec and the mean/std after scaling, as pspnet stats --out writes "
        "them) for images in their own units: uint16/int16/float bands, nodata; recorded with the weights",
    )
    g.add_argument(
        "--rgb-bands",
        type=int_list,
        metavar="R,G,B",
        help="with --weights/--backbone-weights of RGB models and --in-channels N: the band positions (0-based) "
        "the RGB weights go to, e.g. 3,2,1 for Sentinel-2; default: timm's rule (RGB repeated over N, scaled 3/N)",
    )
    g.add_argument(
        "--backbone-weights",
        dest="weights_backbone",
        metavar="NAME|PATH",
        help="ImageNet backbone weights only (heads start fresh): a zoo name such as resnet50_v1c or "
        "resnet50_torchvision, or a checkpoint file/URL in torchvision, mmseg v1c or semseg layout; "
        "the stem follows the weights. With --backbone timm:<name>: DEFAULT, a pretrained tag, hf-hub:org/repo "
        "or a file in timm's layout (docs/weights.md)",
    )
    for title in ("optimisation", "speed and memory", "run"):
        groups[title] = p.add_argument_group(title)
    groups["run"].add_argument(
        "--resume", nargs="?", const=True, metavar="CKPT", help="continue the run in --out (or from this checkpoint)"
    )
    add_setting_args(p, groups)  # one flag per TrainConfig field
    p.set_defaults(func=run, flags=flag_names(p))


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
    main_process = os.environ.get("RANK", "0") == "0"
    if not main_process:  # one process speaks for all
        logging.getLogger("pspnet_lib").setLevel(logging.ERROR)
    settings = resolve_settings(
        args.recipe,
        dataset=args.dataset,
        num_classes=args.num_classes,
        model={"backbone": args.backbone, "preset": args.preset, "in_channels": args.in_channels},
        augment={name: getattr(args, name) for name in AUGMENT_FLAGS},
        train=setting_overrides(args),
    )
    if args.print_config:
        sys.stdout.write(json.dumps(settings, indent=2) + "\n")
        return 0
    training = TrainingRun.from_settings(
        settings,
        args.data_root,
        weights=args.weights,
        weights_backbone=args.weights_backbone,
        resume=args.resume or False,
        train_split=args.train_split,
        val_split=args.val_split,
        validate=args.validate,
        dataset_options=dataset_options(args),
        protect=[args.recipe] if args.recipe else [],
        band_spec=args.band_spec,
        rgb_bands=args.rgb_bands,
    )
    summary = training.fit()
    if main_process:
        if summary["metrics"]:
            m = summary["metrics"]
            sys.stdout.write(
                f"final: mIoU {100 * m['mIoU']:.2f}  mAcc {100 * m['mAcc']:.2f}  aAcc {100 * m['aAcc']:.2f}"
                f"  (best mIoU {100 * summary['best_miou']:.2f})\n"
            )
        sys.stdout.write(
            f"run directory: {training.config.out_dir} (checkpoints/, history.json"
            f"{', metrics.json, validation/ (per class, confusion matrices)' if summary['metrics'] else ''}); "
            f"model: {summary['model_dir']}\n"
        )
    return 0
