"""``pspnet demo``: a reduced run completes, writes its files and clearly beats a constant prediction."""

import json
import logging

import pytest
import torch
from PIL import Image

from pspnet_lib.cli import main

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the function-level one_thread fixture
    try:
        code = main(
            [
                "demo",
                "--out",
                str(out),
                "--iters",
                "30",
                "--batch-size",
                "4",
                "--image-size",
                "48",
                "--train-images",
                "32",
                "--val-images",
                "8",
                "--no-progress",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return code, out


def test_demo_reduced_budget_learns_and_writes_its_files(demo_run, capsys):
    code, out = demo_run
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 30 and metrics["val_images"] == 8
    assert set(metrics["per_class"]) == {"sky", "ground", "disc", "box", "triangle", "stripes"}
    baseline = metrics["baseline_constant"]["mIoU"]
    # Predicting the majority class everywhere scores ~4%; 30 steps reach ~26% (observed), and an
    # untrained or broken network stays near the baseline.
    assert metrics["mIoU"] > max(2.5 * baseline, baseline + 0.1), metrics
    predictions = Image.open(out / "predictions.png")
    assert predictions.mode == "RGB" and predictions.width > 3 * 48 and predictions.height > 4 * 48
    # The picture carries its score (drawn in its title, which the PNG also stores as text).
    assert f"mIoU {100 * metrics['mIoU']:.1f}%" in predictions.text["Title"]
    assert f"a constant prediction: {100 * baseline:.1f}%" in predictions.text["Title"]
    samples = sorted((out / "overlays").glob("sample_*.png"))
    assert len(samples) == 4 and all(Image.open(p).width >= 3 * 48 for p in samples)
    # Each overlay carries a legend: to the right of the three panels, swatches in the class colours.
    from pspnet_lib.data import SyntheticScenes

    palette = {tuple(c) for c in SyntheticScenes(1, (48, 48)).palette}
    for sample in samples:
        picture = Image.open(sample).convert("RGB")
        panels = 3 * 4 * 48 + 2 * 4  # three panels upscaled 4x (192 px), 4 px gaps
        key = picture.crop((panels, 0, picture.width, picture.height))
        assert key.width > 20 and {c for _, c in key.getcolors(1 << 16)} & palette
    curve = Image.open(out / "training_curve.png")
    assert curve.size == (720, 400) and len(curve.getcolors(1 << 16) or []) > 3  # something was drawn
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    from pspnet_lib import load_pretrained as load_model

    model = load_model(out / "model")
    assert model.pretrained_cfg["classes"][0] == "sky" and model.config.num_classes == 6
    assert model.config.base_channels == 32 and model.backbone.out_channels == [32, 64, 128, 256]  # half width


def test_cli_defaults_are_run_demos():
    """``pspnet demo`` and ``run_demo()`` train the same default run (the one the README measures)."""
    import argparse
    import inspect

    from pspnet_lib.cli.demo import register
    from pspnet_lib.demo import run_demo

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = vars(parser.parse_args(["demo"]))
    defaults = {k: p.default for k, p in inspect.signature(run_demo).parameters.items()}
    for name in ("iters", "image_size", "train_images", "val_images", "batch_size", "lr", "seed", "num_workers"):
        assert args[name] == defaults[name], name
    assert (defaults["iters"], defaults["image_size"]) == (400, 96)


def test_demo_refuses_to_overwrite_silently(demo_run, caplog):
    _, out = demo_run
    caplog.set_level(logging.ERROR)
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--iters",
                "2",
                "--image-size",
                "32",
                "--train-images",
                "4",
                "--val-images",
                "2",
                "--no-progress",
            ]
        )
        == 1
    )
    assert "--overwrite" in caplog.text
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--iters",
                "2",
                "--image-size",
                "32",
                "--train-images",
                "4",
                "--val-images",
                "2",
                "--no-progress",
                "--overwrite",
            ]
        )
        == 0
    )
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 2
    # --overwrite replaced every file of the earlier run: no validation record of its iteration 7 is left
    assert (out / "validation").is_dir() and not list((out / "validation").glob("iter_00000007*"))


def test_demo_flags_are_checked_before_anything_is_written(tmp_path, capsys, caplog):
    with pytest.raises(SystemExit):
        main(["demo", "--device", "gpu", "--out", str(tmp_path / "gpu")])
    assert "argument --device: expected a device such as cpu, cuda or cuda:1, got 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()
    (tmp_path / "afile").write_text("mine")
    caplog.set_level(logging.ERROR)
    assert main(["demo", "--out", str(tmp_path / "afile"), "--iters", "1"]) == 1
    assert "is a file, not a folder; choose another --out" in caplog.text
    assert (tmp_path / "afile").read_text() == "mine"


def test_demo_with_weights_segments_the_sample_photos(demo_run, tmp_path):
    pytest.importorskip("pspnet_lib.inference.predict", reason="predict() is built on the inference branch")
    pytest.importorskip("pspnet_lib.assets", reason="the sample photos come with the inference branch")
    _, out = demo_run
    photos = tmp_path / "photos"
    assert main(["demo", "--weights", str(out / "model"), "--out", str(photos)]) == 0
    overlays = sorted(photos.glob("*_overlay.png"))
    masks = sorted(photos.glob("*_mask.png"))
    assert len(overlays) == len(masks) >= 2
    assert Image.open(masks[0]).mode == "P"
