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


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..core.inference_protocol import MAX_SIDE
    from ..inference.export_formats import EXPORT_FORMATS
    from .common import device_name, flag_names, float_in, int_in

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
    parser.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS), help="output format")
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
    parser.add_argument("--device", type=device_name, default="cpu", help="device to trace on (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run, flags=flag_names(parser))


def run(args: argparse.Namespace) -> int:
    from ..inference.export_formats import export_model

    names = {f: getattr(args, f) for f in _ARGUMENTS}
    result = export_model(args.weights, args.out, **names)
    size_mb = result.size_bytes / 2**20
    shape = "dynamic" if result.dynamic else "static"
    if result.int8 is None:
        sys.stdout.write(f"wrote {result.path} ({result.format}, {shape} shape, {size_mb:.1f} MiB)\n")
    else:
        layers = ", ".join(result.int8["float_layers"]) or "nothing"
        sys.stdout.write(
            f"wrote {result.path} (onnx, int8 QDQ calibrated on {result.int8['calibration']} picture(s) of "
            f"{args.calibration}, in float: {layers}, {shape} shape, {size_mb:.1f} MiB)\n"
        )
    if result.check_error is not None:
        what = "mismatched pixel fraction" if args.output == "labels" else "max relative error"
        sys.stdout.write(f"ONNX Runtime vs PyTorch at {result.check_sizes}: {what} {result.check_error:.2e}\n")
        if not result.ok:
            logger.error("the exported model differs from PyTorch by more than 1e-4")
    if result.int8 is not None and "stats" in result.int8:
        stats = result.int8["stats"]
        sys.stdout.write(
            f"INT8 (ONNX Runtime) vs fp32 PyTorch on {result.int8['checked_on']} held-out picture(s): argmax "
            f"agreement {100 * stats['argmax_agreement']:.2f}%, max relative logit error {stats['max_rel_err']:.2e}\n"
        )
        if not result.ok:
            logger.error(
                "argmax agreement %.4f is below --min-agreement %.4f", stats["argmax_agreement"], args.min_agreement
            )
    return 0 if result.ok else 1


#: The flags passed to export_model as they are (their dests are its argument names).
_ARGUMENTS = (
    "format",
    "dynamic",
    "height",
    "width",
    "batch_size",
    "preprocess",
    "output",
    "opset",
    "onnx_exporter",
    "check",
    "int8",
    "calibration",
    "calibration_count",
    "calibration_method",
    "float_layers",
    "check_count",
    "min_agreement",
    "device",
    "overwrite",
)


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["export", *sys.argv[1:]]))
