"""Held-out mIoU and time per iteration of ``pspnet demo`` for several synthetic scene layouts.

Usage: ``python benchmarks/demo_layouts.py [--iters 300] [--threads 2] [--layouts crowded,few-large]``.

Each layout trains the demo's default model and schedule (:func:`pspnet_lib.demo.run_demo`) on
scenes of that layout and scores held-out scenes of the same layout; the model and picture size are
the same for every layout, so a training iteration costs the same: the table also times the scene
generation (interleaved, medians) to show the layouts cost alike. Numbers depend on the seed and
the thread count (deterministic for both); times depend on the machine, named in the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pspnet_lib import demo
from pspnet_lib.data.synthetic import make_scene

LAYOUTS = {
    "crowded": {"objects": None, "object_radius": (0.13, 0.26)},  # before: 4-5 objects, radius 0.13-0.26
    "few-large": {"objects": (2, 3), "object_radius": (0.25, 0.4)},  # the demo's layout
    "few-medium": {"objects": (2, 4), "object_radius": (0.2, 0.35)},
}


def scene_ms(layout: dict, size: int, repeats: int = 50) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        make_scene(np.random.default_rng([0, i]), (size, size), **layout)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    print(f"{cpu}; torch threads {args.threads}; iters {args.iters}; seed {args.seed}")
    names = args.layouts.split(",")
    generation = {name: scene_ms(LAYOUTS[name], 64) for name in names}
    rows = []
    for name in names:
        demo.DEMO_LAYOUT = LAYOUTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            result = demo.run_demo(Path(tmp) / "out", iters=args.iters, seed=args.seed, progress=False)
        ious = {c: round(100 * (v["IoU"] or 0), 1) for c, v in result["per_class"].items()}
        per_iter = 1000 * result["train_seconds"] / result["iterations"]
        rows.append((name, 100 * result["mIoU"], per_iter, generation[name], ious))
        print(
            f"{name:12s} mIoU {100 * result['mIoU']:.1f}%  {per_iter:.0f} ms/iter (incl. val)  "
            f"scene {generation[name]:.2f} ms  {json.dumps(ious)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
