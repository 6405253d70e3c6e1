"""Bands in their own units: one band spec honoured by every path, statistics, RGB weights on N bands.

The folder holds 4-band uint16 reflectance (0..10,000, nodata 0 in a corner) as GeoTIFFs written
by rasterio and as a ``.npy`` array, with masks; the model's band spec scales by 1e-4.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import build_pspnet, load_pretrained, predict
from pspnet_lib.cli import main
from pspnet_lib.core.band_spec import BandSpec
from pspnet_lib.core.bands import band_settings, normalise, to_stored
from pspnet_lib.core.images import read_stored, to_image_tensor
from pspnet_lib.core.pretrained_cfg import PretrainedCfg
from pspnet_lib.data import FolderDataset, eval_transforms, train_transforms
from pspnet_lib.data.stats import compute_stats
from pspnet_lib.engine.evaluate import normalize_images
from pspnet_lib.hub.input_conv import adapt_input_conv
from pspnet_lib.inference.calibration import calibration_images
from pspnet_lib.inference.export import ExportWrapper

from .infer_utils import save_model_dir, tiny_model

rasterio = pytest.importorskip("rasterio")

SPEC = {"dtype": "uint16", "scale": 0.0001, "nodata": 0}
MEAN, STD = [0.45, 0.5, 0.55, 0.4], [0.25, 0.3, 0.2, 0.35]
HEIGHT, WIDTH = 20, 24


def _bands(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).integers(1, 10001, (4, HEIGHT, WIDTH)).astype(np.uint16)
    values[:, :3, :4] = 0  # no data in any band: labelled ignore
    values[1, 5, 5] = 0  # one band missing: that band's input is its mean (0), the pixel is scored
    return values


def _write_geotiff(path, values: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced: a plain raster
        with rasterio.open(
            path, "w", driver="GTiff", height=HEIGHT, width=WIDTH, count=4, dtype="uint16", nodata=0
        ) as raster:
            raster.write(values)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bands")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("water\nland\n")
    for index, name in enumerate(["a.tif", "b.tif", "c.npy"]):
        values = _bands(index)
        if name.endswith(".tif"):
            _write_geotiff(root / "images" / name, values)
        else:
            np.save(root / "images" / name, np.moveaxis(values, 0, -1))
        mask = (values[3] > 5000).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / (name.split(".")[0] + ".png"))
    return root


def _model():
    model = tiny_model(in_channels=4, num_classes=2)
    model.pretrained_cfg = {"mean": MEAN, "std": STD, "bands": SPEC, "classes": ["water", "land"]}
    return model


def _first_input(model, run):
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def test_one_band_spec_gives_identical_input_tensors_on_every_path(folder):
    model = _model()
    cfg = PretrainedCfg.of(model)
    dataset = FolderDataset(
        folder, in_channels=4, band_spec=cfg.bands, transforms=eval_transforms(MEAN, STD, band_spec=SPEC)
    )
    raw = FolderDataset(folder, in_channels=4, band_spec=cfg.bands)
    for index, path in enumerate(sorted((folder / "images").iterdir())):
        from_dataset, mask = dataset[index]
        stored = raw[index][0].as_subclass(torch.Tensor)
        assert stored.dtype == torch.uint16 and torch.equal(
            stored.permute(1, 2, 0), torch.from_numpy(read_stored(path, 4))
        )
        expected = (stored.double() * 1e-4 - torch.tensor(MEAN).double().view(-1, 1, 1)) / torch.tensor(
            STD
        ).double().view(-1, 1, 1)
        expected[stored == 0] = 0.0  # nodata values enter as the band's mean
        assert torch.allclose(from_dataset.double(), expected, atol=1e-5)
        assert (mask[:3, :4] == 255).all() and mask[5, 5] != 255  # no data in every band: not scored
        assert np.array_equal(raw.load_mask(index), mask.numpy())  # what the class weights count
        # The Trainer and evaluate (a stored batch), predict, export preprocessing, int8 calibration:
        assert torch.equal(normalize_images(stored[None], model)[0], from_dataset)
        assert torch.equal(_first_input(model, lambda: predict(model, path))[0], from_dataset)
        with torch.no_grad():
            assert torch.equal(
                _first_input(model, lambda: ExportWrapper(model, preprocess=True)(stored[None]))[0], from_dataset
            )
        assert torch.equal(calibration_images([path], model, size=False)[0][0], from_dataset)
        # The training augmentation, with nothing random: the same input (scaling and normalising in two steps).
        plain = train_transforms(
            None, scale_range=None, rotation=0, blur_p=0, flip_p=0, mean=MEAN, std=STD, band_spec=SPEC
        )
        assert torch.allclose(plain(raw[index][0], raw[index][1])[0], from_dataset, atol=1e-6)
        # The stored values come back from the model input (int8 calibration of uint16-input graphs).
        back = to_stored(from_dataset[None], cfg)[0]
        assert back.dtype == torch.uint16 and torch.equal(back[stored != 0], stored[stored != 0])
    result = predict(model, folder / "images" / "a.tif")
    assert (result.mask[:3, :4] == 255).all() and (result.mask[3:] != 255).all()  # nodata pixels: ignore_index


def test_pspnet_predict_and_onnx_give_predicts_masks(folder, tmp_path):
    model = _model()
    weights = save_model_dir(model, tmp_path / "model")
    out = tmp_path / "out"
    assert (
        main(["predict", str(folder / "images"), "--weights", str(weights), "--out", str(out), "--device", "cpu"]) == 0
    )
    for name in ("a.tif", "c.npy"):
        expected = predict(model, folder / "images" / name).mask
        assert np.array_equal(np.asarray(Image.open(out / (name.split(".")[0] + ".png"))), expected.numpy())

    # ONNX (the TorchScript-based exporter: fast; it takes int16, not uint16, see export_onnx): the stored
    # values go in and pixels of no data come out as ignore_index, as predict gives them.
    ort = pytest.importorskip("onnxruntime")
    from pspnet_lib.inference.export import export_onnx

    signed = tiny_model(in_channels=4, num_classes=2)
    signed.pretrained_cfg = {"mean": MEAN, "std": STD, "bands": {**SPEC, "dtype": "int16"}}
    with pytest.raises(ValueError, match=r"takes uint16 stored values .* only the dynamo ONNX exporter"):
        export_onnx(model, tmp_path / "u.onnx", preprocess=True, exporter="torchscript")
    path = export_onnx(
        signed, tmp_path / "m.onnx", preprocess=True, output="labels", height=24, width=24, exporter="torchscript"
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int16)"
    stored = read_stored(folder / "images" / "b.tif", 4).astype(np.int16)
    labels = session.run(None, {"images": np.moveaxis(stored, -1, 0)[None]})[0][0]
    assert np.array_equal(labels, predict(signed, stored).mask.numpy()) and (labels[:3, :4] == 255).all()


def test_tiled_rasters_read_the_band_spec_as_predict_does(folder, tmp_path):
    from pspnet_lib.inference.rasters import predict_raster
    from pspnet_lib.inference.tiled import infer_tiled

    model = _model()
    path = folder / "images" / "a.tif"
    predict_raster(model, path, tmp_path / "labels.tif", crop=(HEIGHT, WIDTH), stride=(HEIGHT, WIDTH), progress=False)
    with rasterio.open(tmp_path / "labels.tif") as written:
        labels = written.read(1)
    assert np.array_equal(labels, predict(model, path).mask.numpy())  # one window: predict's own result
    assert (labels[:3, :4] == 255).all()  # the spec's nodata: the raster's nodata value, 255
    x = normalise(to_image_tensor(path, 4, band_spec=PretrainedCfg.of(model).bands), PretrainedCfg.of(model))
    with torch.no_grad():
        tiled = infer_tiled(model, x[None], crop=(16, 16), stride=(8, 8))
    assert tiled.shape == (1, 2, HEIGHT, WIDTH)


def test_stats_reproduce_numpy_over_the_folder(folder, tmp_path, capsys):
    spec = BandSpec.from_dict(SPEC, 4)
    stats = compute_stats(folder, band_spec=spec)
    values = np.concatenate([read_stored(p, 4).reshape(-1, 4) for p in sorted((folder / "images").iterdir())])
    for band in range(4):
        stored = values[:, band].astype(np.float64)
        valid = stored[stored != 0] * 1e-4
        assert stats.mean[band] == pytest.approx(valid.mean(), abs=1e-6, rel=1e-6)
        assert stats.std[band] == pytest.approx(valid.std(), abs=1e-6, rel=1e-6)
        assert (stats.min[band], stats.max[band]) == (stored[stored != 0].min(), stored.max())
        assert stats.nodata_fraction[band] == pytest.approx((stored == 0).mean())
    assert stats.images == 3
    dataset = FolderDataset(folder, in_channels=4, band_spec=spec)
    assert compute_stats(dataset).mean == stats.mean  # a dataset: its untransformed images
    out = tmp_path / "bands.json"
    assert (
        main(["stats", str(folder), "--in-channels", "4", "--scale", "0.0001", "--nodata", "0", "--out", str(out)]) == 0
    )
    assert "band settings written" in capsys.readouterr().out
    settings = band_settings(out, 4)
    assert settings["bands"] == {"dtype": "uint16", "scale": 0.0001, "offset": 0.0, "nodata": 0}
    assert settings["mean"] == pytest.approx(stats.mean, rel=1e-5)


def test_a_13_band_model_loads_r50_imagenet_weights_into_chosen_bands(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet50().state_dict()  # ImageNet's layout, random values
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(state, path)
    model = load_pretrained(path, num_classes=3, in_channels=13, rgb_bands=(3, 2, 1))
    report = model.load_report
    assert report.adapted == {
        "backbone.conv1.weight": "RGB weights copied into bands (3, 2, 1) (red, green, blue) of 13, the other 10 "
        "band(s) zero (rgb_bands)"
    }
    assert "1 adapted (backbone.conv1.weight: RGB weights copied into bands (3, 2, 1)" in str(report)
    weight = model.state_dict()["backbone.conv1.weight"]
    assert weight.shape == (64, 13, 7, 7)
    assert torch.equal(weight[:, [3, 2, 1]], state["conv1.weight"])
    assert not weight[:, [0, *range(4, 13)]].any()
    cfg = PretrainedCfg.of(model)  # the RGB statistics follow the RGB weights
    assert cfg.mean[3] == 0.485 and cfg.mean[1] == 0.406 and len(cfg.mean) == 13


def test_timms_rule_without_rgb_bands_and_build_pspnet(tmp_path):
    rgb = torch.randn(8, 3, 3, 3)
    timm = pytest.importorskip("timm")
    for bands in (1, 2, 4, 13):
        adapted, how = adapt_input_conv(rgb, bands)
        assert torch.equal(adapted, timm.models.adapt_input_conv(bands, rgb.clone())), bands
        assert "timm's adapt_input_conv rule" in how
    backbone = build_pspnet("resnet18", 2, stem="standard").backbone.state_dict()
    path = tmp_path / "r18.pth"
    torch.save({k: v for k, v in backbone.items()}, path)
    model = build_pspnet("resnet18", 2, stem="standard", in_channels=4, weights_backbone=path)
    assert "repeated over 4 bands and scaled by 3/4" in model.load_report.adapted["backbone.conv1.weight"]


def test_timm_backbones_take_rgb_weights_on_n_bands_too(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    state = timm.create_model("resnet18").state_dict()  # timm's layout, random values
    save_file(state, str(tmp_path / "r18.safetensors"))
    small = dict(head_channels=16, aux_channels=8, ppm_channels=4, weights_backbone=str(tmp_path / "r18.safetensors"))
    model = build_pspnet("timm:resnet18", 3, in_channels=13, rgb_bands=(3, 2, 1), **small)
    weight = model.state_dict()["backbone.model.conv1.weight"]
    assert torch.equal(weight[:, [3, 2, 1]], state["conv1.weight"]) and not weight[:, 0].any()
    assert "copied into bands (3, 2, 1)" in model.load_report.adapted["backbone.model.conv1.weight"]
    plain = build_pspnet("timm:resnet18", 3, in_channels=4, **small)  # timm's loader, its rule, reported
    assert "timm's adapt_input_conv rule" in plain.load_report.adapted["backbone.model.conv1.weight"]
    assert torch.equal(plain.state_dict()["backbone.model.conv1.weight"], adapt_input_conv(state["conv1.weight"], 4)[0])


def test_bad_band_settings_are_one_line_errors(folder, tmp_path, caplog):
    model = _model()
    # A band spec whose length differs from in_channels.
    with pytest.raises(ValueError, match=r"bands\.scale has 3 values but the model takes 4 input band\(s\)"):
        PretrainedCfg.from_dict({"bands": {"dtype": "uint16", "scale": [1, 2, 3]}}, 4)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bands": {"dtype": "uint16", "offset": [0, 1]}}))
    args = ["train", "--dataset", "folder", "--data-root", str(folder), "--in-channels", "4", "--no-val"]
    args += ["--out", str(tmp_path / "r")]
    assert main([*args, "--band-spec", str(bad), "--backbone", "resnet18"]) == 1
    assert "--band-spec: band settings" in caplog.text and "offset has 2 values but the model takes 4" in caplog.text
    # A uint16 picture given to weights whose spec is 8-bit, and 8-bit pictures to uint16 weights.
    eight_bit = tiny_model(in_channels=4, num_classes=2)
    eight_bit.pretrained_cfg = {"mean": MEAN, "std": STD, "bands": {"dtype": "uint8"}}
    with pytest.raises(ValueError, match=r"a\.tif holds uint16 values but the band spec takes uint8"):
        predict(eight_bit, folder / "images" / "a.tif")
    with pytest.raises(ValueError, match=r"holds uint8 values but the band spec takes uint16"):
        predict(model, np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"holds uint16 values but the band spec takes uint8"):
        FolderDataset(folder, in_channels=4, band_spec={"dtype": "uint8"})[0]
    # Nodata labelled with an ignore index that is a valid class value.
    with pytest.raises(
        ValueError, match=r"labelled ignore_index=1, which is a valid class value \(0\.\.1\).*--ignore-index 255"
    ):
        FolderDataset(folder, in_channels=4, band_spec=SPEC, ignore_index=1)
    with pytest.raises(ValueError, match=r"ignore_index=0, which is a valid class value"):
        PretrainedCfg.from_dict({"bands": SPEC, "classes": ["a", "b"], "ignore_index": 0}, 4)
    caplog.clear()
    settings = tmp_path / "ok.json"
    settings.write_text(json.dumps({"bands": SPEC, "mean": MEAN, "std": STD}))
    assert main([*args, "--band-spec", str(settings), "--ignore-index", "1", "--backbone", "resnet18"]) == 1
    assert "valid class value" in caplog.text and "--ignore-index 255" in caplog.text
    # rgb_bands that are not three band positions, or without RGB weights to place.
    caplog.clear()
    assert main([*args, "--band-spec", str(settings), "--rgb-bands", "3,2,9", "--backbone-weights", str(bad)]) == 1
    assert "--rgb-bands: rgb_bands must be three different band positions" in caplog.text
    caplog.clear()
    assert main([*args, "--band-spec", str(settings), "--rgb-bands", "3,2,1"]) == 1
    assert "--rgb-bands places RGB weights in the bands: give --weights or --backbone-weights" in caplog.text
    # Bands for a zoo dataset of photos.
    caplog.clear()
    assert (
        main(
            [
                "train",
                "--dataset",
                "voc",
                "--data-root",
                str(folder),
                "--in-channels",
                "4",
                "--out",
                str(tmp_path / "v"),
            ]
        )
        == 1
    )
    assert "--in-channels and --band-spec apply to --dataset folder only" in caplog.text


def test_multi_band_tiffs_without_spec_or_rasterio_say_what_to_do(folder, monkeypatch):
    with pytest.raises(ValueError, match=r"a band spec \(pretrained_cfg\['bands'\].*pspnet_lib\[geo\]"):
        to_image_tensor(folder / "images" / "a.tif", 4)
    monkeypatch.setitem(__import__("sys").modules, "rasterio", None)  # as if not installed
    with pytest.raises(ImportError, match=r'a\.tif is a multi-band TIFF .* pip install "pspnet_lib\[geo\]"'):
        read_stored(folder / "images" / "a.tif", 4)
    assert read_stored(folder / "images" / "c.npy", 4).dtype == np.uint16  # .npy needs nothing


@pytest.mark.slow
def test_train_on_bands_from_the_command_line(folder, tmp_path):
    settings = tmp_path / "bands.json"
    assert (
        main(["stats", str(folder), "--in-channels", "4", "--scale", "0.0001", "--nodata", "0", "--out", str(settings)])
        == 0
    )
    out = tmp_path / "run"
    recipe = tmp_path / "tiny.json"
    recipe.write_text(
        json.dumps(
            {
                "model": {
                    "backbone": "resnet18",
                    "stem": "standard",
                    "head_channels": 16,
                    "aux_channels": 8,
                    "ppm_channels": 4,
                },
                "augment": {"crop_size": [16, 16], "scale_range": [0.9, 1.1]},
                "train": {"batch_size": 2, "log_interval": 1, "num_workers": 0},
            }
        )
    )
    args = ["train", "--recipe", str(recipe), "--dataset", "folder", "--data-root", str(folder), "--out", str(out)]
    args += [
        "--in-channels",
        "4",
        "--band-spec",
        str(settings),
        "--iters",
        "2",
        "--val-fraction",
        "0.34",
        "--no-progress",
    ]
    assert main(args) == 0
    trained = load_pretrained(out / "model")
    cfg = PretrainedCfg.of(trained)
    assert cfg.bands == BandSpec.from_dict(SPEC, 4) and list(cfg.mean) == band_settings(settings)["mean"]
    assert cfg.ignore_index == 255 and cfg.classes == ("water", "land")
    result = predict(trained, folder / "images" / "a.tif")  # the trained weights read the data as training did
    assert (result.mask[:3, :4] == 255).all()
    assert torch.equal(
        normalise(to_image_tensor(folder / "images" / "a.tif", 4, band_spec=cfg.bands), cfg),
        normalize_images(to_image_tensor(folder / "images" / "a.tif", 4, band_spec=cfg.bands)[None], trained)[0],
    )


@pytest.mark.parametrize(
    ("dtype", "spec", "low", "high"),
    [
        ("uint16", {"dtype": "uint16", "range": [0, 10000], "nodata": 0}, 1, 10001),
        ("int16", {"dtype": "int16", "scale": 0.001, "offset": 0.5, "nodata": -9999}, -500, 2000),
        ("float32", {"dtype": "float32", "range": [[-5.0, 300.0]] * 4, "nodata": "nan"}, -5, 300),
    ],
)
def test_in_memory_arrays_go_in_as_stored(dtype, spec, low, high):
    # uint16 reflectance, int16 with an offset, float radiance far outside 0..1 with NaN as nodata.
    stored = np.random.default_rng(7).uniform(low, high, (HEIGHT, WIDTH, 4)).astype(dtype)
    nodata = np.nan if dtype == "float32" else spec["nodata"]
    stored[:2, :2] = nodata
    model = tiny_model(in_channels=4, num_classes=2)
    model.pretrained_cfg = {"mean": MEAN, "std": STD, "bands": spec}
    cfg = PretrainedCfg.of(model)
    if "range" in spec:  # range [low, high]: scale 1 / (high - low), offset -low / (high - low)
        first_low, first_high = np.ravel(spec["range"])[:2]
        assert cfg.bands.scale[0] == pytest.approx(1 / (first_high - first_low))
        assert cfg.bands.offset[0] == pytest.approx(-first_low / (first_high - first_low))
    scaled = stored.astype(np.float64) * np.asarray(cfg.bands.scale) + np.asarray(cfg.bands.offset)
    expected = torch.from_numpy(np.moveaxis((scaled - np.asarray(MEAN)) / np.asarray(STD), -1, 0))
    expected[:, :2, :2] = 0.0  # nodata: the band's mean
    results = []
    seen = _first_input(model, lambda: results.append(predict(model, stored)))[0]
    assert seen.dtype == torch.float32 and torch.allclose(seen.double(), expected, atol=1e-5)
    assert (results[0].mask[:2, :2] == 255).all() and (results[0].mask[2:] != 255).all()


def test_a_16_bit_picture_keeps_its_values_under_a_band_spec_and_photo_rules_without(tmp_path):
    values = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)  # 0..59,500
    path = tmp_path / "dem.png"
    Image.fromarray(values).save(path)
    spec = BandSpec.from_dict({"dtype": "uint16", "range": [0, 60000]}, 1)
    stored = to_image_tensor(path, 1, band_spec=spec).as_subclass(torch.Tensor)
    assert stored.dtype == torch.uint16 and torch.equal(stored[0], torch.from_numpy(values))  # not by 257
    photo = to_image_tensor(path, 1).as_subclass(torch.Tensor)  # no spec: today's rule, 8 bits by round(v / 257)
    assert photo.dtype == torch.uint8 and torch.equal(
        photo[0], torch.from_numpy(np.round(values / 257).astype(np.uint8))
    )
