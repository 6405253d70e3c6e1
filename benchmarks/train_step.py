"""Time and peak memory of one PSPNet training step: fp32, bf16 autocast, bf16 + checkpointing.

    python benchmarks/train_step.py                       # batch 2 and 8, crops 473 and 512
    python benchmarks/train_step.py --quick               # batch 2, crop 473
    python benchmarks/train_step.py --backbone resnet101 --batches 2 --crops 512

One SGD step (momentum 0.9, weight decay 5e-4) on random smooth images and random labels with the
PSPNet loss (cross-entropy on the main logits + 0.4 x on the auxiliary logits, ignore index 255),
in train mode (BatchNorm batch statistics).

Modes: ``fp32``; ``bf16`` (``torch.autocast`` bfloat16, model and input channels-last);
``bf16+ckpt`` (the same with ``model.set_grad_checkpointing(True)``); on CUDA also ``fp16``
(autocast float16 with a ``GradScaler``) and ``fp16+ckpt``. For each batch/crop every mode gets its own
copy of the same weights and the modes run round-robin, so machine load affects all alike.

Time: one warm-up step per mode, then ``--reps`` timed steps round-robin, with the default
allocator. Memory, measured in an extra step per mode afterwards, is the growth over one step
(optimizer state already exists): on CPU, the peak resident set size (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``) minus the resident size before the step, with glibc told for
that step to serve every block of 64 KiB or more by ``mmap`` (``mallopt(M_MMAP_THRESHOLD)``, after
``malloc_trim``) so that freed tensors leave the resident set at once and it follows live tensors
(that setting costs ~25% in page faults, which is why timing is done separately); on CUDA,
``torch.cuda.max_memory_allocated`` minus the allocation before the step. A configuration whose
predicted growth (from the same mode at a smaller batch or crop) exceeds 80% of the available
memory is skipped and reported as such.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import machine_info, sync, write_json  # noqa: E402  (also puts the checkout on sys.path)

from pspnet_lib import build_pspnet  # noqa: E402
from pspnet_lib.runtime import smooth_image  # noqa: E402

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class MemoryMeter:
    """Peak memory growth over a region.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start. CPU: the peak of
    live tensor bytes from the CPU allocator's events (``torch.profiler`` with
    ``profile_memory=True``: every allocation and free, summed in time order), the CPU analogue of
    the CUDA number, plus the resident-set high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) minus the resident size at the start. The RSS figure can undercount
    (glibc reuses memory it retained from earlier steps) or overcount (allocator slack), so the
    allocator peak is the one used for ratios and GPU extrapolation.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.rss_base = _status_kib("VmRSS") * 1024
        except OSError:
            self.rss_base = None
        self.prof.__enter__()

    def stop(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"growth_bytes": peak - self.base, "peak_bytes": peak}
        rss_growth = _status_kib("VmHWM") * 1024 - self.rss_base if self.rss_base is not None else None
        self.prof.__exit__(None, None, None)
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in self.prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        return {"growth_bytes": peak, "rss_growth_bytes": rss_growth}


