"""``pspnet export``: write a model as ONNX, a ``torch.export`` program or TorchScript.

    pspnet export --weights pspnet_r50-d8_ade20k --format onnx --out pspnet.onnx
    pspnet export --weights ./my_model --format exported-program --out pspnet.pt2

Exports are dynamic in batch, height and width by default (``--static`` fixes the example size).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("pspnet_lib.cli.export")

FORMATS = ("onnx", "exported-program", "torchscript")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..core.inference_protocol import MAX_SIDE
    from .common import float_in, int_in

    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX, torch.export (.pt2) or TorchScript",
        description=(
            "Export a model for deployment. By default the exported model accepts any batch size, height and "
            "width (one file for every image size); --static fixes them to --batch-size x --height x --width."
        ),
    )
    parser.add_argument(
        "--weights", required=True, help="zoo name, hf-hub:org/repo, a save_pretrained folder or a checkpoint file"
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="output format")
    parser.add_argument("--out", required=True, type=Path, help="file to write (.onnx, .pt2 or .pt)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--dynamic", dest="dynamic", action="store_true", default=True, help="dynamic batch/height/width (default)"
    )
    shape.add_argument(
        "--static", dest="dynamic", action="store_false", help="fixed input shape (for runtimes that need it)"
    )
    parser.add_argument(
        "--height", type=int_in(1, MAX_SIDE), default=512, help="example (or, with --static, fixed) input height"
    )
    parser.add_argument(
        "--width", type=int_in(1, MAX_SIDE), default=512, help="example (or, with --static, fixed) input width"
    )
    parser.add_argument(
        "--batch-size",
        type=int_in(1, 1024),
        default=None,
        help="example/fixed batch size (default 2; 1 for TorchScript)",
    )
    parser.add_argument("--opset", type=int_in(7, 100), help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--onnx-exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="which torch.onnx exporter to use",
    )
    parser.add_argument(
        "--preprocess",
        action="store_true",
        help="embed normalisation: the exported model takes uint8 (N, C, H, W), C = the model's in_channels (RGB: 3); "
        "weights with a band spec take their stored values (e.g. uint16), scaled inside the graph",
    )
    parser.add_argument(
        "--output", choices=("logits", "probs", "labels"), default="logits", help="what the exported model returns"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="ONNX only: compare ONNX Runtime with PyTorch at three sizes (with --int8: argmax agreement and max "
        "logit error against fp32 on held-out pictures of --calibration)",
    )
    int8 = parser.add_argument_group("INT8 (ONNX only)")
    int8.add_argument(
        "--int8",
        action="store_true",
        help="static-quantized INT8 (QDQ, per-channel weights), calibrated on --calibration",
    )
    int8.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="folder of pictures like those you will segment (needed by --int8)",
    )
    int8.add_argument(
        "--calibration-count",
        type=int_in(1, 100_000),
        default=16,
        metavar="N",
        help="calibrate on N pictures of DIR (a reproducible sample; default 16)",
    )
    int8.add_argument(
        "--calibration-method",
        choices=("minmax", "entropy", "percentile"),
        default="minmax",
        help="how activation ranges are set (default minmax)",
    )
    int8.add_argument(
        "--float-layers",
        default=None,  # classifier; None tells "not given" apart (it applies to --int8 only)
        metavar="LIST",
        help="convolutions kept in float, comma-separated: classifier (the default: the logits' layer; it lifted "
        "the argmax agreement on a trained model), first (the stem's first convolution), or none",
    )
    int8.add_argument(
        "--check-count",
        type=int_in(1, 100_000),
        default=4,
        metavar="N",
        help="with --int8 --check: held-out pictures of DIR to compare on (default 4)",
    )
    int8.add_argument(
        "--min-agreement",
        type=float_in(0, 1),
        default=0.98,
        help="with --int8 --check: exit 1 below this argmax agreement (default 0.98)",
    )
    parser.add_argument("--device", default="cpu", help="device to trace on (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


#: The usual file suffix of each format (what loaders and tools expect).
_SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".pt"}


def run(args: argparse.Namespace) -> int:
    from .._files import check_outputs_spare_inputs, local_files
    from ..hub.loading import load_pretrained
    from ..inference import export as ex

    # e.g. --format torchscript --out run/checkpoints/latest.pt --overwrite: the weights themselves
    check_outputs_spare_inputs(
        [args.out], local_files(args.weights), input_roots=[args.calibration], advice="choose another --out file"
    )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    expected = _SUFFIXES[args.format]
    if args.out.suffix.lower() != expected:
        logger.warning(
            "--out %s does not end in %s, the usual suffix of --format %s (the file is written in that format anyway)",
            args.out,
            expected,
            args.format,
        )
    if args.format != "onnx" and (args.check or args.opset is not None or args.onnx_exporter != "auto"):
        raise ValueError("--check, --opset and --onnx-exporter apply to --format onnx only")
    if args.format != "onnx" and args.int8:
        raise ValueError("--int8 applies to --format onnx only (the INT8 model is a quantized ONNX file)")
    if args.int8:
        _check_int8_args(args)
    else:
        given = [
            flag
            for flag, value in (("--calibration", args.calibration), ("--float-layers", args.float_layers))
            if value is not None
        ]
        if given:
            raise ValueError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --int8 only")
    if args.format == "onnx":
        ex.require_onnx()  # fail before loading weights
        # The dynamo exporter's helpers log every optimisation pass at INFO level.
        for name in ("onnxscript", "onnx_ir"):
            logging.getLogger(name).setLevel(logging.WARNING)
    model = load_pretrained(args.weights, device=args.device)
    common = dict(height=args.height, width=args.width, preprocess=args.preprocess, output=args.output)
    if args.int8:
        return _export_int8(args, model, common)
    if args.format == "onnx":
        ex.export_onnx(
            model,
            args.out,
            dynamic=args.dynamic,
            opset=args.opset,
            batch_size=args.batch_size or 2,
            exporter=args.onnx_exporter,
            **common,
        )
    elif args.format == "exported-program":
        program = ex.export_program(model, dynamic=args.dynamic, batch_size=args.batch_size or 2, **common)
        ex.save_program(program, args.out)
    else:
        ex.export_torchscript(model, args.out, batch_size=args.batch_size or 1, **common)
    size_mb = args.out.stat().st_size / 2**20
    sys.stdout.write(
        f"wrote {args.out} ({args.format}, {'dynamic' if args.dynamic else 'static'} shape, {size_mb:.1f} MiB)\n"
    )
    if args.check:
        h, w = args.height, args.width
        low = ex.min_input_size(model)
        # The example size, one larger and one smaller, neither divisible by 8.
        sizes = (
            [(h, w), (h + 37, max(low, w - 21)), (max(low, h // 2 + 3), max(low, w // 2 + 5))]
            if args.dynamic
            else [(h, w)]
        )
        error = ex.check_onnx(args.out, model, sizes)
        what = "mismatched pixel fraction" if args.output == "labels" else "max relative error"
        sys.stdout.write(f"ONNX Runtime vs PyTorch at {sizes}: {what} {error:.2e}\n")
        if error > 1e-4:
            logger.error("the exported model differs from PyTorch by more than 1e-4")
            return 1
    return 0


def _check_int8_args(args: argparse.Namespace) -> None:
    from ..inference.quantize import calibration_files, require_quantization

    if args.calibration is None:
        raise ValueError("--int8 needs --calibration DIR, a folder of pictures like those you will segment")
    if args.calibration_count < 1:
        raise ValueError(f"--calibration-count must be at least 1, got {args.calibration_count}")
    if args.check and args.check_count < 1:
        raise ValueError(f"--check-count must be at least 1, got {args.check_count}")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise ValueError(f"--min-agreement must be in [0, 1], got {args.min_agreement}")
    args.float_layers = _float_layers("classifier" if args.float_layers is None else args.float_layers)
    calibration_files(args.calibration)  # a missing or empty folder fails before the weights load
    require_quantization()


def _float_layers(text: str) -> tuple[str, ...]:
    from ..inference.quantize import FLOAT_LAYERS

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in FLOAT_LAYERS]
    if unknown or not names:
        raise ValueError(
            f"--float-layers {text!r}: expected a comma-separated list of {', '.join(FLOAT_LAYERS)}, or none"
        )
    return names


def _export_int8(args: argparse.Namespace, model, common: dict) -> int:
    """--int8: calibrate on a sample of --calibration, hold out other pictures for --check."""
    import random

    from ..inference.quantize import calibration_files, check_int8_onnx, export_onnx_int8

    files = calibration_files(args.calibration)
    order = list(range(len(files)))
    random.Random(0).shuffle(order)
    calibrate = [files[i] for i in sorted(order[: args.calibration_count])]
    held_out = [files[i] for i in sorted(order[args.calibration_count : args.calibration_count + args.check_count])]
    export_onnx_int8(
        model,
        args.out,
        calibrate,
        calibrate_method=args.calibration_method,
        float_layers=args.float_layers,
        dynamic=args.dynamic,
        opset=args.opset,
        batch_size=args.batch_size or 2,
        exporter=args.onnx_exporter,
        **common,
    )
    size_mb = args.out.stat().st_size / 2**20
    sys.stdout.write(
        f"wrote {args.out} (onnx, int8 QDQ calibrated on {len(calibrate)} picture(s) of {args.calibration}, "
        f"in float: {', '.join(args.float_layers) or 'nothing'}, "
        f"{'dynamic' if args.dynamic else 'static'} shape, {size_mb:.1f} MiB)\n"
    )
    if not args.check:
        return 0
    if not held_out:
        logger.warning(
            "all %d pictures of %s were used for calibration; checking on them (not held out). "
            "Add pictures or lower --calibration-count for a held-out check",
            len(files),
            args.calibration,
        )
        held_out = calibrate[: args.check_count]
    stats = check_int8_onnx(args.out, model, held_out)
    sys.stdout.write(
        f"INT8 (ONNX Runtime) vs fp32 PyTorch on {len(held_out)} held-out picture(s): argmax agreement "
        f"{100 * stats['argmax_agreement']:.2f}%, max relative logit error {stats['max_rel_err']:.2e}\n"
    )
    if stats["argmax_agreement"] < args.min_agreement:
        logger.error(
            "argmax agreement %.4f is below --min-agreement %.4f", stats["argmax_agreement"], args.min_agreement
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["export", *sys.argv[1:]]))
