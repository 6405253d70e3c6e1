"""Issue 19: ``torchrun --nproc_per_node 2 -m pspnet_lib predict``: each rank takes its share of
the inputs and writes its own manifest part; the union equals one process's outputs byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet_lib.cli import main
from pspnet_lib.inference.manifest import read_manifest

from .infer_utils import save_model_dir, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two ranks start Python, torch and the model (~10 s on 2 cores)
def test_two_ranks_split_the_inputs_and_together_equal_one_process(tmp_path):
    model = tiny_model(num_classes=3)
    model.pretrained_cfg = {"inference": {"mode": "whole"}}
    weights = save_model_dir(model, tmp_path / "weights")
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    for i in range(8):
        (photos / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 32 + 8 * (i % 3), 3), dtype=np.uint8)).save(
            photos / f"d{i % 2}/p{i // 2}.png"
        )
    common = [str(photos), "-r", "--weights", str(weights), "--num-workers", "0", "--device", "cpu"]
    assert main(["predict", *common, "--out", str(tmp_path / "single")]) == 0

    out = tmp_path / "ranks"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "pspnet_lib", "-q", "predict", *common, "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(line.split(":")[0] for line in result.stdout.splitlines()) == ["shard 0/2", "shard 1/2"]

    def outputs(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}

    assert outputs(out) == outputs(tmp_path / "single") and len(outputs(out)) == 8
    parts = [read_manifest(out / f"manifest-{r:05d}-of-00002.jsonl") for r in range(2)]
    inputs = [[r["input"] for r in part] for part in parts]
    assert all(inputs) and not set(inputs[0]) & set(inputs[1])  # no input done twice
    assert sorted(inputs[0] + inputs[1]) == sorted(r["input"] for r in read_manifest(tmp_path / "single"))
    assert {r["status"] for part in parts for r in part} == {"done"}
