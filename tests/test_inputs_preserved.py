"""No command writes over its own inputs, --overwrite/--force or not (issue 10 item 4).

Each command that writes files derived from inputs (predict: tests/test_predict_cli.py; here export,
convert, train and the sample-photo demo) refuses, before any work, an output that resolves to an
input, with one line naming both and another output to choose.
"""

from __future__ import annotations

import logging

import pytest

from pspnet_lib.cli import main
from pspnet_lib.data import write_synthetic_dataset

from .infer_utils import save_model_dir, tiny_model


@pytest.fixture
def model_dir(tmp_path):
    return save_model_dir(tiny_model(), tmp_path / "model")


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _last_error(caplog):
    message = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR][-1]
    assert "\n" not in message
    return message


def test_export_over_the_weights_is_refused(model_dir, caplog):
    before = _snapshot(model_dir)
    assert (
        main(
            [
                "export",
                "--weights",
                str(model_dir),
                "--format",
                "exported-program",
                "--out",
                str(model_dir / "model.safetensors"),
                "--overwrite",
            ]
        )
        == 1
    )
    message = _last_error(caplog)
    assert "model.safetensors" in message and "the input" in message and "--out" in message
    assert _snapshot(model_dir) == before


def test_convert_a_folder_into_itself_is_refused(model_dir, tmp_path, caplog):
    before = _snapshot(model_dir)
    link = tmp_path / "same-folder"
    link.symlink_to(model_dir, target_is_directory=True)
    for out in (model_dir, link):
        assert main(["convert", str(model_dir), str(out), "--force"]) == 1
        message = _last_error(caplog)
        assert "the input" in message and f"{out.name}-converted" in message
    assert _snapshot(model_dir) == before


def test_train_refuses_a_run_directory_over_its_inputs(model_dir, tmp_path, caplog):
    data = tmp_path / "scenes"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 0.5, "val": 0.5})
    before = _snapshot(data)
    assert main(["train", "--dataset", "folder", "--data-root", str(data), "--out", str(data), "--iters", "1"]) == 1
    assert "--data-root" in _last_error(caplog) and "scenes-run" in _last_error(caplog)
    # fine-tuning a run's final model into the same run directory would replace it at the end
    run = model_dir.parent
    weights_before = _snapshot(model_dir)
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(data),
                "--out",
                str(run),
                "--weights",
                str(model_dir),
                "--iters",
                "1",
            ]
        )
        == 1
    )
    assert "the input" in _last_error(caplog)
    assert _snapshot(data) == before and _snapshot(model_dir) == weights_before
    assert not (run / "checkpoints").exists() and not (data / "checkpoints").exists()


def test_weights_demo_never_writes_over_its_weights(tmp_path, caplog):
    model = tiny_model()
    folder = save_model_dir(model, tmp_path / "out")
    victim = folder / "astronaut_mask.png"  # a weights folder holding a file of an output's name
    victim.write_bytes(b"not a picture")
    assert main(["demo", "--weights", str(folder), "--out", str(folder), "--overwrite"]) == 1
    assert "astronaut_mask.png" in _last_error(caplog)
    assert victim.read_bytes() == b"not a picture"


def test_eval_report_over_the_weights_is_refused(model_dir, tmp_path, caplog):
    before = _snapshot(model_dir)
    assert (
        main(
            [
                "eval",
                "--weights",
                str(model_dir),
                "--dataset",
                "folder",
                "--data-root",
                str(tmp_path),
                "--json",
                str(model_dir / "config.json"),
            ]
        )
        == 1
    )
    assert "config.json" in _last_error(caplog) and "--json" in _last_error(caplog)
    assert _snapshot(model_dir) == before
