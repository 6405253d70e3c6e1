"""``pspnet eval``: the mIoU of a model on a dataset with a chosen inference protocol (1..N processes)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..engine.preflight import generic_classes
from .common import DATASET_CHOICES, add_dataset_args, dataset_kwargs, flag_names, floats, ints

logger = logging.getLogger("pspnet_lib.cli.evaluate")


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
    p.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    p.add_argument(
        "--amp",
        choices=("none", "bf16", "fp16"),
        default="none",
        help="autocast dtype (default none: full precision, as pspnet train validates unless --val-amp); "
        "the output and --json say which",
    )
    p.set_defaults(func=run, flags=flag_names(p))


def run(args: argparse.Namespace) -> int:
    import torch

    from .._files import atomic_write_bytes
    from ..core.pretrained_cfg import PretrainedCfg
    from ..data import DEFAULT_SPLITS, ZOO_DATASETS, build_dataset, eval_transforms
    from ..engine import distributed as D
    from ..engine.evaluate import evaluate
    from ..engine.metrics import format_metrics_table, metrics_to_json
    from ..hub.loading import load_pretrained

    if not args.data_root:
        raise ValueError("pass --data-root DIR (the dataset's directory)")
    if not os.path.isdir(args.data_root):  # before loading (or downloading) the weights
        raise ValueError(f"--data-root {args.data_root}: no such folder (pass the dataset's directory)")
    if args.confusion_matrix and not args.confusion_matrix.lower().endswith(".png"):
        raise ValueError(f"--confusion-matrix {args.confusion_matrix}: the picture is a PNG; name a .png file")
    for flag, path in (("--json", args.json), ("--confusion-matrix", args.confusion_matrix)):
        if path:  # never over an input: the weights, the class file, any file of the data root
            from .._files import check_outputs_spare_inputs, local_files

            check_outputs_spare_inputs(
                [path],
                [
                    *local_files(args.weights),
                    *([args.classes] if args.classes and os.path.isfile(args.classes) else []),
                ],
                input_roots=[args.data_root],
                advice=f"choose another {flag} file",
            )
    if os.environ.get("RANK", "0") != "0":
        logging.getLogger("pspnet_lib").setLevel(logging.ERROR)
    info = D.init_distributed(args.device)
    try:
        model = load_pretrained(args.weights).to(info.device)
        cfg = PretrainedCfg.of(model, what=f"--weights {args.weights}")
        if not args.dataset:
            # Zoo weights (or a file recognised as one) know the dataset that scores them.
            args.dataset = ZOO_DATASETS.get(str(cfg.dataset))
            if not args.dataset:
                raise ValueError(
                    f"{args.weights} does not say which dataset it was trained on: pass --dataset "
                    f"{{{','.join(DATASET_CHOICES)}}}"
                )
            logger.info("scoring on --dataset %s, the dataset of %s", args.dataset, args.weights)
        flags = ("mode", "crop", "stride", "resize", "scales", "flip")
        try:
            protocol = cfg.protocol.replace(**{f: getattr(args, f) for f in flags if getattr(args, f) is not None})
        except ValueError as exc:  # name the flags: the stored protocol was valid, the flags changed it
            raise ValueError(f"{exc} (set by --mode/--resize/--crop/--stride/--scales/--flip)") from None
        split = args.split or DEFAULT_SPLITS[args.dataset][1]
        if split == "all":
            if args.dataset != "folder":
                raise ValueError("--split all applies to --dataset folder only; pass a split name of the dataset")
            split = None  # every image/mask pair of the folder
        kwargs = dataset_kwargs(args)
        if (
            args.dataset == "folder"
            and "classes" not in kwargs
            and cfg.classes
            and not os.path.isfile(os.path.join(args.data_root, "classes.txt"))
        ):
            kwargs["classes"] = list(cfg.classes)  # the model's own class names
        if args.dataset == "folder":
            generic_classes(args.data_root, model.config.num_classes, kwargs)
            kwargs["ignore_index"] = cfg.ignore_index  # what the model was trained with (pspnet train --ignore-index)
            kwargs.update(in_channels=cfg.in_channels, band_spec=cfg.bands)  # the bands as the model reads them
        transforms = eval_transforms(cfg.mean, cfg.std, normalize=False, band_spec=cfg.bands)  # evaluate normalises
        dataset = build_dataset(args.dataset, args.data_root, split, transforms, **kwargs)
        if dataset.num_classes != model.config.num_classes:
            raise ValueError(
                f"the model predicts {model.config.num_classes} classes but the {args.dataset} dataset has "
                f"{dataset.num_classes}; evaluate on the dataset the model was trained for"
            )
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        metrics = evaluate(
            model,
            dataset,
            protocol=protocol,
            device=info.device,
            amp_dtype=amp,
            num_workers=args.num_workers or 0,
        )
    finally:
        D.cleanup(info)
    if info.is_main:
        sys.stdout.write(
            f"{args.weights} on {args.dataset} {split or 'all'} ({len(dataset)} images, {metrics['precision']}, {protocol.mode}"
            f"{', scales ' + ','.join(map(str, protocol.scales)) if protocol.scales != (1.0,) else ''}"
            f"{', flip' if protocol.flip else ''}):\n"
        )
        sys.stdout.write(format_metrics_table(metrics, dataset.classes) + "\n")
        if args.json:
            atomic_write_bytes(args.json, (metrics_to_json(metrics, dataset.classes) + "\n").encode())
            sys.stdout.write(f"metrics written to {args.json}\n")
        if args.confusion_matrix:
            import io

            from ..inference.visualize import draw_confusion_matrix

            picture = io.BytesIO()
            title = f"{args.weights} on {args.dataset} {split or 'all'}: confusion matrix"
            draw_confusion_matrix(metrics["confusion_matrix"], dataset.classes, title).save(picture, format="PNG")
            atomic_write_bytes(args.confusion_matrix, picture.getvalue())
            sys.stdout.write(f"confusion matrix drawn in {args.confusion_matrix}\n")
    return 0
