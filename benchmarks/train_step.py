"""Time and peak memory of one PSPNet training step: fp32, bf16 autocast, bf16 + checkpointing.

    python benchmarks/train_step.py                       # batch 2 and 8, crops 473 and 512
    python benchmarks/train_step.py --quick               # batch 2, crop 473
    python benchmarks/train_step.py --backbone resnet101 --batches 2 --crops 512

One SGD step (momentum 0.9, weight decay 5e-4; the library's ``build_optimizer``, i.e. PyTorch's
fused SGD kernel where available, heads at 10x the learning rate) on random smooth images and random labels with the
PSPNet loss (cross-entropy on the main logits + 0.4 x on the auxiliary logits, ignore index 255),
in train mode (BatchNorm batch statistics).

Modes: ``fp32``; ``bf16`` (``torch.autocast`` bfloat16, model and input channels-last);
``bf16+ckpt`` (the same with ``model.set_grad_checkpointing(True)``); on CUDA also ``fp16``
(autocast float16 with a ``GradScaler``) and ``fp16+ckpt``. For each batch/crop every mode gets its own
copy of the same weights and the modes run round-robin, so machine load affects all alike.

Time: one warm-up step per mode, then ``--reps`` timed steps round-robin.

Memory, in one more step per mode, is the growth over a step (weights and optimizer state already
exist; gradients are part of the growth). CUDA: ``torch.cuda.max_memory_allocated`` minus the
allocation before the step. CPU: the peak of live tensor bytes, from every allocation and free of
the CPU allocator in time order (``torch.profiler`` with ``profile_memory=True``) -- the CPU
analogue of the CUDA number, exact and unaffected by what glibc keeps cached. With ``--rss`` each
batch/crop is also run in a fresh process (warm-up step, then a measured one) that reports the
peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident
size before the step, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed tensors to
the OS at once and the resident set follows live memory (in a process that already ran steps with
default settings, RSS growth is meaningless: glibc reuses memory it kept). Timing is never done
under that setting (it costs ~25% in page faults). A configuration whose predicted growth (from
the same mode at a smaller batch or crop) exceeds 80% of the available memory is skipped and
reported as such.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_info, sync, write_json  # noqa: E402  (also puts the checkout on sys.path)

from pspnet_lib import build_pspnet  # noqa: E402
from pspnet_lib._testing import smooth_image  # noqa: E402
from pspnet_lib.engine.optim import build_optimizer  # noqa: E402


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
    """Peak memory growth over a region (see the module docstring for the definitions)."""

    def __init__(self, device: torch.device, rss: bool = False) -> None:
        self.device = device
        self.rss = rss

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.rss:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.base = _status_kib("VmRSS") * 1024
        else:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.rss:
            return _status_kib("VmHWM") * 1024 - self.base
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
        return peak


def rss_growth_in_fresh_process(args: argparse.Namespace, batch: int, crop: int, modes: list[str]) -> dict[str, int]:
    """Run ``--rss-child`` for one batch/crop and return its per-mode RSS growth."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--rss-child",
        "--backbone",
        args.backbone,
        "--classes",
        str(args.classes),
        "--batches",
        str(batch),
        "--crops",
        str(crop),
        "--threads",
        str(args.threads),
        "--modes",
        ",".join(modes),
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rss_child(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    base = build_pspnet(args.backbone, args.classes).train()
    batch, crop = args.batches[0], args.crops[0]
    images, labels = make_batch(batch, crop, args.classes, device, seed=batch * 1000 + crop)
    trainers = [Trainer(base, mode, device) for mode in args.modes]
    meter = MemoryMeter(device, rss=True)
    result = {}
    for t in trainers:
        t.step(images, labels)
        t.release_grads()
    for t in trainers:
        meter.start()
        t.step(images, labels)
        result[t.mode] = meter.stop()
        t.release_grads()
    print(json.dumps(result))
    return 0


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
        # The library's optimiser (pspnet_lib.engine.optim): fused SGD where PyTorch has it.
        self.opt = build_optimizer(self.model, "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)
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
                    0.8 * _mem_available_bytes() if device.type == "cpu" else 0.8 * (torch.cuda.mem_get_info(device)[0])
                )
                if predicted > budget:
                    skipped.append(mode)
                    results.append(
                        {
                            "mode": mode,
                            "batch": batch,
                            "crop": crop,
                            "skipped": True,
                            "reason": f"predicted growth {predicted / 2**30:.1f} GiB > 80% of available memory",
                        }
                    )
                    continue
                trainers.append(Trainer(base, mode, device))
            images, labels = make_batch(batch, crop, args.classes, device, seed=batch * 1000 + crop)
            for t in trainers:  # warm-up: creates momentum buffers, picks kernels
                t.step(images, labels)
                t.release_grads()
            times: dict[str, list[float]] = {t.mode: [] for t in trainers}
            mems: dict[str, int] = {}
            losses: dict[str, float] = {}
            for _ in range(args.reps):
                for t in trainers:
                    sync(device)
                    t0 = time.perf_counter()
                    losses[t.mode] = t.step(images, labels)
                    sync(device)
                    times[t.mode].append(time.perf_counter() - t0)
                    t.release_grads()
            peaks: dict[str, int] = {}
            for t in trainers:
                meter.start()
                t.step(images, labels)
                mems[t.mode] = meter.stop()
                if device.type == "cuda":  # what has to fit on the GPU, CUDA context aside
                    peaks[t.mode] = torch.cuda.max_memory_allocated(device)
                t.release_grads()
            rss = rss_growth_in_fresh_process(args, batch, crop, [t.mode for t in trainers]) if args.rss else {}
            for t in trainers:
                growth = mems[t.mode]
                per_pixel[t.mode] = max(per_pixel.get(t.mode, 0.0), growth / (batch * crop * crop))
                results.append(
                    {
                        "mode": t.mode,
                        "batch": batch,
                        "crop": crop,
                        "median_s": statistics.median(times[t.mode]),
                        "min_s": min(times[t.mode]),
                        "growth_bytes": growth,
                        **({"rss_growth_bytes": rss[t.mode]} if t.mode in rss else {}),
                        **({"peak_bytes": peaks[t.mode]} if t.mode in peaks else {}),
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
        "params": sum(p.numel() for p in base.parameters()),
        "classes": args.classes,
        "reps": args.reps,
        "memory_method": (
            "peak live bytes of the CPU allocator (torch.profiler)"
            + ("; RSS: VmHWM - VmRSS in a fresh process, MALLOC_MMAP_THRESHOLD_=65536" if args.rss else "")
            if device.type == "cpu"
            else "torch.cuda.max_memory_allocated - memory_allocated"
        ),
        "results": results,
    }


def print_table(report: dict) -> None:
    rows = report["results"]
    print(
        f"\nPSPNet {report['backbone']} training step ({report['machine']['device']}, "
        f"{report['machine']['threads']} threads, torch {report['machine']['torch']})"
    )
    cpu = any("rss_growth_bytes" in r for r in rows)
    print(f"memory: {report['memory_method']}")
    print(
        f"{'batch':>5} {'crop':>5} {'mode':<10} {'median s':>9} {'min s':>8} {'speed-up':>8} "
        f"{'peak MiB':>9} {'vs fp32':>8} {'MiB/Mpx':>8}" + (f" {'RSS MiB':>8} {'vs fp32':>8}" if cpu else "")
    )
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
                line = (
                    f"{batch:>5} {crop:>5} {r['mode']:<10} {r['median_s']:>9.2f} {r['min_s']:>8.2f} {speed:>8} "
                    f"{r['growth_bytes'] / 2**20:>9.0f} {mem:>8} {r['growth_bytes'] / 2**20 / mpx:>8.0f}"
                )
                if cpu and r.get("rss_growth_bytes") is not None:
                    rss_ratio = f"{r['rss_growth_bytes'] / ref['rss_growth_bytes']:.0%}" if ref else "-"
                    line += f" {r['rss_growth_bytes'] / 2**20:>8.0f} {rss_ratio:>8}"
                print(line)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in report['machine']['load_average'])}")


