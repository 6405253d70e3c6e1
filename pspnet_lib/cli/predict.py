"""``pspnet predict``: segment image files, folders, globs and path lists, writing mask PNGs and a manifest.

    pspnet predict photos/ street.jpg --weights pspnet_r50-d8_ade20k --out results/ --overlay
    pspnet predict 'archive/**/*.jpg' --weights W --out masks/ --skip-existing --num-workers 4 --batch-size 8
    torchrun --nproc_per_node 4 -m pspnet_lib predict --files-from all.txt --weights W --out masks/ --skip-existing

Parses the flags and prints; the work is :func:`pspnet_lib.inference.batch.plan_predictions` and
:meth:`~pspnet_lib.inference.batch.PredictionPlan.run` (docs/inference.md, docs/scale.md).
Inputs are read for the model's input channels (``config.in_channels``): pictures, ``.npy``
arrays and multi-page TIFFs, or stored values in their own units (uint16/int16/float ``.npy`` and
TIFFs, multi-band GeoTIFFs with rasterio) when the weights carry a band spec (see
:mod:`pspnet_lib.core.images` and :mod:`pspnet_lib.core.bands`). For each input it writes ``<out>/<relative path>.png`` (a paletted
PNG whose pixel values are the class indices), with ``--overlay`` ``..._overlay.png``, with
``--confidence KIND`` ``..._KIND.png``, and ``<out>/manifest.jsonl``. A file that cannot be
read is recorded and skipped; the exit code is 1 if any file failed. Rasters that need tiling
(georeferenced, or large) are inputs of the same run, segmented window by window
(cli/predict_tiled.py, docs/rasters.md); ``--out X.tif`` segments one input into that file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..inference.confidence import CONFIDENCE_KINDS
from .common import device_name
from .predict_tiled import add_tiled_args, names_one_file, run_tiled, tiled_flags, wants_tiled


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images and write mask PNGs (and overlays, confidence maps) with a manifest",
        description=(
            "Segment image files, folders, glob patterns and lists of paths. Writes <out>/<path>.png, a paletted "
            "PNG whose pixel values are the class indices (the path relative to the input folder is kept), "
            "optional overlays and confidence pictures, and <out>/manifest.jsonl (one record per input: "
            "done / skipped / failed with the reason). A failing input is recorded and the run goes on; the "
            "exit code is 1 if any failed. Resumable (--skip-existing) and sharded (--shard I/N, torchrun)."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files (pictures, multi-page TIFFs, .npy arrays (H, W, C)), folders of them, or quoted glob "
        "patterns ('photos/**/*.jpg')",
    )
    parser.add_argument(
        "--files-from",
        type=Path,
        metavar="FILE",
        help="also segment the files listed in FILE, one path a line (relative to the current folder)",
    )
    parser.add_argument(
        "--weights", required=True, help="zoo name, hf-hub:org/repo, a save_pretrained folder or a checkpoint file"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument(
        "--overlay", action="store_true", help="also write <name>_overlay.png (mask blended over the photo)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in overlays (default 0.5)")
    parser.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders of folder inputs")
    parser.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: the weights' protocol)")
    parser.add_argument(
        "--size",
        type=_numbers(int),
        nargs="+",
        metavar="N",
        help="resize before inference: one value = short side, two = (long side, short side) limits "
        "(default: the weights' protocol)",
    )
    parser.add_argument("--no-resize", action="store_true", help="run at each image's own size")
    parser.add_argument(
        "--crop",
        type=_numbers(int),
        nargs="+",
        metavar="N",
        help="sliding-window size (h [w], or h,w) for --mode slide",
    )
    parser.add_argument(
        "--stride",
        type=_numbers(int),
        nargs="+",
        metavar="N",
        help="sliding-window step (h [w], or h,w) for --mode slide",
    )
    parser.add_argument(
        "--scales",
        type=_numbers(float),
        nargs="+",
        default=[[1.0]],
        metavar="S",
        help="multi-scale factors, e.g. 0.75 1.0 1.25 (or 0.75,1.0,1.25)",
    )
    parser.add_argument("--flip", action="store_true", help="also predict on mirrored images and average")
    parser.add_argument(
        "--device", type=device_name, help="cpu, cuda, cuda:1, mps ... (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--fast", action="store_true", help="use pspnet_lib.optimize_for_inference (faster, same classes)"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16", "int8"),
        default="auto",
        help="precision of --fast: auto = bfloat16 where the device computes it natively (AVX-512-BF16/AMX CPUs, "
        "Ampere+ GPUs), else float32 (exact); int8 = a calibrated INT8 model in OpenVINO or ONNX Runtime "
        "(pspnet-lib[onnx,openvino]) or the bfloat16 fast path, whichever runs fastest here (timed on a calibration "
        "picture, ~3 s; bfloat16 with a warning where no int8 runtime is installed), calibrated on a sample of the "
        "inputs or --calibration",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="--dtype int8: calibrate on pictures of DIR instead of a sample of the inputs",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=16,
        metavar="N",
        help="--dtype int8: calibrate on N pictures (default 16)",
    )
    parser.add_argument(
        "--confidence",
        nargs="?",
        const="maxprob",
        choices=CONFIDENCE_KINDS,
        metavar="KIND",
        help="also write <name>_KIND.png, an 8-bit confidence picture (KIND: maxprob, the default, or margin: "
        "255 = certain; entropy: 255 = uniform), and its per-image mean into the manifest; tiled inputs write "
        "<name>_confidence.tif (maxprob)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="pictures per forward pass, among those the protocol resizes to one size (default 1)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=2,
        metavar="N",
        help="processes that decode pictures while the model runs (default 2; 0: decode in the main process)",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--overwrite", action="store_true", help="replace existing output files")
    resume.add_argument(
        "--skip-existing",
        action="store_true",
        help="resume: keep the inputs whose outputs all exist (a killed run continues where it stopped)",
    )
    parser.add_argument(
        "--fail-fast", action="store_true", help="stop at the first input that fails (default: record it, go on)"
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="segment shard I of N (0-based) of the inputs, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; "
        "under torchrun every rank also takes its share",
    )
    add_tiled_args(parser)  # rasters and large pictures: cli/predict_tiled.py
    parser.set_defaults(func=run)


def _numbers(kind: type) -> Callable[[str], list]:
    """An argparse type for one command-line word holding one number or several separated by commas.

    ``pspnet eval``/``train`` write sizes and scales with commas (``--scales 0.5,1.0``), so
    ``predict`` accepts that form as well as separate words (``--scales 0.5 1.0``).
    """

    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} value(s), got {text!r}") from None

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _flat(groups: Sequence[Sequence[Any]] | None) -> list | None:
    return None if groups is None else [value for group in groups for value in group]


def _pair(values: Sequence[int] | None, name: str) -> int | tuple[int, int] | None:
    if values is None:
        return None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    raise ValueError(f"--{name} takes one or two integers, got {len(values)}")


def _fast_dtype(name: str, device: str):
    import torch

    from ..runtime.precision import native_dtype_support

    if name != "auto":
        return getattr(torch, name)
    native, _ = native_dtype_support(torch.bfloat16, device)
    return torch.bfloat16 if native else torch.float32


def _load(weights: str, device: str | None, fast: bool, dtype: str = "auto", calibration: Callable | None = None):
    from ..hub.loading import load_pretrained
    from ..inference.batch import default_device

    device = default_device(device)  # cuda:LOCAL_RANK under torchrun
    model = load_pretrained(weights, device=device)
    if not fast:
        return model
    from ..runtime import optimize_for_inference

    if dtype == "int8":  # calibration(model) -> normalised images, with the weights' own preprocessing
        if calibration is None:
            raise ValueError("--dtype int8 needs calibration pictures (--calibration DIR, or the inputs)")
        return optimize_for_inference(model, dtype="int8", calibration=calibration(model))
    return optimize_for_inference(model, dtype=_fast_dtype(dtype, device))  # keeps config and pretrained_cfg


def _int8_calibration(args: argparse.Namespace, inputs: Sequence[str | Path], size: Any) -> Callable:
    """Check the --dtype int8 options now; return ``model -> calibration images`` (read once the weights are loaded)."""
    from ..inference.quantize import calibration_files, calibration_images

    if not args.fast:
        raise ValueError("--dtype int8 applies to --fast only (add --fast)")
    if args.calibration_count < 1:
        raise ValueError(f"--calibration-count must be at least 1, got {args.calibration_count}")
    pictures = calibration_files(args.calibration) if args.calibration is not None else inputs
    # The same resize as inference (--size/--no-resize or the weights' protocol), so the calibrated
    # ranges are those of the activations the model will see.
    return lambda model: calibration_images(pictures, model, count=args.calibration_count, resize=size)


def run(args: argparse.Namespace) -> int:
    if wants_tiled(args) and names_one_file(args):  # one input into one named file (cli/predict_tiled.py)
        return run_tiled(args, load=_load)

    from .._files import local_files
    from ..inference.batch import plan_predictions
    from ..inference.predict import resolve_protocol

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.size is not None and args.no_resize:
        raise ValueError("--size and --no-resize contradict each other; pass one of them")
    if not args.inputs and args.files_from is None:
        raise ValueError("nothing to segment: name image files, folders or glob patterns, or --files-from FILE")
    if args.calibration is not None and args.dtype != "int8":
        raise ValueError("--calibration applies to --dtype int8 only")
    size = False if args.no_resize else _pair(_flat(args.size), "size")
    options = dict(
        mode=args.mode, resize=size, crop=_pair(_flat(args.crop), "crop"), stride=_pair(_flat(args.stride), "stride")
    )
    scales = _flat(args.scales) or [1.0]  # the flag has a default; never None

    plan = plan_predictions(
        args.inputs,
        args.out,
        recursive=args.recursive,
        files_from=args.files_from,
        overlay=args.overlay,
        alpha=args.alpha,
        confidence=args.confidence,
        skip_existing=args.skip_existing,
        overwrite=args.overwrite,
        shard=args.shard,
        **tiled_flags(args),
        protect=local_files(args.weights),
    )
    model = None
    if plan.jobs:  # a finished shard does not load the weights again
        calibration = _int8_calibration(args, plan.sources, size) if args.dtype == "int8" else None
        model = _load(args.weights, args.device, args.fast, args.dtype, calibration)
        try:  # a bad protocol fails here, before any file is read
            resolve_protocol(model, scales=scales, flip=args.flip, **options)
        except ValueError as exc:  # name the flags: the stored protocol was valid, the flags changed it
            raise ValueError(f"{exc} (set by --mode/--size/--crop/--stride/--scales/--flip)") from None
    summary = plan.run(
        model,
        **options,
        scales=scales,
        flip=args.flip,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        fail_fast=args.fail_fast,
    )
    sys.stdout.write(summary.line() + "\n")
    return 0 if summary.ok else 1


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["predict", *sys.argv[1:]]))
