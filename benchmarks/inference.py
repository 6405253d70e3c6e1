"""PSPNet inference latency: plain fp32, naive autocast + channels-last, and the fast path, in one run.

    python benchmarks/inference.py                       # R18/R50/R101-D8 at 512x512
    python benchmarks/inference.py --quick               # R50-D8 at 512x512, fewer repetitions
    python benchmarks/inference.py --sizes 512,473,769,1024x2048 --models resnet50

For each model and size, every variant runs once to warm up (kernel selection, the fast path's
space-to-batch calibration) and then the variants run round-robin ``--reps`` times, so machine load
affects all of them alike; the table gives median and min latency and the speed-up ratios of the
medians. Variants (CPU): ``fp32`` (``model(x)``), ``autocast-bf16`` (``torch.autocast`` bfloat16 with
model and input channels-last, the usual "just turn on bf16"), ``fast-fp32`` and ``fast-bf16``
(:func:`pspnet_lib.optimize_for_inference` with its defaults: Winograd and space-to-batch chosen by
measurement, in this run: ``tuning_cache=False``, so no decision stored by an earlier run is reused); ``--ablation`` adds ``fast-bf16-winograd2`` (F(2x2, 3x3) wherever Winograd applies, never
F(4x4)), ``fast-bf16-nowinograd`` and ``fast-bf16-direct`` (neither
Winograd nor space-to-batch). On CUDA the same with float16 as well.

Throughput is reported against the machine's own bfloat16 (CUDA: float16) 3x3-convolution peak,
measured in the same run as the best of several representative 3x3 convolutions run the fastest
way available (oneDNN, pre-packed weights, channels-last). "TFLOP/s" divides the model's nominal
convolution FLOPs (2 x multiply-adds of every convolution of ``model(x)``, the usual way to quote a
model's cost) by the latency. The fast path does less work than that: it skips the pyramid
branches' full-resolution convolutions (``executed_gflop`` in the JSON) and Winograd convolutions
need 2.25x fewer multiplications, so its "TFLOP/s" can exceed the measured peak.
Accuracy columns compare each variant's logits with fp32's: max relative error (max |diff| / max
|fp32 logit|) and argmax agreement, on a smooth image-like input with random weights (BatchNorm
statistics randomised so that folding them matters).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from _common import machine_info, sync, write_json  # noqa: E402  (also puts the checkout on sys.path)

from pspnet_lib import build_pspnet, optimize_for_inference  # noqa: E402
from pspnet_lib._testing import randomize_batchnorm_, smooth_image  # noqa: E402
from pspnet_lib.runtime import agreement_stats  # noqa: E402
from pspnet_lib.runtime.conv import FusedConv, mkldnn_fusion_available  # noqa: E402
from pspnet_lib.runtime.tuning import tuning_cache  # noqa: E402

# Repetitions per model on CPU (after one warm-up call per variant): a default run of
# R18/R50/R101 at 512x512 fits in a few minutes on 2 cores.
CPU_REPS = {"resnet18": 5, "resnet34": 4, "resnet50": 3, "resnet101": 2, "resnet152": 2}
# (in_channels, out_channels, feature size) of representative 3x3 convolutions of a ResNet-50-D8.
PEAK_SHAPES = [(64, 64, 128), (128, 128, 64), (256, 256, 64), (512, 512, 64), (2048, 512, 64)]


def round_robin(fns: dict[str, Callable[[], object]], reps: int, device: torch.device) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def conv_flops(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(nominal, pyramid) FLOPs of ``model(x)``: all convolutions, and the bottleneck's pyramid part."""
    total = 0.0
    last_stage: list[torch.Size] = []

    def count(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles.append(model.backbone.layer4.register_forward_hook(lambda m, i, o: last_stage.append(o.shape)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    head = model.decode_head
    conv = head.bottleneck.conv
    n, _, h, w = last_stage[0]
    pyramid = 2.0 * n * h * w * conv.out_channels * (conv.in_channels - head.ppm.in_channels) * 9
    return total, pyramid


def measure_peak(dtype: torch.dtype, device: torch.device, reps: int) -> dict:
    """Best TFLOP/s of representative 3x3 convolutions run the fastest way available."""
    backend = "mkldnn" if device.type == "cpu" and mkldnn_fusion_available(dtype) else "aten"
    results = []
    fns, flops = {}, {}
    for cin, cout, size in PEAK_SHAPES:
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False, device=device)
        unit = FusedConv(conv, None, relu=False, dtype=dtype, backend=backend)
        x = torch.randn(1, cin, size, size, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        name = f"{cin}->{cout}@{size}"
        fns[name] = lambda u=unit, t=x: u(t)
        flops[name] = 2.0 * cin * cout * 9 * size * size
    with torch.no_grad():
        for fn in fns.values():
            fn()
        times = round_robin(fns, reps, device)
    for name, ts in times.items():
        results.append({"conv": name, "min_s": min(ts), "tflops": flops[name] / min(ts) / 1e12})
    best = max(results, key=lambda r: r["tflops"])
    return {
        "dtype": str(dtype),
        "backend": backend,
        "peak_tflops": best["tflops"],
        "best_conv": best["conv"],
        "convs": results,
    }


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def bench_model(
    name: str, size: tuple[int, int], args: argparse.Namespace, device: torch.device, low: list[torch.dtype]
) -> list[dict]:
    torch.manual_seed(0)
    model = randomize_batchnorm_(build_pspnet(name, args.classes)).eval().to(device)
    x = smooth_image(args.batch, *size, seed=1, device=device)
    nominal, pyramid = conv_flops(model, x)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def autocast_fn(dt):
        def run():
            with torch.autocast(device.type, dtype=dt):
                return model_cl(x_cl)

        return run

    variants: dict[str, Callable[[], torch.Tensor]] = {"fp32": lambda: model(x)}
    for dt in low:
        variants[f"autocast-{_short(dt)}"] = autocast_fn(dt)
    fast_models = {"fast-fp32": optimize_for_inference(model, torch.float32, tuning_cache=False)}
    for dt in low:
        fast_models[f"fast-{_short(dt)}"] = optimize_for_inference(model, dt, tuning_cache=False)
    if args.ablation:  # what each choice contributes
        fast_models[f"fast-{_short(low[0])}-direct"] = optimize_for_inference(
            model, low[0], space_to_batch=False, winograd=False, tuning_cache=False
        )
        fast_models[f"fast-{_short(low[0])}-nowinograd"] = optimize_for_inference(
            model, low[0], winograd=False, tuning_cache=False
        )
        fast_models[f"fast-{_short(low[0])}-winograd2"] = optimize_for_inference(
            model, low[0], winograd=2, tuning_cache=False
        )
    if args.compile:
        fast_models[f"fast-{_short(low[0])}-compile"] = optimize_for_inference(
            model, low[0], compile=True, space_to_batch=False, tuning_cache=False
        )
    if args.skip_fast_fp32:
        fast_models.pop("fast-fp32")
    for key, fm in fast_models.items():
        variants[key] = lambda m=fm: m(x)
    reps = args.reps or (CPU_REPS.get(name, 2) if device.type == "cpu" else 20)
    if device.type == "cpu" and size[0] * size[1] > 512 * 512:
        reps = max(1, round(reps * 512 * 512 / (size[0] * size[1])))
    outputs = {}
    with torch.inference_mode():
        for key, fn in variants.items():  # warm-up, and the outputs compared below
            t0 = time.perf_counter()
            outputs[key] = fn().float()
            print(
                f"  warm-up {name} {size[0]}x{size[1]} {key}: {time.perf_counter() - t0:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        times = round_robin(variants, reps, device)
    rows = []
    ref_median = statistics.median(times["fp32"])
    autocast_key = f"autocast-{_short(low[0])}" if low else None
    for key, ts in times.items():
        median = statistics.median(ts)
        row = {
            "model": f"{name}-D8",
            "size": f"{size[0]}x{size[1]}",
            "batch": args.batch,
            "variant": key,
            "reps": len(ts),
            "median_s": median,
            "min_s": min(ts),
            "speedup_vs_fp32": ref_median / median,
            "nominal_gflop": nominal / 1e9,
            "executed_gflop": (nominal - pyramid) / 1e9 if key.startswith("fast") else nominal / 1e9,
            "nominal_tflops": nominal / median / 1e12,
        }
        if autocast_key:
            row["speedup_vs_autocast"] = statistics.median(times[autocast_key]) / median
        if key != "fp32":
            row.update(agreement_stats(outputs["fp32"], outputs[key]))
        if key in fast_models and hasattr(fast_models[key], "space_to_batch_plans"):
            row["space_to_batch_plans"] = fast_models[key].space_to_batch_plans()
        rows.append(row)
    return rows


def _short(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def print_table(report: dict) -> None:
    m = report["machine"]
    peak = report["peak"]
    print(
        f"\nPSPNet inference, batch {report['batch']}, {m['device']} ({m.get('gpu', m['cpu'])}), "
        f"{m['threads']} threads, torch {m['torch']}"
    )
    print(
        f"measured {peak['dtype']} 3x3-conv peak: {peak['peak_tflops']:.3f} TFLOP/s ({peak['best_conv']}, "
        f"{peak['backend']}); " + ", ".join(f"{c['conv']} {c['tflops']:.3f}" for c in peak["convs"])
    )
    head = (
        f"{'model':<14}{'size':>10} {'variant':<20}{'median ms':>10}{'min ms':>9}{'vs fp32':>8}{'vs autoc':>9}"
        f"{'TFLOP/s':>8}{'% peak':>7}{'max rel err':>12}{'argmax':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in report["results"]:
        err = f"{r['max_rel_err']:.2e}" if "max_rel_err" in r else "-"
        agree = f"{100 * r['argmax_agreement']:.2f}%" if "argmax_agreement" in r else "-"
        vs_ac = f"{r['speedup_vs_autocast']:.2f}x" if "speedup_vs_autocast" in r else "-"
        print(
            f"{r['model']:<14}{r['size']:>10} {r['variant']:<20}{1e3 * r['median_s']:>10.0f}{1e3 * r['min_s']:>9.0f}"
            f"{r['speedup_vs_fp32']:>7.2f}x{vs_ac:>9}{r['nominal_tflops']:>8.3f}"
            f"{100 * r['nominal_tflops'] / peak['peak_tflops']:>6.0f}%{err:>12}{agree:>8}"
        )
    print(f"load average before / after: {report['load_before']} / {report['load_after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["resnet18", "resnet50", "resnet101"])
    parser.add_argument("--sizes", type=lambda s: [parse_size(v) for v in s.split(",")], default=[(512, 512)])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--reps", type=int, default=0, help="timed rounds (default: per model, see CPU_REPS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time the fast path without Winograd, and without Winograd and space-to-batch",
    )
    parser.add_argument("--skip-fast-fp32", action="store_true", help="omit the fast fp32 variant (saves time)")
    parser.add_argument("--quick", action="store_true", help="R50-D8 at 512x512, 2 rounds")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/inference.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.sizes, args.reps = ["resnet50"], [(512, 512)], args.reps or 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    low = [torch.bfloat16] if device.type == "cpu" else [torch.float16, torch.bfloat16]
    report = {
        "machine": machine_info(device, args.threads),
        "batch": args.batch,
        "classes": args.classes,
        "load_before": [round(v, 2) for v in os.getloadavg()],
    }
    report["peak"] = measure_peak(low[0], device, reps=5)
    results = []
    for size in args.sizes:
        for name in args.models:
            results += bench_model(name, size, args, device, low)
            report["results"] = results
            write_json(report, args.json)  # partial results survive an interrupted run
    report["winograd_choices"] = {
        f"{shape} {section.split('|', 3)[3]}": choice
        for section, shapes in tuning_cache(False).sections().items()
        if "|winograd_tile|" in section
        for shape, choice in shapes.items()
    }
    report["peak_after"] = measure_peak(low[0], device, reps=5)
    report["load_after"] = [round(v, 2) for v in os.getloadavg()]
    # Quote throughput against the better of the two peak measurements (start and end of the run).
    if report["peak_after"]["peak_tflops"] > report["peak"]["peak_tflops"]:
        report["peak"], report["peak_after"] = report["peak_after"], report["peak"]
    print_table(report)
    write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
