"""The workflows of `pspnet eval` and `pspnet export` as library functions the CLI calls."""

from __future__ import annotations

import json

import pytest
import torch

from pspnet_lib import InferenceProtocol
from pspnet_lib.cli import main
from pspnet_lib.data import build_dataset, eval_transforms, write_synthetic_dataset
from pspnet_lib.engine import SettingError, evaluate, evaluate_dataset

from .infer_utils import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflows")
    data = root / "data"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 0.5, "val": 0.5})
    model = tiny_model(num_classes=6)
    model.save_pretrained(root / "model")
    return root / "model", data, model


@pytest.fixture(scope="module")
def evaluated(saved, tmp_path_factory):
    weights, data, _ = saved
    report = tmp_path_factory.mktemp("report") / "metrics.json"
    result = evaluate_dataset(
        weights, data, dataset="folder", split="val", protocol={"flip": True}, device="cpu", json_path=report
    )
    return result, report


def test_evaluate_dataset_is_evaluate_on_the_built_split(saved, evaluated):
    weights, data, model = saved
    result, report = evaluated
    dataset = build_dataset("folder", data, "val", eval_transforms(normalize=False))
    expected = evaluate(model, dataset, protocol=InferenceProtocol(flip=True), progress=False)
    assert result.metrics["mIoU"] == expected["mIoU"] and result.metrics["aAcc"] == expected["aAcc"]
    assert (result.dataset, result.split, result.images) == ("folder", "val", len(dataset))
    assert result.protocol == InferenceProtocol(flip=True) and result.classes == dataset.classes
    assert json.loads(report.read_text())["mIoU"] == pytest.approx(expected["mIoU"])
    assert result.summary() == f"{weights} on folder val ({len(dataset)} images, fp32, whole, flip):"


def test_pspnet_eval_prints_what_evaluate_dataset_returns(saved, evaluated, capsys):
    weights, data, _ = saved
    result, _ = evaluated
    argv = ["eval", "--weights", str(weights), "--dataset", "folder", "--data-root", str(data), "--split", "val"]
    assert main([*argv, "--flip", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == f"{result.summary()}\n{result.table()}\n"


def test_evaluate_dataset_errors_name_the_python_arguments(saved, tmp_path):
    weights, data, _ = saved
    with pytest.raises(SettingError, match=r"^data_root .*nowhere: no such folder"):
        evaluate_dataset(weights, tmp_path / "nowhere")
    with pytest.raises(SettingError, match=r"refusing to write .*; choose another json_path file"):
        evaluate_dataset(weights, data, dataset="folder", json_path=data / "classes.txt")
    with pytest.raises(SettingError, match=r"stride must be at most the crop.*\(set by protocol\)"):
        evaluate_dataset(weights, data, dataset="folder", protocol={"mode": "slide", "crop": 16, "stride": 32})


def test_a_format_row_is_a_pspnet_export_format(saved, tmp_path, monkeypatch, capsys):
    from pspnet_lib.inference import export_formats

    weights, _, _ = saved
    written = []

    def write_state(model, path, *, dynamic, batch_size, **common):
        written.append((batch_size, common["height"]))
        torch.save(model.state_dict(), path)

    toy = export_formats.ExportFormat("state-dict", ".pth", 3, write_state)
    monkeypatch.setitem(export_formats.EXPORT_FORMATS, "state-dict", toy)
    out = tmp_path / "model.pth"
    argv = ["export", "--weights", str(weights), "--format", "state-dict", "--out", str(out), "--height", "64"]
    assert main(argv) == 0
    assert written == [(3, 64)] and out.is_file()
    assert capsys.readouterr().out.startswith(f"wrote {out} (state-dict, dynamic shape, ")
    with pytest.raises(SettingError, match=r"^check, opset and onnx_exporter apply to format onnx only$"):
        export_formats.export_model(weights, tmp_path / "again.pth", format="state-dict", check=True)
    with pytest.raises(SettingError, match=r"already exists; pass overwrite=True to replace it"):
        export_formats.export_model(weights, out, format="state-dict")
    with pytest.raises(SettingError, match=r"refusing to write .*; choose another out file"):
        export_formats.export_model(weights, weights / "config.json", format="state-dict", overwrite=True)
