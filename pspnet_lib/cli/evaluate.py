"""``pspnet eval``: the mIoU of a model on a dataset with a chosen inference protocol (1..N processes)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .train import _floats, _ints, add_dataset_args, dataset_kwargs

logger = logging.getLogger("pspnet_lib.cli.evaluate")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model's mIoU on a dataset",
        description="Score a model on a dataset split: per-class IoU and accuracy, mIoU, mAcc, aAcc. The "
        "inference protocol defaults to the one stored with the weights; flags override it. Runs under "
        "torchrun too (each process scores a share, the counts are summed).",
    )
    p.add_argument("--weights", required=True, metavar="NAME|PATH",
                   help="a training run's model directory or checkpoint (.pt), or a zoo name / Hub id")
    add_dataset_args(p)
    p.add_argument("--split", help="split to score (default: the dataset's validation split)")
    p.add_argument("--mode", choices=("whole", "slide"), help="whole image or sliding window")
    p.add_argument("--crop", type=_ints, metavar="N|H,W", help="sliding-window size")
    p.add_argument("--stride", type=_ints, metavar="N|H,W", help="sliding-window step")
    p.add_argument("--resize", type=_ints, metavar="LONG,SHORT", help="keep-ratio resize limits before inference")
    p.add_argument("--scales", type=_floats, metavar="S1,S2,..", help="multi-scale factors, e.g. 0.5,0.75,1,1.25,1.5,1.75")
    p.add_argument("--flip", action="store_true", default=None, help="add horizontally flipped runs")
    p.add_argument("--json", metavar="FILE", help="also write the metrics (per class) as JSON here")
    p.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import DEFAULT_SPLITS, build_dataset, eval_transforms
    from ..engine import distributed as D
    from ..engine.checkpoint import atomic_write_bytes
    from ..engine.evaluate import evaluate
    from ..engine.metrics import format_metrics_table, metrics_to_json
    from ..engine.model_io import load_model

    if not args.dataset or not args.data_root:
        raise ValueError("pass --dataset {voc,ade20k,cityscapes,folder} and --data-root DIR")
    if args.json:
        from .._files import check_outputs_spare_inputs, local_files

        check_outputs_spare_inputs([args.json], local_files(args.weights), advice="choose another --json file")
    if os.environ.get("RANK", "0") != "0":
        logging.getLogger("pspnet_lib").setLevel(logging.ERROR)
    info = D.init_distributed(args.device)
    try:
        model = load_model(args.weights).to(info.device)
        protocol = dict((getattr(model, "pretrained_cfg", None) or {}).get("inference") or {})
        for flag in ("mode", "crop", "stride", "resize", "scales", "flip"):
            if getattr(args, flag) is not None:
                protocol[flag] = getattr(args, flag)
        protocol.setdefault("mode", "whole")
        split = args.split or DEFAULT_SPLITS[args.dataset][1]
        dataset = build_dataset(args.dataset, args.data_root, split, eval_transforms(normalize=False), **dataset_kwargs(args))
        if dataset.num_classes != model.config.num_classes:
            raise ValueError(f"the model predicts {model.config.num_classes} classes but the {args.dataset} dataset has "
                             f"{dataset.num_classes}; evaluate on the dataset the model was trained for")
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        metrics = evaluate(
            model, dataset, mode=protocol["mode"], resize=protocol.get("resize"), crop=protocol.get("crop"),
            stride=protocol.get("stride"), scales=protocol.get("scales") or (1.0,), flip=bool(protocol.get("flip")),
            device=info.device, amp_dtype=amp, num_workers=args.num_workers or 0,
        )
    finally:
        D.cleanup(info)
    if info.is_main:
        sys.stdout.write(f"{args.weights} on {args.dataset} {split} ({len(dataset)} images, {protocol['mode']}"
                         f"{', scales ' + ','.join(map(str, protocol['scales'])) if protocol.get('scales') else ''}"
                         f"{', flip' if protocol.get('flip') else ''}):\n")
        sys.stdout.write(format_metrics_table(metrics, dataset.classes) + "\n")
        if args.json:
            atomic_write_bytes(args.json, (metrics_to_json(metrics, dataset.classes) + "\n").encode())
            sys.stdout.write(f"metrics written to {args.json}\n")
    return 0
