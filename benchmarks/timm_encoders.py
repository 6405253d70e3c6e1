"""What each timm encoder costs under the pyramid, next to R50-D8: parameters, GFLOPs, CPU latency, memory.

    python benchmarks/timm_encoders.py                      # R50-D8 and four timm encoders at OS 8
    python benchmarks/timm_encoders.py --reps 3 --encoders timm:convnext_tiny

Every model is a PSPNet at output stride 8 with 150 classes (ADE20K's), random weights:

* ``params``: all parameters, auxiliary head included (``M``);
* ``GFLOPs``: one eval forward of one 512x512 image, torchvision's convention (a multiply-add is
  one FLOP; ``pspnet_lib.hub.zoo_stats.count_stats``, on the meta device);
* latency: one 512x512 image, eval mode, ``model(x)`` in float32 and the fast path
  (``optimize_for_inference(model, bf16)`` where the CPU runs bfloat16 natively, else float32: the
  ResNet rewrites for R50-D8, the generic path of ``pspnet_lib.runtime.generic`` for timm
  encoders), median of ``--reps`` calls after one warm-up each, all variants of all models
  interleaved round by round so that machine load hits them alike;
* training-step memory: the growth of live CPU tensor bytes over one fp32 SGD step (batch 2,
  ``--crop`` squared; ``benchmarks/train_step.py``'s meter and step), aux loss included.

Writes ``benchmarks/results/timm_encoders.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)
from train_step import MemoryMeter, Trainer, make_batch  # noqa: E402

from pspnet_lib import build_pspnet
from pspnet_lib._testing import smooth_image
from pspnet_lib.hub.zoo_stats import count_stats
from pspnet_lib.runtime import native_dtype_support, optimize_for_inference

ENCODERS = ["resnet50", "timm:convnext_tiny", "timm:regnety_040", "timm:efficientnet_b3", "timm:mobilenetv3_large_100"]
NUM_CLASSES = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="*", default=ENCODERS)
    parser.add_argument("--size", type=int, default=512, help="side of the latency / GFLOPs input")
    parser.add_argument("--crop", type=int, default=256, help="side of the training-step crops (batch 2)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "timm_encoders.json")
    args = parser.parse_args()
    device = torch.device("cpu")
    threads = torch.get_num_threads()
    fast_dtype = torch.bfloat16 if native_dtype_support(torch.bfloat16, device)[0] else torch.float32
    report: dict = {"machine": machine_info(device, threads), "size": args.size, "crop": args.crop, "models": {}}
    x = smooth_image(1, args.size, args.size, seed=0)

    models, calls = {}, {}
    for name in args.encoders:
        torch.manual_seed(0)
        config = {"backbone": name, "num_classes": NUM_CLASSES, "output_stride": 8}
        stats = count_stats(config, (args.size, args.size))
        model = build_pspnet(name, NUM_CLASSES).eval()
        fast = optimize_for_inference(model, fast_dtype)
        with torch.no_grad():
            reference, optimised = model(x), fast(x)  # warm-up (and the fast path's tuning)
        agreement = (reference.argmax(1) == optimised.argmax(1)).float().mean().item()
        models[name] = model
        calls[f"{name} fp32"] = lambda m=model: m(x)
        calls[f"{name} fast"] = lambda f=fast: f(x)
        report["models"][name] = {
            "params_M": stats["num_params"] / 1e6,
            "gflops": stats["_ops"],
            "fast_dtype": str(fast_dtype),
            "fast_argmax_agreement": agreement,
        }
        print(f"{name}: built, {stats['num_params'] / 1e6:.1f} M parameters, {stats['_ops']:.1f} GFLOPs", flush=True)

    times: dict[str, list[float]] = {key: [] for key in calls}
    with torch.no_grad():
        for _ in range(args.reps):
            for key, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    for name in args.encoders:
        entry = report["models"][name]
        entry["fp32_s"] = statistics.median(times[f"{name} fp32"])
        entry["fast_s"] = statistics.median(times[f"{name} fast"])
        entry["fast_speedup_per_round"] = [a / b for a, b in zip(times[f"{name} fp32"], times[f"{name} fast"])]

    images, labels = make_batch(2, args.crop, NUM_CLASSES, device, seed=1)
    for name, model in models.items():
        trainer = Trainer(model, "fp32", device)
        trainer.step(images, labels)  # warm-up (optimizer state, allocator)
        meter = MemoryMeter(device)
        meter.start()
        trainer.step(images, labels)
        report["models"][name]["train_step_mib"] = meter.stop() / 2**20
        del trainer

    write_json(report, args.out)
    machine = report["machine"]
    print(
        f"\n{machine['cpu']}, {threads} threads, torch {machine['torch']}, load average {machine['load_average']}; "
        f"fast path dtype {fast_dtype}; {args.reps} interleaved rounds, medians\n"
    )
    base = report["models"].get("resnet50")
    print(
        f"| backbone (OS 8) | params (M) | GFLOPs @ {args.size}² | fp32 (s) | fast path (s) | fast vs fp32 "
        f"| vs R50-D8 fp32 | train step MiB (2×{args.crop}²) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, e in report["models"].items():
        versus = f"{e['fp32_s'] / base['fp32_s']:.2f}x" if base else "-"
        print(
            f"| {name} | {e['params_M']:.1f} | {e['gflops']:.1f} | {e['fp32_s']:.2f} | {e['fast_s']:.2f} | "
            f"{e['fp32_s'] / e['fast_s']:.2f}x | {versus} | {e['train_step_mib']:.0f} |"
        )
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
