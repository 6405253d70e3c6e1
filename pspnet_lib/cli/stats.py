"""``pspnet stats``: per-band mean/std, min/max and nodata fraction of a folder, for ``pspnet train --band-spec``.

    pspnet stats data/s2 --in-channels 13 --scale 0.0001 --nodata 0 --out s2_bands.json
    pspnet train --dataset folder --data-root data/s2 --in-channels 13 --band-spec s2_bands.json ...

The command parses flags and calls :func:`pspnet_lib.data.stats.compute_stats`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .common import floats


def _number_or_nan(text: str) -> float | str:
    if text.strip().lower() == "nan":
        return "nan"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or nan, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats",
        help="per-band mean/std (after scaling), min/max and nodata fraction of a folder of images",
        description="Read every image of a folder once (DATA/images/ for a folder dataset) and print, per band, "
        "the mean and standard deviation in the band spec's units (stored * scale + offset; 8-bit pictures "
        "without a spec: 0..1), the smallest and largest stored value and the fraction of nodata values. "
        "--out writes them as band settings for pspnet train --band-spec.",
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="a folder (or folder dataset root) or image files")
    p.add_argument("--in-channels", type=int, default=None, metavar="N", help="bands per image (default 3)")
    p.add_argument("--dtype", metavar="TYPE", help="the stored type the spec names (default: the first file's)")
    p.add_argument("--scale", type=floats, metavar="S|S1,S2,..", help="stored * scale + offset (one or per band)")
    p.add_argument("--offset", type=floats, metavar="O|O1,O2,..", help="see --scale (default 0)")
    p.add_argument("--range", type=floats, metavar="LOW,HIGH", help="instead of --scale/--offset: LOW..HIGH -> 0..1")
    p.add_argument("--nodata", type=_number_or_nan, metavar="V", help="the stored value of missing data (or nan)")
    p.add_argument("--out", metavar="FILE", help="write the band settings (JSON) for pspnet train --band-spec FILE")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    """The band spec's entries given as flags (the type comes from the data when --dtype is not given)."""
    spec: dict[str, Any] = {}
    if args.dtype:
        spec["dtype"] = args.dtype
    for name in ("scale", "offset"):
        values = getattr(args, name)
        if values is not None:
            spec[name] = values[0] if len(values) == 1 else values
    if args.range is not None:
        if len(args.range) != 2:
            raise ValueError(f"--range takes LOW,HIGH, got {','.join(map(str, args.range))}")
        spec["range"] = args.range
    if args.nodata is not None:
        spec["nodata"] = args.nodata
    return spec


def run(args: argparse.Namespace) -> int:
    from .._files import atomic_output, check_outputs_spare_inputs
    from ..data.stats import compute_stats, image_files

    files = [f for item in args.data for f in (image_files(item) if _is_dir(item) else [item])]
    if args.out:
        check_outputs_spare_inputs([args.out], files, advice="choose another --out file")
    try:
        stats = compute_stats(files, band_spec=_spec(args), in_channels=args.in_channels, progress=args.progress)
    except ValueError as exc:
        if "pretrained_cfg bands." in str(exc):  # a spec entry given as a flag: name the flag
            raise ValueError(f"{exc} (set by --dtype/--scale/--offset/--range/--nodata)") from None
        raise
    spec = stats.band_spec
    units = "0..1 (8-bit pictures)" if spec is None else f"stored {spec.dtype} * scale + offset"
    sys.stdout.write(f"{stats.images} image(s), {len(stats.mean)} band(s); mean/std in {units}\n")
    names = spec.names if spec is not None and spec.names else None
    sys.stdout.write(f"{'band':>6}  {'mean':>10}  {'std':>10}  {'min':>10}  {'max':>10}  {'nodata':>7}\n")
    for c in range(len(stats.mean)):
        label = names[c] if names else str(c)
        sys.stdout.write(
            f"{label:>6}  {_num(stats.mean[c])}  {_num(stats.std[c])}  {_num(stats.min[c])}  {_num(stats.max[c])}  "
            f"{100 * stats.nodata_fraction[c]:6.2f}%\n"
        )
    if args.out:
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(stats.band_settings(), indent=2) + "\n")
        sys.stdout.write(f"band settings written to {args.out} (pspnet train --band-spec {args.out})\n")
    return 0


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path)


def _num(value: float) -> str:
    return f"{'-':>10}" if math.isnan(value) else f"{value:10.6g}"
