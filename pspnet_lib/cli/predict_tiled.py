"""``pspnet predict`` for rasters and large pictures: the tiled path (flags and dispatch).

    pspnet predict scene.tif --weights pspnet_r50-d8_potsdam-512x512-80k --out scene_labels.tif
    pspnet predict scenes/ --tiled --weights ... --out labels/ --confidence --polygons

An input takes this path when ``--tiled`` is given, when ``--out`` names a ``.tif`` file, when a
raster-only flag is given (``--bands``, ``--nodata``, ``--probs``, ``--confidence``,
``--polygons``, ``--blend``, ``--max-image-pixels``), or when every input named is a georeferenced
raster or a picture over 8,192 x 8,192 pixels (:func:`~pspnet_lib.inference.rasters.needs_tiling`).
Each input is segmented by :func:`~pspnet_lib.inference.rasters.predict_raster`; this module only
parses, plans the output names and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("pspnet_lib.cli.predict")

#: Flags that only the tiled path reads (their presence selects it).
TILED_FLAGS = ("bands", "nodata", "probs", "confidence", "polygons", "blend", "max_image_pixels")
#: Flags of the in-memory path that tiled inference does not apply (given -> a one-line error).
_NOT_TILED = {
    "overlay": "--overlay",
    "size": "--size",
    "no_resize": "--no-resize",
    "flip": "--flip",
}


def add_tiled_args(parser: argparse.ArgumentParser) -> None:
    """The flags of the tiled path (a group of ``pspnet predict``'s parser)."""
    group = parser.add_argument_group(
        "rasters and large pictures (tiled inference, bounded memory; docs/rasters.md)",
    )
    group.add_argument(
        "--tiled",
        action="store_true",
        help="segment every input window by window, writing as it goes (automatic for --out X.tif, for georeferenced "
        "rasters and pictures over 8192x8192)",
    )
    group.add_argument(
        "--blend",
        choices=("mean", "hann"),
        help="how overlapping windows combine: mean (the slide result, default) or hann (smooth, hides seams)",
    )
    group.add_argument("--bands", metavar="B,B,...", help="1-based raster bands to read, e.g. 3,2,1 (default: all)")
    group.add_argument("--nodata", type=float, metavar="V", help="input value meaning no data (default: the raster's)")
    group.add_argument("--probs", action="store_true", help="also write <name>_probs.tif (uint8 per class)")
    group.add_argument("--confidence", action="store_true", help="also write <name>_confidence.tif (max probability)")
    group.add_argument("--polygons", action="store_true", help="also write <name>_polygons.geojson (the mask's areas)")
    group.add_argument(
        "--max-image-pixels",
        type=int,
        metavar="N",
        help="raise Pillow's decompression-bomb limit (89.5M pixels) for PNG/JPEG inputs you trust",
    )


def wants_tiled(args: argparse.Namespace) -> bool:
    """Whether this ``pspnet predict`` call takes the tiled path (see the module's docstring)."""
    from ..inference.rasters import RASTER_SUFFIXES, needs_tiling

    if args.tiled or Path(args.out).suffix.lower() in RASTER_SUFFIXES:
        return True
    if any(getattr(args, name) not in (None, False) for name in TILED_FLAGS):
        return True
    named = [Path(p) for p in args.inputs]
    return all(p.is_file() and needs_tiling(p) for p in named)


def _size(groups: list[list[int]] | None) -> int | tuple[int, ...] | None:
    """``--crop``/``--stride`` words as predict_raster takes them (checked there: one or two integers)."""
    values = [v for group in groups or [] for v in group]
    return None if not values else values[0] if len(values) == 1 else tuple(values)


def _plan(files: list[tuple[Path, Path]], out: Path) -> list[tuple[Path, Path]]:
    from ..inference.rasters import PICTURE_SUFFIXES, RASTER_SUFFIXES

    if out.suffix.lower() in (*RASTER_SUFFIXES, ".png"):
        if len(files) != 1:
            raise ValueError(
                f"--out {out} names one file but there are {len(files)} inputs; give an output folder instead"
            )
        return [(files[0][0], out)]
    plan: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source, stem in files:
        suffix = ".png" if source.suffix.lower() in PICTURE_SUFFIXES else ".tif"
        target = out / stem.with_name(stem.name + suffix)
        if target in claimed:
            raise ValueError(f"{claimed[target]} and {source} would both be written to {target}; rename one")
        claimed[target] = source
        plan.append((source, target))
    return plan


def run_tiled(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    """Segment every input with :func:`~pspnet_lib.inference.rasters.predict_raster`; 1 if any failed.

    ``load(weights, device, fast, dtype, calibration)`` builds the model as ``pspnet predict`` does.
    """
    from .._files import check_outputs_spare_inputs, local_files
    from ..inference.rasters import predict_raster, raster_outputs
    from .predict import collect_inputs

    given = [flag for name, flag in _NOT_TILED.items() if getattr(args, name, None)]
    if args.mode == "whole" or args.scales not in (None, [[1.0]]):
        given.append("--mode whole" if args.mode == "whole" else "--scales")
    if given:
        raise ValueError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to tiled inference (rasters, large "
            "pictures): remove it; windows are set by --crop/--stride"
        )
    if args.dtype == "int8":
        raise ValueError(
            "--dtype int8 calibrates on whole pictures; for rasters use --fast with --dtype bfloat16/float32"
        )
    try:
        bands = [int(b) for b in args.bands.split(",") if b.strip()] if args.bands else None
    except ValueError:
        raise ValueError(f"--bands takes band numbers separated by commas, e.g. 1,2,3; got {args.bands!r}") from None
    files = collect_inputs(args.inputs, args.recursive)
    if not files:
        raise ValueError("no image files to segment among the inputs")
    plan = _plan(files, Path(args.out))
    outputs = {
        source: raster_outputs(target, probs=args.probs, confidence=args.confidence, polygons=args.polygons)
        for source, target in plan
    }
    check_outputs_spare_inputs(
        [p for paths in outputs.values() for p in paths.values()],
        [source for source, _ in plan] + local_files(args.weights),
        advice="choose another --out",
    )
    if not args.overwrite:
        existing = [str(p) for paths in outputs.values() for p in paths.values() if p.exists()]
        if existing:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise FileExistsError(f"output file(s) already exist ({shown}); pass --overwrite to replace them")
    try:
        model = load(args.weights, args.device, args.fast, args.dtype, None)
        failed: list[tuple[Path, str]] = []
        for source, target in plan:
            try:
                result = predict_raster(
                    model,
                    source,
                    target,
                    bands=bands,
                    nodata=args.nodata,
                    crop=_size(args.crop),
                    stride=_size(args.stride),
                    blend=args.blend or "mean",
                    batch_size=args.batch_size,
                    probs=args.probs,
                    confidence=args.confidence,
                    polygons=args.polygons,
                    overwrite=args.overwrite,
                    max_image_pixels=args.max_image_pixels,
                )
                logger.info(
                    "%s: %dx%d px, %d windows in %.1f s -> %s",
                    source,
                    result.width,
                    result.height,
                    result.windows,
                    result.seconds,
                    ", ".join(str(p) for p in result.outputs.values()),
                )
            except (OSError, ValueError) as exc:
                if len(plan) == 1:
                    raise
                failed.append((source, str(exc)))
                logger.error("skipping %s: %s", source, exc)
    except ImportError as exc:
        raise RuntimeError(str(exc)) from None
    summary = f"segmented {len(plan) - len(failed)} of {len(plan)} input(s) by tiles into {args.out}"
    if failed:
        summary += f"; {len(failed)} failed: " + ", ".join(str(p) for p, _ in failed[:5])
    sys.stdout.write(summary + "\n")
    return 1 if failed else 0
