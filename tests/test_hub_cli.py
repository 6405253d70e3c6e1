"""`pspnet convert`, `pspnet list`, `pspnet info`, `pspnet download`."""

import json

import pytest
import torch

from pspnet_lib import load_pretrained
from pspnet_lib.cli import main

from .hub_utils import write_mmseg_checkpoint
from .reference import relative_error


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "pspnet_r18.pth"
    return path, write_mmseg_checkpoint(path)


def test_convert_then_load(r18_file, tmp_path, capsys):
    path, data = r18_file
    out = tmp_path / "converted"
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(["road", "car", "sky", "tree", "person"]) + "\n")
    assert main(["convert", str(path), str(out), "--classes", str(classes)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 5 and summary["load_report"]["missing"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = load_pretrained(out)
    assert model.pretrained_cfg["classes"][1] == "car"
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4


def test_convert_with_overrides_and_num_classes(r18_file, tmp_path, capsys):
    path, _ = r18_file
    out = tmp_path / "c"
    assert (
        main(["convert", str(path), str(out), "--format", "mmseg", "--align-corners", "--num-classes", "3", "--no-aux"])
        == 0
    )
    model = load_pretrained(out)
    assert model.config.align_corners and model.num_classes == 3 and model.aux_head is None


def test_convert_errors_are_one_line_messages(r18_file, tmp_path, caplog):
    path, _ = r18_file
    out = tmp_path / "busy"
    out.mkdir()
    (out / "x").write_text("keep me")
    assert main(["convert", str(path), str(out)]) == 1
    assert "is not empty" in caplog.text and (out / "x").read_text() == "keep me"
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "o")]) == 1
    assert "not a zoo name, an existing file" in caplog.text
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    assert main(["convert", str(path), str(tmp_path / "o2"), "--classes", str(classes)]) == 1
    assert "2 class names given for a model with 5 classes" in caplog.text


def test_list_and_info(tmp_path, capsys):
    assert main(["list", "*ade20k*", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "dataset", "classes", "mIoU", "ms+flip", "cached"]
    row = next(line for line in lines if line.startswith("pspnet_r50-d8_ade20k-512x512-80k "))
    assert row.split()[1:] == ["ade20k", "150", "41.13", "41.94", "no"]
    assert main(["list", "--json", "--task", "backbone"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"resnet50_v1c", "resnet18_torchvision"}

    assert main(["info", "pspnet_r101-d8_cityscapes-769x769-80k", "--classes"]) == 0
    out = capsys.readouterr().out
    assert "sha256_prefix: dba412fa" in out and '"mode": "slide"' in out and "  18 bicycle" in out
    assert main(["info", "pspnet_r101-d8_cityscape"]) == 1


def test_download_offline_message(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "resnet18_v1c", "--cache-dir", str(tmp_path)]) == 1
    assert "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth" in caplog.text
    assert str(tmp_path / "resnet18_v1c-b5776b93.pth") in caplog.text
