"""The pyramid's pooling, three ways, on a ResNet-50 layer-4 map (2048 channels; 64x64 = a 512x512 input).

    python benchmarks/pyramid_pooling.py [--threads 2] [--rounds 7] [--no-compile]

- ``adaptive``: ``nn.AdaptiveAvgPool2d`` per bin (what eager calls use);
- ``pyramid``: ``pyramid_adaptive_avg_pool2d`` (what captured graphs use since issue 23: the four
  bins' 0/1 matrices stacked, height contracted first on the ``(N * C, H, W)`` map, one pair of
  products for all bins);
- ``per-bin``: 0.1's ``rows @ (x @ cols.T)`` per bin (captured graphs used it before issue 23,
  when it made ``torch.export`` with a batch-1 example fail; kept here as the baseline).

Eager rows: median ms of the whole pyramid (bins 1, 2, 3, 6), the variants interleaved round by
round, ratio to ``adaptive`` per round (median). Compiled rows (``torch.compile(dynamic=True)``,
inductor): first-call seconds (compilation), then the median of the runs at two other sizes,
and the number of graphs compiled for three sizes. Max relative difference to a float64
reference. Writes ``benchmarks/results/pyramid_pooling.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_info, write_json
from torch._dynamo.utils import counters

from pspnet_lib.models.ppm import adaptive_pool_matrix, pyramid_adaptive_avg_pool2d

BINS = (1, 2, 3, 6)


def adaptive(x: torch.Tensor) -> list[torch.Tensor]:
    return [F.adaptive_avg_pool2d(x, b) for b in BINS]


def pyramid(x: torch.Tensor) -> list[torch.Tensor]:
    return pyramid_adaptive_avg_pool2d(x, BINS)


def per_bin(x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for b in BINS:
        rows = adaptive_pool_matrix(x.shape[-2], b, dtype=x.dtype, device=x.device)
        cols = adaptive_pool_matrix(x.shape[-1], b, dtype=x.dtype, device=x.device)
        out.append(torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1))))
    return out


VARIANTS = {"adaptive": adaptive, "pyramid": pyramid, "per-bin": per_bin}


def max_rel(got: list[torch.Tensor], x: torch.Tensor) -> float:
    ref = adaptive(x.double())
    return max(float((g.double() - r).abs().max() / r.abs().max()) for g, r in zip(got, ref))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 2048, 64, 64).relu()
    report: dict = {"machine": machine_info(torch.device("cpu"), args.threads), "eager": {}, "compiled": {}}

    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with torch.no_grad():
        for fn in VARIANTS.values():
            fn(x)
        for _ in range(args.rounds):
            for name, fn in VARIANTS.items():
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    print(f"{report['machine']['cpu']}, {args.threads} threads, torch {torch.__version__}; map (1, 2048, 64, 64)")
    print(f"{'eager':<12}{'median ms':>10}{'x adaptive':>12}{'max rel err':>13}")
    for name, fn in VARIANTS.items():
        ratio = statistics.median(t / a for t, a in zip(times[name], times["adaptive"]))
        err = max_rel(fn(x), x)
        report["eager"][name] = {"median_ms": 1e3 * statistics.median(times[name]), "ratio": ratio, "max_rel": err}
        print(f"{name:<12}{1e3 * statistics.median(times[name]):>10.1f}{ratio:>12.2f}{err:>13.1e}")

    if args.no_compile:
        write_json(report, Path(__file__).parent / "results" / "pyramid_pooling.json")
        return
    sizes = [(64, 64), (61, 47), (97, 75)]
    print(f"\n{'compiled':<12}{'first s':>9}{'median ms':>11}{'graphs':>8}  (dynamic=True, inductor; sizes {sizes})")
    for name, fn in VARIANTS.items():
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(fn, dynamic=True)
        inputs = [torch.randn(1, 2048, h, w).relu() for h, w in sizes]
        with torch.no_grad():
            t = time.perf_counter()
            compiled(inputs[0])
            first = time.perf_counter() - t
            runs = []
            for _ in range(args.rounds):
                for z in inputs[1:]:
                    t = time.perf_counter()
                    compiled(z)
                    runs.append(time.perf_counter() - t)
            err = max(max_rel(compiled(z), z) for z in inputs)
        graphs = counters["stats"]["unique_graphs"]
        report["compiled"][name] = {"first_s": first, "median_ms": 1e3 * statistics.median(runs), "graphs": graphs}
        report["compiled"][name]["max_rel"] = err
        print(f"{name:<12}{first:>9.1f}{1e3 * statistics.median(runs):>11.1f}{graphs:>8}  max rel err {err:.1e}")
    write_json(report, Path(__file__).parent / "results" / "pyramid_pooling.json")


if __name__ == "__main__":
    main()
