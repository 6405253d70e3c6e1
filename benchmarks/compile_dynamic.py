"""torch.compile(model, dynamic=True) with inductor across input sizes: compile time, recompilations, speed vs eager.

    python benchmarks/compile_dynamic.py                       # R18-D8, 19 classes, 4 sizes, CPU
    python benchmarks/compile_dynamic.py --backbone resnet50 --device cuda

For each size in order: the first call's wall time (compiling, if it happens), whether dynamo
compiled a new graph, then the steady-state latency of the compiled and the eager model,
interleaved (compiled, eager, compiled, ...), as medians. Writes
benchmarks/results/compile_dynamic.json; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import machine_info, sync, write_json
from torch._dynamo.utils import counters

from pspnet_lib import build_pspnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="256x256,320x288,288x352,384x320", help="HxW,HxW,...")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile_dynamic.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    model = build_pspnet(args.backbone, 19).eval().to(device)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, dynamic=True)
    rows = []
    with torch.no_grad():
        for h, w in sizes:
            x = torch.randn(1, 3, h, w, device=device)
            graphs = counters["stats"]["unique_graphs"]
            start = time.perf_counter()
            out = compiled(x)
            sync(device)
            first = time.perf_counter() - start
            recompiled = counters["stats"]["unique_graphs"] > graphs
            error = ((out - model(x)).abs().max() / model(x).abs().max()).item()
            times = {"compiled": [], "eager": []}
            for _ in range(args.repeats):
                for name, fn in (("compiled", compiled), ("eager", model)):
                    sync(device)
                    t = time.perf_counter()
                    fn(x)
                    sync(device)
                    times[name].append(time.perf_counter() - t)
            row = {
                "size": [h, w],
                "first_call_s": round(first, 2),
                "new_graph": recompiled,
                "compiled_ms": round(1000 * statistics.median(times["compiled"]), 1),
                "eager_ms": round(1000 * statistics.median(times["eager"]), 1),
                "max_rel_error": error,
            }
            row["speedup"] = round(row["eager_ms"] / row["compiled_ms"], 2)
            rows.append(row)
            print(row, flush=True)
    report = {
        "machine": machine_info(device, torch.get_num_threads()),
        "model": f"PSPNet {args.backbone}-D8, 19 classes, eval, batch 1",
        "graphs_compiled": counters["stats"]["unique_graphs"],
        "rows": rows,
    }
    print(f"graphs compiled over {len(sizes)} sizes: {report['graphs_compiled']}")
    write_json(report, Path(args.out))


if __name__ == "__main__":
    main()