# Usable memory of common GPU sizes after the CUDA context and cuDNN/cuBLAS workspaces (~0.6 GiB,
# an assumption: they are not part of the allocator's count).
GPU_SIZES_GIB = (8, 11, 24)
CONTEXT_GIB = 0.6
FIT_CROPS = (473, 512, 713, 769)


def fit_memory(report: dict) -> dict:
    """Per mode, the least-squares line ``growth = fixed + per_pixel * batch * crop**2`` and the
    largest batch per crop that fits on 8/11/24 GB GPUs (an extrapolation from these measurements)."""
    fits = {}
    params = report["params"]
    persistent = 2 * 4 * params  # fp32 weights + SGD momentum (gradients are part of the growth)
    for mode in dict.fromkeys(r["mode"] for r in report["results"]):
        pts = [
            (r["batch"] * r["crop"] ** 2, r["growth_bytes"])
            for r in report["results"]
            if r["mode"] == mode and not r.get("skipped")
        ]
        if len({x for x, _ in pts}) < 2:
            continue
        n = len(pts)
        mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
        slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        fixed = my - slope * mx
        table = {}
        for gib in GPU_SIZES_GIB:
            free = (gib - CONTEXT_GIB) * 2**30 - persistent - fixed
            table[f"{gib}GB"] = {str(c): max(0, int(free // (slope * c * c))) for c in FIT_CROPS}
        fits[mode] = {"fixed_bytes": fixed, "bytes_per_pixel": slope, "max_batch": table}
    return fits


def print_fits(report: dict) -> None:
    fits = report.get("gpu_extrapolation") or {}
    if not fits:
        return
    print(
        f"\nExtrapolated GPU training (fp32 weights + momentum {2 * 4 * report['params'] / 2**30:.2f} GiB, "
        f"context {CONTEXT_GIB} GiB; growth = fixed + bytes/pixel x batch x crop^2 fitted to the rows above)"
    )
    print(
        f"{'mode':<10} {'fixed MiB':>9} {'KiB/px':>7}  "
        + "  ".join(f"{g}GB max batch @" + "/".join(str(c) for c in FIT_CROPS) for g in GPU_SIZES_GIB)
    )
    for mode, fit in fits.items():
        cols = "  ".join(
            f"{'/'.join(str(fit['max_batch'][f'{g}GB'][str(c)]) for c in FIT_CROPS):>{len(f'{g}GB max batch @') + 15}}"
            for g in GPU_SIZES_GIB
        )
        print(f"{mode:<10} {fit['fixed_bytes'] / 2**20:>9.0f} {fit['bytes_per_pixel'] / 1024:>7.2f}  {cols}")


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
    parser.add_argument(
        "--rss", action="store_true", help="also measure RSS growth in a fresh process per batch/crop (CPU)"
    )
    parser.add_argument("--modes", type=lambda s: s.split(","), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    if args.quick:
        args.batches, args.crops = [2], [473]
    report = run(args)
    report["gpu_extrapolation"] = fit_memory(report)
    print_table(report)
    print_fits(report)
    write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
