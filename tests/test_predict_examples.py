"""The examples/ scripts run (offline: a tiny local model instead of zoo weights, reduced budgets)."""

from __future__ import annotations

import importlib.util
import logging
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .infer_utils import CLASSES, save_model_dir, tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> int:
    """Run an example in this process (no second torch import) as ``python examples/<script> args``."""
    argv = sys.argv
    sys.argv = [str(EXAMPLES / script), *args]
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = argv
    return 0


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = tiny_model()
    model.pretrained_cfg = {"classes": CLASSES, "inference": {"mode": "whole", "resize": None}}
    return save_model_dir(model, tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(autouse=True)
def _keep_logging_config():
    # The examples call logging.basicConfig; keep pytest's handlers as they were.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_predict_image_example(weights, tmp_path):
    out = tmp_path / "predictions"
    assert (
        _run("predict_image.py", "--weights", str(weights), "--out", str(out), "--size", "64", "--device", "cpu") == 0
    )
    for stem, size in (("astronaut", (400, 400)), ("chelsea", (451, 300)), ("rocket", (480, 320))):
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.mode == "P" and mask.size == size
        assert Image.open(out / f"{stem}_overlay.png").size == size
        assert Image.open(out / f"{stem}_panel.png").width > 2 * size[0]


def test_export_onnx_example(weights, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    caplog.set_level(logging.INFO)
    code = _run(
        "export_onnx.py",
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--exporter",
        "torchscript",
        "--height",
        "64",
        "--width",
        "64",
    )
    assert code == 0 and out.is_file()
    agreements = [
        float(r.getMessage().split("agrees with PyTorch on ")[1].split("%")[0])
        for r in caplog.records
        if "agrees with PyTorch" in r.getMessage()
    ]
    assert len(agreements) == 3 and min(agreements) > 99.9
    for stem in ("astronaut", "chelsea", "rocket"):
        assert Image.open(tmp_path / f"tiny_{stem}.png").mode == "P"


def test_push_to_hub_example_never_pushes_without_the_flag(weights, tmp_path, monkeypatch, caplog):
    from pspnet_lib import PSPNet

    if not hasattr(PSPNet, "save_pretrained"):
        pytest.skip("PSPNet.save_pretrained (the hub integration) is not in this branch")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    calls = []
    monkeypatch.setattr(PSPNet, "push_to_hub", lambda self, *a, **k: calls.append((a, k)), raising=False)
    caplog.set_level(logging.INFO)
    out = tmp_path / "export"
    assert _run("push_to_hub.py", "--weights", str(weights), "--out", str(out)) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert "not pushing" in caplog.text and not calls
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert _run("push_to_hub.py", "--weights", str(weights), "--out", str(out), "--repo-id", "me/x", "--push") == 2
    assert "no Hugging Face token" in caplog.text and not calls


def test_finetune_folder_example(tmp_path, caplog):
    if importlib.util.find_spec("pspnet_lib.engine.trainer") is None:
        pytest.skip("the trainer (pspnet_lib.engine.trainer) is not in this branch")
    caplog.set_level(logging.INFO)
    code = _run(
        "finetune_folder.py",
        "--synthetic",
        "--backbone",
        "resnet18",
        "--iters",
        "6",
        "--crop",
        "48",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "ft"),
        "--device",
        "cpu",
    )
    assert code == 0
    assert (tmp_path / "ft" / "example_overlay.png").is_file()
    assert "validation mIoU" in caplog.text
    assert np.isfinite(float(caplog.text.split("validation mIoU ")[1].split(";")[0]))
