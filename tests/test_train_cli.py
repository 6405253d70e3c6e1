"""``pspnet train`` / ``pspnet eval`` on a tiny folder dataset, recipes, and their error messages."""

import json
import logging

import pytest
import torch

from pspnet_lib.cli import main
from pspnet_lib.data import DATASETS, write_synthetic_dataset
from pspnet_lib.engine.checkpoint import load_checkpoint
from pspnet_lib.recipes import RECIPES, load_recipe

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"backbone": "resnet18", "stem": "standard", "head_channels": 32, "aux_channels": 16, "ppm_channels": 8}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "scenes"
    write_synthetic_dataset(root, 8, size=(32, 32), seed=0, splits={"train": 0.75, "val": 0.25})
    return root


def _recipe(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps(
            {
                "_note": "a test recipe",
                "model": TINY_MODEL,
                "augment": {"crop_size": [32, 32], "scale_range": [0.75, 1.25]},
                "train": {"batch_size": 2, "log_interval": 2, "ckpt_interval": 2, "num_workers": 0},
            }
        )
    )
    return path


def test_cli_train_resume_and_eval_on_a_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "train",
        "--recipe",
        str(_recipe(tmp_path)),
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--out",
        str(out),
        "--lr",
        "0.01",
        "--seed",
        "1",
        "--no-progress",
    ]
    assert main(base + ["--iters", "4"]) == 0
    printed = capsys.readouterr().out
    assert "final: mIoU" in printed and str(out / "model") in printed
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["iteration"] == 4
    config = json.loads((out / "train_config.json").read_text())
    assert config["lr"] == 0.01 and config["batch_size"] == 2 and config["seed"] == 1  # flags over the recipe

    # The same command again would mix two runs: refused with a one-line message, exit code 1.
    assert main(base + ["--iters", "4"]) == 1
    # Continue the run for longer.
    assert main(base + ["--iters", "6", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["iteration"] == 6
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["iteration"] == 6

    # Evaluation of the exported model and of the checkpoint, same protocol -> the trainer's numbers.
    for weights in (out / "model", out / "checkpoints" / "latest.pt"):
        report = tmp_path / f"eval-{weights.name}.json"
        assert (
            main(
                [
                    "eval",
                    "--weights",
                    str(weights),
                    "--dataset",
                    "folder",
                    "--data-root",
                    str(folder),
                    "--split",
                    "val",
                    "--json",
                    str(report),
                ]
            )
            == 0
        )
        metrics = json.loads(report.read_text())
        assert set(metrics["per_class"]) == {"sky", "ground", "disc", "box", "triangle", "stripes"}
        assert metrics["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-9)
        assert metrics["pixels"] == 2 * 32 * 32
    table = capsys.readouterr().out
    assert "mIoU" in table and "stripes" in table
    # Another protocol gives a valid (and separately computed) result.
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "model"),
                "--dataset",
                "folder",
                "--data-root",
                str(folder),
                "--split",
                "val",
                "--mode",
                "slide",
                "--crop",
                "24",
                "--stride",
                "16",
                "--flip",
            ]
        )
        == 0
    )


def test_cli_errors_are_one_line_messages(folder, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    assert (
        main(["train", "--dataset", "folder", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
        == 1
    )
    assert "is not a segmentation folder" in caplog.text
    caplog.clear()
    # eval checks the data root before loading (or downloading) any weights
    assert main(["eval", "--weights", "nowhere", "--data-root", str(tmp_path / "missing")]) == 1
    assert f"--data-root {tmp_path / 'missing'}: no such folder" in caplog.text and "nowhere" not in caplog.text
    caplog.clear()
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(folder),
                "--num-classes",
                "3",
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 1
    )
    assert "--num-classes 3" in caplog.text and "6 classes" in caplog.text
    caplog.clear()
    assert main(["train", "--recipe", "voc-mmseg-1k"]) == 1
    assert "voc-mmseg-20k" in caplog.text  # the message lists what exists
    caplog.clear()
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(folder),
                "--amp",
                "fp16",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "o3"),
                "--iters",
                "1",
            ]
        )
        == 1
    )
    assert "bf16" in caplog.text


def test_recipes_resolve_to_valid_configs(capsys):
    from pspnet_lib.engine import TrainConfig

    for name in RECIPES:
        recipe = load_recipe(name)
        config = TrainConfig.from_dict(recipe["train"])
        assert config.iters >= 20000 and recipe["gpus"] * config.batch_size in (8, 16)
        assert recipe["dataset"] in DATASETS and recipe["dataset"] != "folder"
    assert RECIPES["voc-semseg"]["train"]["head_lr_mult"] == 10 and RECIPES["voc-mmseg-20k"]["train"]["min_lr"] == 1e-4
    assert RECIPES["cityscapes-mmseg-769-40k"]["train"]["eval_mode"] == "slide"
    assert main(["train", "--list-recipes"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECIPES)
    assert main(["train", "--recipe", "ade20k-mmseg-80k", "--iters", "10", "--amp", "bf16", "--print-config"]) == 0
    settings = json.loads(capsys.readouterr().out)
    assert settings["dataset"] == "ade20k" and settings["num_classes"] == 150
    assert settings["train"]["iters"] == 10 and settings["train"]["amp"] == "bf16" and settings["train"]["lr"] == 0.01
    assert settings["augment"]["base_size"] == [2048, 512]


def test_backbone_weights_from_torchvision_layout(tmp_path):
    from pspnet_lib import build_pspnet

    torch.manual_seed(3)
    source = build_pspnet("resnet18", 4, stem="standard")
    # A torchvision ImageNet checkpoint: backbone keys without the prefix, plus the fc classifier.
    state = {k[len("backbone.") :]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    target = build_pspnet("resnet18", 7, weights_backbone=path)  # the stem follows the weights
    assert target.config.stem == "standard"
    assert sorted(target.load_report.loaded) == sorted(f"backbone.{k}" for k in state if not k.startswith("fc."))
    for key, value in target.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[key])
    with pytest.raises(ValueError, match="mmseg-b"):
        build_pspnet("resnet18", 7, stem="deep", weights_backbone=path)  # an explicit deep stem does not fit


def test_same_seed_reproduces_a_run_from_scratch(folder, tmp_path):
    """Issue 10 item 3: --seed is applied before the model is built, so two from-scratch runs (the
    second one a --resume of a run killed before its first checkpoint) give identical weights."""
    recipe = _recipe(tmp_path)

    def train(out, *extra):
        # Whatever the global RNG holds beforehand (here: something else entirely) must not matter.
        torch.manual_seed(len(str(out)) * 7919)
        assert (
            main(
                [
                    "train",
                    "--recipe",
                    str(recipe),
                    "--dataset",
                    "folder",
                    "--data-root",
                    str(folder),
                    "--out",
                    str(out),
                    "--seed",
                    "3",
                    "--iters",
                    "2",
                    "--crop-size",
                    "24",
                    "--no-val",
                    "--no-progress",
                    *extra,
                ]
            )
            == 0
        )
        return (out / "model" / "model.safetensors").read_bytes()

    first = train(tmp_path / "a")
    again = train(tmp_path / "restarted", "--resume")  # no checkpoint there yet: starts afresh, same init
    assert first == again
    other = train(tmp_path / "b", "--seed", "4")  # the last --seed wins: a different run
    assert other != first
