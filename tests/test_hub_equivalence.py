"""Checkpoint files in each project's own format load through load_pretrained and reproduce its outputs."""

import numpy as np
import pytest
import torch

from pspnet_lib import load_pretrained

from .reference import load_case, reference_state_dict, relative_error


def _write_checkpoint(case: str, data: dict, path):
    sd = reference_state_dict(data["keys"], data["meta"]["seed"])
    if data["meta"]["source"] == "mmseg":
        # mmsegmentation: weights under "state_dict", next to "meta" with the dataset's classes.
        classes = tuple(f"class{i}" for i in range(data["meta"]["classes"]))
        palette = [[i, 2 * i, 3 * i] for i in range(data["meta"]["classes"])]
        torch.save({"meta": {"mmseg_version": "1.2.2", "CLASSES": classes, "PALETTE": palette}, "state_dict": sd}, path)
    else:
        # hszhao/semseg: a DataParallel model's state dict under "state_dict".
        torch.save({"epoch": 100, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)


@pytest.mark.parametrize("case", ["mmseg_r50_d8", "mmseg_r18_d8", "semseg_psp50"])
def test_reference_checkpoint_file_matches_reference_outputs(case, tmp_path):
    data = load_case(case)
    path = tmp_path / f"{case}.pth"
    _write_checkpoint(case, data, path)

    model = load_pretrained(path)  # layout detected from the keys, config from the shapes

    assert model.load_report.ok and not model.load_report.reinitialised
    assert not model.training
    with torch.no_grad():
        main, aux = model(data["input"], return_aux=True)
    assert relative_error(main.numpy(), data["out"]) <= 1e-4
    assert relative_error(aux.numpy(), data["aux"]) <= 1e-4
    if data["meta"]["source"] == "mmseg":
        assert model.pretrained_cfg["classes"] == [f"class{i}" for i in range(data["meta"]["classes"])]
        assert model.pretrained_cfg["source_format"] == "mmseg"
    else:
        assert model.config.align_corners and not model.config.contract_dilation and model.config.stem_channels == 128


def test_explicit_format_and_wrong_format_message(tmp_path):
    data = load_case("mmseg_r18_d8")
    path = tmp_path / "r18.pth"
    _write_checkpoint("mmseg_r18_d8", data, path)
    model = load_pretrained(path, format="mmseg")
    with torch.no_grad():
        assert relative_error(model(data["input"]).numpy(), data["out"]) <= 1e-4
    with pytest.raises(ValueError, match=r"have no counterpart in PSPNet.*format='semseg'"):
        load_pretrained(path, format="semseg")


def test_converted_safetensors_reproduce_the_reference(tmp_path):
    """load -> save_pretrained -> load gives the reference numbers again, from safetensors only."""
    data = load_case("mmseg_r18_d8")
    path = tmp_path / "r18.pth"
    _write_checkpoint("mmseg_r18_d8", data, path)
    load_pretrained(path).save_pretrained(tmp_path / "converted")
    model = load_pretrained(tmp_path / "converted")
    with torch.no_grad():
        main, aux = model(data["input"], return_aux=True)
    np.testing.assert_array_less(relative_error(main.numpy(), data["out"]), 1e-4)
    np.testing.assert_array_less(relative_error(aux.numpy(), data["aux"]), 1e-4)
