"""Tiled inference on large GeoTIFFs: peak memory, megapixels per second, and the cost of tiling.

    python benchmarks/rasters.py                        # 2048^2, 8192^2, 16384^2, R18 PSPNet at output stride 32
    python benchmarks/rasters.py --sizes 2048 8192 --model r18-d8 --rounds 3
    python benchmarks/rasters.py --model pixel            # a 1x1 convolution: the pipeline's own cost

For each size the script writes a synthetic 3-band uint8 GeoTIFF with rasterio (tiled, deflate,
EPSG:32632; into a temporary folder, deleted afterwards: nothing is stored), then per round, in a
fresh process each time:

* **tiled**: ``predict_raster(model, scene.tif, labels.tif)`` (windows 512x512, stride 341, batch
  4, mean blend): wall time, megapixels per second, and the process's peak RSS (VmHWM) and its
  growth over the RSS before the call;
* **forward-only**: the same model on the same windows (every 8th batch of the tiled run's window
  grid, read into memory first), timed alone; its windows-per-second rate times the run's window
  count gives what the model alone would take, so ``tiled / forward-only`` is the cost of reading,
  blending and writing (1.00x = none).

Sizes and variants are interleaved round by round; medians are reported. The table is printed
in Markdown for docs/performance.md, with the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"  # rasters_<model>.json

CHILD = r"""
import json, sys, time
import numpy as np, torch
from pspnet_lib import build_pspnet, predict_raster
from pspnet_lib.inference.modes import slide_spans

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

kind, source, out, variant = sys.argv[1:5]
torch.manual_seed(0)
if kind == "pixel":  # a per-pixel linear classifier: what is left is the pipeline's own cost
    model = torch.nn.Conv2d(3, 6, 1).eval()
else:
    model = build_pspnet("resnet18", 6, output_stride=32 if kind == "r18-os32" else 8).eval()
crop, stride, batch = 512, 341, 4
if variant == "tiled":
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    result = predict_raster(model, source, out, crop=crop, stride=stride, batch_size=batch, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "windows": result.windows, "peak": status("VmHWM:"), "growth": status("VmHWM:") - before}))
else:
    import rasterio
    from rasterio.windows import Window
    with rasterio.open(source) as src:
        rows = slide_spans(src.height, crop, stride)
        cols = slide_spans(src.width, crop, stride)
        grid = [(y1, x1) for y1, _ in rows for x1, _ in cols]
        batches = [grid[i:i + batch] for i in range(0, len(grid), batch)][::8][:16]
        tensors = [torch.from_numpy(np.stack([src.read(window=Window(x, y, crop, crop)) for y, x in b])) for b in batches]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)
    inputs = [(t.float() / 255.0 - mean) / std for t in tensors]  # the photo rule (core.bands.normalise)
    with torch.no_grad():
        model(inputs[0])  # first-call set-up, as the tiled run's probe window
        start = time.perf_counter()
        for x in inputs:
            model(x)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "windows": sum(len(b) for b in batches)}))
"""


def make_scene(path: Path, side: int) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", height=side, width=side, count=3, dtype="uint8", crs="EPSG:32632")
    profile.update(transform=from_origin(300_000, 5_000_000, 0.5, 0.5), tiled=True, blockxsize=256, blockysize=256)
    profile.update(compress="deflate")
    rng = np.random.default_rng(side)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 1024):
            coarse = rng.integers(0, 256, (3, 1024 // 32, side // 32), dtype=np.uint8)
            block = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)  # 32-pixel "fields"
            dst.write(block, window=Window(0, y, side, 1024))


def run_child(kind: str, scene: Path, out: Path, variant: str) -> dict:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(scene), str(out), variant],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument(
        "--model",
        choices=("r18-os32", "r18-d8", "pixel"),
        default="r18-os32",
        help="PSPNet R18 at output stride 32 or 8, or a per-pixel 1x1 convolution (the pipeline's own speed)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import torch

    results: dict[int, dict[str, list]] = {side: {"tiled": [], "forward": []} for side in args.sizes}
    with tempfile.TemporaryDirectory(prefix="pspnet-rasters-bench-") as folder:
        scenes = {}
        for side in args.sizes:
            scenes[side] = Path(folder) / f"scene{side}.tif"
            make_scene(scenes[side], side)
        for _ in range(args.rounds):  # interleaved: every size and variant once per round
            for side in args.sizes:
                for variant in ("tiled", "forward"):
                    record = run_child(args.model, scenes[side], Path(folder) / f"labels{side}.tif", variant)
                    results[side][variant].append(record)
                    print(side, variant, record, file=sys.stderr, flush=True)
    info = machine_info(torch.device("cpu"), torch.get_num_threads())
    rows = []
    for side in args.sizes:
        tiled, forward = results[side]["tiled"], results[side]["forward"]
        seconds = statistics.median(r["seconds"] for r in tiled)
        windows = tiled[0]["windows"]
        rate = statistics.median(r["windows"] / r["seconds"] for r in forward)
        forward_seconds = windows / rate
        rows.append(
            {
                "side": side,
                "megapixels": side * side / 1e6,
                "windows": windows,
                "seconds": seconds,
                "mpx_per_s": side * side / 1e6 / seconds,
                "forward_mpx_per_s": side * side / 1e6 / forward_seconds,
                "ratio": seconds / forward_seconds,
                "peak_rss_mib": statistics.median(r["peak"] for r in tiled) / 2**20,
                "growth_mib": statistics.median(r["growth"] for r in tiled) / 2**20,
            }
        )
    write_json(
        {"machine": info, "model": args.model, "rounds": args.rounds, "rows": rows},
        RESULTS / f"rasters_{args.model}.json",
    )
    print(
        f"\nMachine: {info.get('cpu')}, {info['threads']} threads, torch {info['torch']}, load {info['load_average']}"
    )
    print(f"Model: {args.model}, 6 classes; windows 512x512, stride 341, batch 4; {args.rounds} round(s)\n")
    print("| raster | windows | tiled s | Mpx/s | forward-only Mpx/s | tiled / forward-only | peak RSS | growth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['side']:,}^2 ({r['megapixels']:.0f} MP) | {r['windows']} | {r['seconds']:.1f} | {r['mpx_per_s']:.2f} | "
            f"{r['forward_mpx_per_s']:.2f} | {r['ratio']:.2f}x | {r['peak_rss_mib']:.0f} MiB | {r['growth_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
