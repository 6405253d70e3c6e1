"""Any input channel count end to end (predict, pspnet predict, datasets, export) and fixed pixel conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import predict
from pspnet_lib.cli import main
from pspnet_lib.core.images import load_image, read_image, to_image_tensor, to_rgb_tensor
from pspnet_lib.core.pretrained_cfg import input_stats
from pspnet_lib.data import FolderDataset
from pspnet_lib.inference.export import ExportWrapper

from .infer_utils import save_model_dir, tiny_model

RNG = np.random.default_rng(0)


def _model(channels: int, mean, std):
    model = tiny_model(in_channels=channels)
    model.pretrained_cfg = {"mean": mean, "std": std, "inference": {"mode": "whole", "resize": None}}
    return model


def _expected(model, array_hwc_uint8, mean, std):
    x = torch.from_numpy(array_hwc_uint8).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model(x).argmax(1)[0]


def test_one_channel_model_takes_grey_pictures_as_one_channel():
    model = _model(1, [0.5], [0.25])
    grey = RNG.integers(0, 256, (37, 45), dtype=np.uint8)
    result = predict(model, grey)
    expected = _expected(model, grey[..., None], [0.5], [0.25])
    assert torch.equal(result.mask, expected)
    assert result.image.shape == (37, 45, 3)  # shown as a grey picture
    assert torch.equal(predict(model, Image.fromarray(grey)).mask, expected)  # PIL "L" too


def test_four_channel_model_takes_hw4_arrays():
    mean, std = [0.4, 0.5, 0.6, 0.3], [0.2, 0.25, 0.3, 0.1]
    model = _model(4, mean, std)
    array = RNG.integers(0, 256, (33, 29, 4), dtype=np.uint8)
    assert torch.equal(predict(model, array).mask, _expected(model, array, mean, std))


def test_channel_mismatch_is_one_clear_error_before_the_network_runs():
    model = _model(1, [0.5], [0.25])
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r"has 3 channels .* the model takes 1 \(config.in_channels\)"):
        predict(model, RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    model4 = _model(4, [0.5] * 3, [0.25] * 3)  # stored statistics of the wrong length
    with pytest.raises(ValueError, match=r"takes 4 input channel\(s\) .* pretrained_cfg\['mean'\] has 3 values"):
        predict(model4, RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8))
    assert not calls
    with pytest.raises(ValueError, match=r"moveaxis"):  # (C, H, W) NumPy given to a 4-channel model
        to_image_tensor(np.zeros((4, 20, 30), np.uint8), 4)


def test_pspnet_predict_on_one_and_four_channel_models(tmp_path):
    grey = RNG.integers(0, 256, (26, 31), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    one = _model(1, [0.5], [0.25])
    out = tmp_path / "out1"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "grey.png"),
                "--weights",
                str(save_model_dir(one, tmp_path / "m1")),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert np.array_equal(
        np.array(Image.open(out / "grey.png")), _expected(one, grey[..., None], [0.5], [0.25]).numpy()
    )

    mean, std = [0.4, 0.5, 0.6, 0.3], [0.2, 0.25, 0.3, 0.1]
    four = _model(4, mean, std)
    bands = RNG.integers(0, 256, (28, 23, 4), dtype=np.uint8)
    inputs = tmp_path / "bands"
    inputs.mkdir()
    np.save(inputs / "a.npy", bands)
    pages = [Image.fromarray(np.ascontiguousarray(bands[..., i])) for i in range(4)]
    pages[0].save(inputs / "b.tif", save_all=True, append_images=pages[1:])  # 4-page TIFF, one band per page
    out = tmp_path / "out4"
    assert (
        main(
            [
                "predict",
                str(inputs),
                "--weights",
                str(save_model_dir(four, tmp_path / "m4")),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--overlay",
            ]
        )
        == 0
    )
    expected = _expected(four, bands, mean, std).numpy()
    assert np.array_equal(np.array(Image.open(out / "a.png")), expected)
    assert np.array_equal(np.array(Image.open(out / "b.png")), expected)


def test_datasets_and_export_feed_in_channels(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    bands = RNG.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    np.save(root / "images" / "a.npy", bands)
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "masks" / "a.png")
    image, _ = FolderDataset(root, classes=["x", "y"], in_channels=4)[0]
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(bands).permute(2, 0, 1))
    with pytest.raises(ValueError, match=r"has 4 channels .* takes 2"):
        FolderDataset(root, classes=["x", "y"], in_channels=2)[0]
    grey = RNG.integers(0, 256, (12, 16), dtype=np.uint8)
    (root / "images" / "a.npy").unlink()
    Image.fromarray(grey).save(root / "images" / "a.png")
    image, _ = FolderDataset(root, classes=["x", "y"], in_channels=1)[0]
    assert torch.equal(image, torch.from_numpy(grey)[None])

    model = _model(4, [0.4, 0.5, 0.6, 0.3], [0.2, 0.25, 0.3, 0.1])
    wrapper = ExportWrapper(model, preprocess=True).eval()
    x = torch.from_numpy(bands).permute(2, 0, 1)[None]
    with torch.no_grad():
        assert torch.equal(
            wrapper(x).argmax(1)[0], _expected(model, bands, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
        )
    with pytest.raises(ValueError, match="pretrained_cfg"):
        ExportWrapper(_model(4, [0.5] * 3, [0.2] * 3), preprocess=True)


def test_default_statistics_per_channel_count():
    assert input_stats({}, 3)[0] == pytest.approx([0.485, 0.456, 0.406])
    mean, std = input_stats({}, 2)
    assert mean == pytest.approx([0.449] * 2, abs=1e-3) and std == pytest.approx([0.226] * 2, abs=1e-3)


# --- fixed conversions: a pixel's 8-bit value depends only on its stored value and the file type ---


def test_sixteen_bit_files_by_one_fixed_scale(tmp_path):
    for value in (250, 300):
        array = np.full((4, 5), value, np.uint16)
        array[0, 0] = 0
        Image.fromarray(array).save(tmp_path / f"{value}.png")
    assert Image.open(tmp_path / "250.png").mode.startswith("I")
    dark = np.array(load_image(tmp_path / "250.png"))
    bright = np.array(load_image(tmp_path / "300.png"))
    assert dark[0, 0].tolist() == bright[0, 0].tolist() == [0, 0, 0]  # equal stored values, equal 8-bit values
    assert (bright.astype(int) >= dark.astype(int)).all()  # the brighter file is never darker
    assert dark[1, 1, 0] == round(250 / 257) and bright[1, 1, 0] == round(300 / 257)
    # the same rule for 1-channel models, datasets and arrays read from files
    assert read_image(tmp_path / "300.png", 1)[1, 1, 0] == bright[1, 1, 0]
    assert torch.equal(to_rgb_tensor(tmp_path / "300.png"), torch.from_numpy(bright).permute(2, 0, 1))


def test_float_images_are_read_on_the_0_to_1_scale(tmp_path):
    low = np.full((4, 4), 0.2, np.float32)
    low[0, 0] = 1.0
    mixed = np.full((4, 4), 0.2, np.float32)
    mixed[0, 0] = 0.5  # another maximum must not change how 0.2 reads
    for name, array in (("low", low), ("mixed", mixed)):
        Image.fromarray(array, mode="F").save(tmp_path / f"{name}.tif")
    assert Image.open(tmp_path / "low.tif").mode == "F"
    a, b = np.array(load_image(tmp_path / "low.tif")), np.array(load_image(tmp_path / "mixed.tif"))
    assert a[1, 1, 0] == b[1, 1, 0] == round(0.2 * 255)
    Image.fromarray(np.full((4, 4), 200.0, np.float32), mode="F").save(tmp_path / "raw.tif")
    with pytest.raises(ValueError, match=r"raw.tif holds floating-point pixels in \[200, 200\].*0..1 scale"):
        load_image(tmp_path / "raw.tif")
