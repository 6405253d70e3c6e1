"""``pspnet eval``: the mIoU of a model on a dataset with a chosen inference protocol (1..N processes)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .common import add_dataset_args, dataset_options, device_name, flag_names, floats, ints


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model's mIoU on a dataset",
        description="Score a model on a dataset split: per-class IoU and accuracy, mIoU, mAcc, aAcc. The "
        "inference protocol defaults to the one stored with the weights; flags override it. Runs under "
        "torchrun too (each process scores a share, the counts are summed).",
    )
    p.add_argument(
        "--weights",
        required=True,
        metavar="NAME|PATH",
        help="a training run's model directory or checkpoint (.pt), or a zoo name / Hub id",
    )
    add_dataset_args(p)
    p.add_argument(
        "--split",
        help="split to score (default: the dataset's validation split); for --dataset folder, "
        "'all' scores every image/mask pair",
    )
    p.add_argument("--mode", choices=("whole", "slide"), help="whole image or sliding window")
    p.add_argument("--crop", type=ints, metavar="N|H,W", help="sliding-window size")
    p.add_argument("--stride", type=ints, metavar="N|H,W", help="sliding-window step")
    p.add_argument("--resize", type=ints, metavar="LONG,SHORT", help="keep-ratio resize limits before inference")
    p.add_argument(
        "--scales", type=floats, metavar="S1,S2,..", help="multi-scale factors, e.g. 0.5,0.75,1,1.25,1.5,1.75"
    )
    p.add_argument("--flip", action="store_true", default=None, help="add horizontally flipped runs")
    p.add_argument(
        "--json", metavar="FILE", help="also write the metrics (per class, and the confusion matrix) as JSON here"
    )
    p.add_argument(
        "--confusion-matrix",
        metavar="FILE.png",
        help="also draw the confusion matrix (rows: ground truth, normalised; columns: prediction) as a PNG here",
    )
    p.add_argument("--device", type=device_name, help="cuda or cpu (default: cuda if available)")
    p.add_argument(
        "--amp",
        choices=("none", "bf16", "fp16"),
        default="none",
        help="autocast dtype (default none: full precision, as pspnet train validates unless --val-amp); "
        "the output and --json say which",
    )
    flags = {
        **flag_names(p),
        "json_path": "--json",
        "confusion_matrix_path": "--confusion-matrix",
        "protocol": "--mode/--resize/--crop/--stride/--scales/--flip",
    }
    p.set_defaults(func=run, flags=flags)


def run(args: argparse.Namespace) -> int:
    from ..engine.evaluate_dataset import evaluate_dataset

    if not args.data_root:
        raise ValueError("pass --data-root DIR (the dataset's directory)")
    if os.environ.get("RANK", "0") != "0":
        logging.getLogger("pspnet_lib").setLevel(logging.ERROR)
    result = evaluate_dataset(
        args.weights,
        args.data_root,
        dataset=args.dataset,
        split=args.split,
        protocol={f: getattr(args, f) for f in ("mode", "crop", "stride", "resize", "scales", "flip")},
        dataset_options=dataset_options(args),
        device=args.device,
        amp=args.amp,
        num_workers=args.num_workers or 0,
        json_path=args.json,
        confusion_matrix_path=args.confusion_matrix,
    )
    if result.is_main:
        sys.stdout.write(f"{result.summary()}\n{result.table()}\n")
        if args.json:
            sys.stdout.write(f"metrics written to {args.json}\n")
        if args.confusion_matrix:
            sys.stdout.write(f"confusion matrix drawn in {args.confusion_matrix}\n")
    return 0
