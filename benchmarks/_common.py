"""Helpers shared by the benchmark scripts: machine description, timing, atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

# Run from a checkout without installing: make ``import pspnet_lib`` find the source tree.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device, threads: int) -> dict:
    """CPU model and its AVX-512/AMX flags, GPU name, torch version, threads, load average."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "threads": threads, "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def write_json(report: dict, path: Path) -> None:
    """Write ``report`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
