"""``pspnet predict``: segment image files and folders, writing paletted mask PNGs (and overlays).

    pspnet predict photos/ street.jpg --weights pspnet_r50-d8_ade20k --out results/ --overlay

Inputs are read for the model's input channels (``config.in_channels``): pictures for RGB
models, grayscale pictures for 1-channel ones, ``.npy`` arrays ``(H, W, C)`` or multi-page TIFFs
for any channel count (see :mod:`pspnet_lib.core.images`). For each image ``<name>.<ext>`` it writes ``<out>/<name>.png`` (a paletted PNG whose pixel values
are the class indices) and, with ``--overlay``, ``<out>/<name>_overlay.png``. Images found in a
folder keep their sub-folder under ``<out>``. A file that cannot be read is reported and skipped;
the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .predict_tiled import add_tiled_args, run_tiled, wants_tiled

logger = logging.getLogger("pspnet_lib.cli.predict")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images and write mask PNGs (and overlays)",
        description=(
            "Segment image files and folders. Writes <out>/<name>.png, a paletted PNG whose pixel values are "
            "the class indices, and with --overlay <out>/<name>_overlay.png. Unreadable files are reported "
            "and skipped; the exit code is 1 if any failed."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (pictures, multi-page TIFFs, .npy arrays (H, W, C)) and/or folders of them",
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
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cuda if available, else cpu)")
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
    parser.add_argument("--batch-size", type=int, default=1, help="images of equal size per forward pass (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
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


def collect_inputs(inputs: Sequence[str], recursive: bool) -> list[tuple[Path, Path]]:
    """``(image_path, relative_output_stem)`` for every input file, in a stable order.

    Files named explicitly are taken whatever their extension; folders contribute files with an
    image extension (:data:`~pspnet_lib.core.images.IMAGE_EXTENSIONS`).
    """
    from ..core.images import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                logger.warning(
                    "no image files in %s%s", path, "" if recursive else " (use --recursive for sub-folders)"
                )
            found += [(p, p.relative_to(path).with_suffix("")) for p in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return found


def _plan_outputs(files: list[tuple[Path, Path]], out: Path, overlay: bool) -> list[tuple[Path, Path, Path | None]]:
    plan: list[tuple[Path, Path, Path | None]] = []
    claimed: dict[Path, Path] = {}
    for source, stem in files:
        mask = out / stem.with_name(stem.name + ".png")
        over = out / stem.with_name(stem.name + "_overlay.png") if overlay else None
        for target in filter(None, (mask, over)):
            if target in claimed and claimed[target] != source:
                raise ValueError(
                    f"{claimed[target]} and {source} would both be written to {target}; "
                    "rename one or segment them in separate runs with different --out folders"
                )
            claimed[target] = source
        plan.append((source, mask, over))
    return plan


def _fast_dtype(name: str, device: str):
    import torch

    from ..runtime.precision import native_dtype_support

    if name != "auto":
        return getattr(torch, name)
    native, _ = native_dtype_support(torch.bfloat16, device)
    return torch.bfloat16 if native else torch.float32


def _load(weights: str, device: str | None, fast: bool, dtype: str = "auto", calibration: Callable | None = None):
    import torch

    from ..hub.loading import load_pretrained

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_pretrained(weights, device=device)
    if not fast:
        return model
    from ..runtime import optimize_for_inference

    if dtype == "int8":  # calibration(model) -> normalised images, with the weights' own preprocessing
        if calibration is None:
            raise ValueError("--dtype int8 needs calibration pictures (--calibration DIR, or the inputs)")
        return optimize_for_inference(model, dtype="int8", calibration=calibration(model))
    return optimize_for_inference(model, dtype=_fast_dtype(dtype, device))  # keeps config and pretrained_cfg


def _int8_calibration(args: argparse.Namespace, inputs: list[Path], size: Any) -> Callable:
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
    if wants_tiled(args):  # rasters and large pictures, window by window (cli/predict_tiled.py)
        return run_tiled(args, load=_load)

    from .._files import atomic_output, check_outputs_spare_inputs, ensure_dir, local_files, sibling_folder
    from .._progress import progress_bar
    from ..core.images import to_image_tensor
    from ..core.pretrained_cfg import PretrainedCfg
    from ..inference.predict import predict, resolve_protocol

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.size is not None and args.no_resize:
        raise ValueError("--size and --no-resize contradict each other; pass one of them")
    size = False if args.no_resize else _pair(_flat(args.size), "size")
    options = dict(
        mode=args.mode, resize=size, crop=_pair(_flat(args.crop), "crop"), stride=_pair(_flat(args.stride), "stride")
    )
    scales = _flat(args.scales) or [1.0]  # the flag has a default; never None

    files = collect_inputs(args.inputs, args.recursive)
    if not files:
        raise ValueError("no image files to segment among the inputs")
    plan = _plan_outputs(files, args.out, args.overlay)
    # Never replace a picture being segmented (or the weights), --overwrite or not: e.g. a.png in
    # DIR would get its mask DIR/a.png with --out DIR.
    check_outputs_spare_inputs(
        (p for _, mask, over in plan for p in (mask, over) if p is not None),
        [source for source, _ in files] + local_files(args.weights),
        input_roots=[args.calibration],
        advice=f"choose another --out folder, e.g. --out {sibling_folder(args.out, 'masks')}",
    )
    # Even where no file would be replaced (a.jpg -> a.png), masks written among the pictures would
    # be read as pictures by the next run on that folder: an input folder is never the output folder.
    out_dir = Path(os.path.realpath(args.out))
    for given in args.inputs:
        if Path(given).is_dir() and Path(os.path.realpath(given)) == out_dir:
            raise ValueError(
                f"refusing --out {args.out}: it is the input folder {given}, and the masks would mix with the "
                f"pictures; choose another --out folder, e.g. --out {sibling_folder(args.out, 'masks')}"
            )
    if not args.overwrite:
        existing = [str(p) for _, mask, over in plan for p in (mask, over) if p is not None and p.exists()]
        if existing:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise FileExistsError(
                f"{len(existing)} output file(s) already exist ({shown}); pass --overwrite to replace them "
                "or choose another --out folder"
            )

    calibration = None
    if args.calibration is not None and args.dtype != "int8":
        raise ValueError("--calibration applies to --dtype int8 only")
    if args.dtype == "int8":
        calibration = _int8_calibration(args, [source for source, _ in files], size)
    ensure_dir(args.out)  # a file in the way fails here, not once per image
    model = _load(args.weights, args.device, args.fast, args.dtype, calibration)
    try:  # a bad protocol fails here, before any file is read
        resolve_protocol(model, scales=scales, flip=args.flip, **options)
    except ValueError as exc:  # name the flags: the stored protocol was valid, the flags changed it
        raise ValueError(f"{exc} (set by --mode/--size/--crop/--stride/--scales/--flip)") from None
    channels = PretrainedCfg.of(model, what=f"--weights {args.weights}").in_channels  # mean/std fit the channels

    failed: list[tuple[Path, str]] = []
    done = 0
    with progress_bar(total=len(plan), unit="image", desc="pspnet predict") as progress:
        for start in range(0, len(plan), args.batch_size):
            loaded = []
            for source, mask_path, overlay_path in plan[start : start + args.batch_size]:
                try:
                    loaded.append((to_image_tensor(source, channels), source, mask_path, overlay_path))
                except (OSError, ValueError) as exc:
                    failed.append((source, str(exc)))
                    logger.error("skipping %s: %s", source, exc)
                    progress.update(1)
            if not loaded:
                continue
            results = predict(model, [item[0] for item in loaded], scales=scales, flip=args.flip, **options)
            assert isinstance(results, list)  # a list of pictures gives a list
            for result, (_, source, mask_path, overlay_path) in zip(results, loaded):
                try:
                    with atomic_output(mask_path) as tmp:
                        result.colorize().save(tmp, format="PNG")
                    if overlay_path is not None:
                        with atomic_output(overlay_path) as tmp:
                            result.overlay(alpha=args.alpha).save(tmp, format="PNG")
                    done += 1
                except OSError as exc:
                    failed.append((source, f"cannot write output: {exc}"))
                    logger.error("failed to write the outputs of %s: %s", source, exc)
                progress.update(1)

    summary = f"segmented {done} of {len(plan)} image(s) into {args.out}"
    if failed:
        summary += f"; {len(failed)} failed: " + ", ".join(str(p) for p, _ in failed[:5])
        summary += f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    sys.stdout.write(summary + "\n")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["predict", *sys.argv[1:]]))