def make_batch(batch: int, crop: int, num_classes: int, device: torch.device, seed: int):
    images = smooth_image(batch, crop, crop, seed=seed, device=device)
    g = torch.Generator().manual_seed(seed)
    # Piecewise-constant labels (blocks of 32x32) with ~5% ignored pixels, like real masks.
    cells = -(-crop // 32)
    coarse = torch.randint(0, num_classes, (batch, 1, cells, cells), generator=g).float()
    labels = F.interpolate(coarse, size=(crop, crop), mode="nearest")[:, 0].long()
    labels[torch.rand(labels.shape, generator=g) < 0.05] = 255
    return images, labels.to(device)


class Trainer:
    """One model copy trained in one precision mode."""

    def __init__(self, base: torch.nn.Module, mode: str, device: torch.device) -> None:
        self.mode = mode
        self.model = copy.deepcopy(base).to(device).train()
        self.low = torch.float16 if mode.startswith("fp16") else torch.bfloat16 if mode.startswith("bf16") else None
        if self.low is not None:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.set_grad_checkpointing(mode.endswith("+ckpt"))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler(device.type) if self.low == torch.float16 else None
        self.device = device

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if self.low is not None:
            images = images.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.low or torch.float32, enabled=self.low is not None):
            main, aux = self.model(images, return_aux=True)
            loss = F.cross_entropy(main.float(), labels, ignore_index=255) + 0.4 * F.cross_entropy(
                aux.float(), labels, ignore_index=255
            )
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss.detach().item()

    def release_grads(self) -> None:
        self.opt.zero_grad(set_to_none=True)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = ["fp32", "bf16", "bf16+ckpt"] + (["fp16", "fp16+ckpt"] if device.type == "cuda" else [])
    base = build_pspnet(args.backbone, args.classes).train()
    meter = MemoryMeter(device)
    results: list[dict] = []
    per_pixel: dict[str, float] = {}
    for crop in args.crops:
        for batch in args.batches:
            trainers, skipped = [], []
            for mode in modes:
                predicted = per_pixel.get(mode, 0.0) * batch * crop * crop
                budget = (
                    0.8 * _mem_available_bytes()
                    if device.type == "cpu"
                    else 0.8 * (torch.cuda.mem_get_info(device)[0])
                )
                if predicted > budget:
                    skipped.append(mode)
                    results.append(
                        {"mode": mode, "batch": batch, "crop": crop, "skipped": True,
                         "reason": f"predicted growth {predicted / 2**30:.1f} GiB > 80% of available memory"}
                    )
                    continue
                trainers.append(Trainer(base, mode, device))
            images, labels = make_batch(batch, crop, args.classes, device, seed=batch * 1000 + crop)
            for t in trainers:  # warm-up: creates momentum buffers, picks kernels
                t.step(images, labels)
                t.release_grads()
            times: dict[str, list[float]] = {t.mode: [] for t in trainers}
            mems: dict[str, dict] = {}
            losses: dict[str, float] = {}
            for _ in range(args.reps):
                for t in trainers:
                    sync(device)
                    t0 = time.perf_counter()
                    losses[t.mode] = t.step(images, labels)
                    sync(device)
                    times[t.mode].append(time.perf_counter() - t0)
                    t.release_grads()
            for t in trainers:
                meter.start()
                t.step(images, labels)
                mems[t.mode] = meter.stop()
                t.release_grads()
            for t in trainers:
                growth = mems[t.mode]["growth_bytes"]
                per_pixel[t.mode] = max(per_pixel.get(t.mode, 0.0), growth / (batch * crop * crop))
                results.append(
                    {
                        "mode": t.mode,
                        "batch": batch,
                        "crop": crop,
                        "median_s": statistics.median(times[t.mode]),
                        "min_s": min(times[t.mode]),
                        "growth_bytes": growth,
                        **{k: v for k, v in mems[t.mode].items() if k != "growth_bytes"},
                        "loss": losses[t.mode],
                    }
                )
                print(
                    f"  done {t.mode:10s} batch {batch} crop {crop}: {statistics.median(times[t.mode]):.2f} s, "
                    f"+{growth / 2**20:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
            del trainers
            gc.collect()
    return {
        "machine": machine_info(device, args.threads),
        "backbone": args.backbone,
        "classes": args.classes,
        "reps": args.reps,
        "memory_method": "allocator peak (profiler) and VmHWM - VmRSS" if device.type == "cpu" else "cuda.max_memory_allocated - memory_allocated",
        "results": results,
    }


def print_table(report: dict) -> None:
    rows = report["results"]
    print(f"\nPSPNet {report['backbone']} training step ({report['machine']['device']}, "
          f"{report['machine']['threads']} threads, torch {report['machine']['torch']})")
    cpu = report["machine"]["device"] == "cpu"
    print(f"memory: {report['memory_method']}")
    print(f"{'batch':>5} {'crop':>5} {'mode':<10} {'median s':>9} {'min s':>8} {'speed-up':>8} "
          f"{'peak MiB':>9} {'vs fp32':>8} {'MiB/Mpx':>8}" + (f" {'RSS MiB':>8} {'vs fp32':>8}" if cpu else ""))
    for crop in sorted({r["crop"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            group = [r for r in rows if r["crop"] == crop and r["batch"] == batch]
            ref = next((r for r in group if r["mode"] == "fp32" and not r.get("skipped")), None)
            for r in group:
                if r.get("skipped"):
                    print(f"{batch:>5} {crop:>5} {r['mode']:<10} skipped: {r['reason']}")
                    continue
                speed = f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "-"
                mem = f"{r['growth_bytes'] / ref['growth_bytes']:.0%}" if ref else "-"
                mpx = batch * crop * crop / 1e6
                line = (f"{batch:>5} {crop:>5} {r['mode']:<10} {r['median_s']:>9.2f} {r['min_s']:>8.2f} {speed:>8} "
                        f"{r['growth_bytes'] / 2**20:>9.0f} {mem:>8} {r['growth_bytes'] / 2**20 / mpx:>8.0f}")
                if cpu and r.get("rss_growth_bytes") is not None:
                    rss_ratio = f"{r['rss_growth_bytes'] / ref['rss_growth_bytes']:.0%}" if ref else "-"
                    line += f" {r['rss_growth_bytes'] / 2**20:>8.0f} {rss_ratio:>8}"
                print(line)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in report['machine']['load_average'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[2, 8])
    parser.add_argument("--crops", type=lambda s: [int(v) for v in s.split(",")], default=[473, 512])
    parser.add_argument("--reps", type=int, default=1, help="timed steps per mode after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="batch 2, crop 473 only")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.crops = [2], [473]
    report = run(args)
    print_table(report)
    write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
