"""First-call latency of the fast path in a fresh process: calibration, and what the tuning cache saves.

    python benchmarks/first_call.py                          # R50-D8, 512x512, bfloat16
    python benchmarks/first_call.py --model resnet18 --size 473 --dtype float32

``optimize_for_inference`` with ``space_to_batch="auto"`` / ``winograd="auto"`` times alternatives on
the first input of each shape. A user running ``pspnet predict --fast`` on one picture pays that
on every run unless the decisions are remembered: they are, in the tuning cache file
(:mod:`pspnet_lib.runtime.tuning`). Each variant below runs in its own fresh Python process (as a
CLI call would), builds the model, optimises it and times its first three calls:

* ``auto, empty cache``: defaults, with an empty tuning file (what the first run on a machine pays);
* ``auto, cache filled``: defaults again, reading the file the previous variant wrote;
* ``auto, cache off``: ``tuning_cache=False`` (every process calibrates: the behaviour before the
  cache existed);
* ``explicit choices``: ``space_to_batch=True, winograd=True`` (nothing to calibrate);
* ``direct``: ``space_to_batch=False, winograd=False``.

The "later" column is the median of calls 2-3, i.e. the steady state, to compare the first call with.
Rounds repeat the whole sequence (``--rounds``) and the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)

VARIANTS = {
    "auto, empty cache": {"tuning": "file"},
    "auto, cache filled": {"tuning": "file"},
    "auto, cache off": {"tuning": "off"},
    "explicit choices": {"tuning": "off", "space_to_batch": True, "winograd": True},
    "direct": {"tuning": "off", "space_to_batch": False, "winograd": False},
}


def child(args: argparse.Namespace) -> int:
    """Run in a fresh process: build, optimise, time three calls, print JSON."""
    import torch

    from pspnet_lib import build_pspnet, optimize_for_inference
    from pspnet_lib._testing import randomize_batchnorm_, smooth_image

    torch.set_num_threads(args.threads)
    spec = json.loads(args.child)
    model = build_pspnet(args.model, num_classes=21).eval()
    randomize_batchnorm_(model, seed=0)
    x = smooth_image(1, args.size, args.size, seed=0)
    kw = {k: spec[k] for k in ("space_to_batch", "winograd") if k in spec}
    cache = args.cache_file if spec["tuning"] == "file" else False
    t0 = time.perf_counter()
    fast = optimize_for_inference(model, getattr(torch, args.dtype), tuning_cache=cache, **kw)
    t_build = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fast(x)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"build_s": t_build, "calls_s": times}))
    return 0


def run_variant(args: argparse.Namespace, name: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--size",
        str(args.size),
        "--dtype",
        args.dtype,
        "--threads",
        str(args.threads),
        "--cache-file",
        str(args.cache_file),
        "--child",
        json.dumps(VARIANTS[name]),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/first_call.json"))
    parser.add_argument("--cache-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    import torch

    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            args.cache_file = Path(tmp) / f"tuning-{r}.json"  # empty at the start of every round
            for name in VARIANTS:
                results[name].append(run_variant(args, name))
                print(
                    f"round {r + 1}/{args.rounds}: {name}: first call {results[name][-1]['calls_s'][0]:.2f} s",
                    file=sys.stderr,
                )
    rows = []
    for name, runs in results.items():
        first = statistics.median(run["calls_s"][0] for run in runs)
        later = statistics.median(t for run in runs for t in run["calls_s"][1:])
        rows.append({"variant": name, "first_s": first, "later_s": later, "first_over_later": first / later})
    report = {
        "machine": machine_info(torch.device("cpu"), args.threads),
        "model": f"{args.model}-D8",
        "size": args.size,
        "dtype": args.dtype,
        "rounds": args.rounds,
        "rows": rows,
        "raw": results,
    }
    base = next(row for row in rows if row["variant"] == "auto, cache off")["first_s"]
    print(
        f"\n{args.model}-D8 {args.size}x{args.size} {args.dtype}, {args.threads} threads, fresh process per variant, "
        f"medians of {args.rounds} rounds\n"
    )
    print("| variant | first call s | later calls s | first / later | first call vs cache off |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['variant']} | {row['first_s']:.2f} | {row['later_s']:.3f} | {row['first_over_later']:.1f}x | "
            f"{base / row['first_s']:.1f}x faster |"
        )
    write_json(report, args.json)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
