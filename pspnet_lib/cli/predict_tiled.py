"""``pspnet predict`` for rasters and large pictures: the tiled path (flags and dispatch).

    pspnet predict scene.tif --weights pspnet_r50-d8_potsdam-512x512-80k --out scene_labels.tif
    pspnet predict scenes/ --tiled --weights ... --out labels/ --confidence --polygons

Every input takes this path when ``--tiled`` is given, when ``--out`` names a ``.tif`` file, when
a raster-only flag is given (``--bands``, ``--nodata``, ``--probs``, ``--polygons``, ``--blend``,
``--max-image-pixels``), or when every input named is a georeferenced raster or a picture over
8,192 x 8,192 pixels (:func:`~pspnet_lib.inference.rasters.needs_tiling`). Otherwise rasters found
in folders (georeferenced, or over 8,192 x 8,192) take it, pictures the in-memory path.

With ``--out`` naming one file (``.tif``, ``.png``), the one input is segmented by
:func:`~pspnet_lib.inference.rasters.predict_raster`; with an output folder, every input goes
through :func:`~pspnet_lib.inference.batch.plan_predictions` (one manifest, ``--skip-existing``),
given the options :func:`tiled_flags` reads. This module only parses and prints.
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
TILED_FLAGS = ("bands", "nodata", "probs", "polygons", "blend", "max_image_pixels")
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
    return bool(named) and all(p.is_file() and needs_tiling(p) for p in named)


def names_one_file(args: argparse.Namespace) -> bool:
    """Whether ``--out`` names one output file (``.tif``, ``.tiff``, ``.png``) rather than a folder."""
    from ..inference.rasters import RASTER_SUFFIXES

    return Path(args.out).suffix.lower() in (*RASTER_SUFFIXES, ".png")


def _refused(args: argparse.Namespace) -> list[str]:
    """The flags given that tiled inference does not apply."""
    given = [flag for name, flag in _NOT_TILED.items() if getattr(args, name, None)]
    if args.mode == "whole" or args.scales not in (None, [[1.0]]):
        given.append("--mode whole" if args.mode == "whole" else "--scales")
    if args.dtype == "int8":
        given.append("--dtype int8 (it calibrates on whole pictures; use --fast with --dtype bfloat16/float32)")
    return given


def _bands(args: argparse.Namespace) -> list[int] | None:
    try:
        return [int(b) for b in args.bands.split(",") if b.strip()] if args.bands else None
    except ValueError:
        raise ValueError(f"--bands takes band numbers separated by commas, e.g. 1,2,3; got {args.bands!r}") from None


def tiled_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The tiled-path arguments of :func:`~pspnet_lib.inference.batch.plan_predictions` for these flags."""
    return dict(
        tiled=True if wants_tiled(args) else None,
        refuse_tiled=[flag.split(" (")[0] for flag in _refused(args)],
        tiled_options=_raster_options(args),
    )


def _raster_options(args: argparse.Namespace) -> dict[str, Any]:
    """``predict_raster``'s options from the flags (all but ``confidence`` and ``overwrite``)."""
    return dict(
        bands=_bands(args),
        nodata=args.nodata,
        crop=_size(args.crop),
        stride=_size(args.stride),
        blend=args.blend or "mean",
        batch_size=args.batch_size,
        probs=args.probs,
        polygons=args.polygons,
        max_image_pixels=args.max_image_pixels,
    )


def _size(groups: list[list[int]] | None) -> int | tuple[int, ...] | None:
    """``--crop``/``--stride`` words as predict_raster takes them (checked there: one or two integers)."""
    values = [v for group in groups or [] for v in group]
    return None if not values else values[0] if len(values) == 1 else tuple(values)


def run_tiled(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    """Segment the one input into the file ``--out`` names with :func:`~pspnet_lib.inference.rasters.predict_raster`.

    ``load(weights, device, fast, dtype, calibration)`` builds the model as ``pspnet predict`` does.
    """
    from .._files import check_outputs_spare_inputs, local_files
    from ..inference.inputs import list_inputs
    from ..inference.rasters import predict_raster, raster_outputs

    given = _refused(args)
    if given:
        raise ValueError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to tiled inference (rasters, large "
            "pictures): remove it; windows are set by --crop/--stride"
        )
    if args.confidence not in (None, "maxprob"):
        raise ValueError(f"--confidence {args.confidence} does not apply to tiled inference: it writes maxprob")
    files = list_inputs(args.inputs, recursive=args.recursive, files_from=args.files_from)
    if not files:
        raise ValueError("no image files to segment among the inputs")
    out = Path(args.out)
    if len(files) != 1:
        raise ValueError(f"--out {out} names one file but there are {len(files)} inputs; give an output folder instead")
    source = Path(files[0].path)
    check_outputs_spare_inputs(  # predict_raster checks the input and existing outputs; the weights too
        raster_outputs(out, probs=args.probs, confidence=bool(args.confidence), polygons=args.polygons).values(),
        [source, *local_files(args.weights)],
        advice="choose another --out",
    )
    try:
        model = load(args.weights, args.device, args.fast, args.dtype, None)
        result = predict_raster(
            model,
            source,
            out,
            confidence=bool(args.confidence),
            overwrite=args.overwrite,
            **_raster_options(args),
        )
    except ImportError as exc:
        raise RuntimeError(str(exc)) from None
    logger.info(
        "%s: %dx%d px, %d windows in %.1f s -> %s",
        source,
        result.width,
        result.height,
        result.windows,
        result.seconds,
        ", ".join(str(p) for p in result.outputs.values()),
    )
    sys.stdout.write(f"segmented 1 of 1 input(s) by tiles into {args.out}\n")
    return 0
