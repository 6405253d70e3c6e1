"""One short GPU check: R50-D8 inference latency at 512x512 and a batch-8 x 473^2 training step.

    python benchmarks/gpu_check.py            # needs CUDA; writes benchmarks/results/gpu_*.json

Runs benchmarks/inference.py (fp32, autocast fp16/bf16, fast fp32/fp16/bf16; 20 rounds) and
benchmarks/train_step.py (fp32, bf16, bf16+ckpt, fp16, fp16+ckpt at batch 8, crop 473) and prints
whether the checkpointed step fits in 11 GB (peak allocated memory, which excludes the CUDA
context's ~0.3-0.5 GB). Written without access to a GPU: untested there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import inference
import torch
import train_step


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    out = Path("benchmarks/results")
    inference.main(
        ["--models", "resnet50", "--sizes", "512", "--device", "cuda", "--json", str(out / "gpu_inference.json")]
    )
    train_step.main(
        ["--batches", "8", "--crops", "473", "--device", "cuda", "--json", str(out / "gpu_train_step.json")]
    )
    report = json.loads((out / "gpu_train_step.json").read_text())
    for row in report["results"]:
        if row.get("skipped"):
            continue
        fits = "fits" if row["peak_bytes"] <= 11e9 else "does NOT fit"
        print(f"{row['mode']:<10} batch 8 x 473^2: peak {row['peak_bytes'] / 1e9:.1f} GB allocated -> {fits} in 11 GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
