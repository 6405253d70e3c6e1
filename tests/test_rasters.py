"""Rasters as GIS users hold them (issue 20): real GeoTIFFs written and read with rasterio."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

rasterio = pytest.importorskip("rasterio")  # the [geo] extra; CI installs it through [dev]
from rasterio.transform import from_origin  # noqa: E402

from pspnet_lib import predict, predict_raster  # noqa: E402
from pspnet_lib.cli import main  # noqa: E402
from pspnet_lib.inference import raster_io  # noqa: E402
from pspnet_lib.inference.rasters import needs_tiling  # noqa: E402

from .infer_utils import save_model_dir, tiny_model  # noqa: E402

NAMES = ["impervious", "building", "low vegetation", "tree", "car", "clutter"]
PALETTE = [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]
TRANSFORM = from_origin(300_000.0, 5_000_000.0, 0.5, 0.5)  # UTM metres, 0.5 m pixels
WINDOW = {"crop": 128, "stride": 96}
ROOT = Path(__file__).resolve().parents[1]


def _model(channels: int = 3) -> torch.nn.Module:
    model = tiny_model(num_classes=6, output_stride=32, in_channels=channels)
    with torch.no_grad():
        model.decode_head.classifier.bias.zero_()  # several classes, following the picture
    model.pretrained_cfg.update(classes=NAMES, palette=PALETTE)
    if channels != 3:
        model.pretrained_cfg.update(mean=[0.5] * channels, std=[0.25] * channels)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


def _pixels(bands: int, height: int, width: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    small = rng.random((bands, height // 16 + 1, width // 16 + 1))
    big = np.kron(small, np.ones((16, 16)))[:, :height, :width]
    return (big * top).astype(dtype)


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    base = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=str(data.dtype))
    base.update(tiled=True, blockxsize=128, blockysize=128)
    base.update(profile)
    with rasterio.open(path, "w", **base) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """3 bands, 300 x 420, EPSG:32632, nodata 0 on a 40-pixel border at the top and left."""
    data = _pixels(3, 300, 420)
    data[data == 0] = 1  # 0 only where there is no data
    data[:, :40, :] = 0
    data[:, :, :40] = 0
    return _write(tmp_path_factory.mktemp("scene") / "scene.tif", data, crs="EPSG:32632", transform=TRANSFORM, nodata=0)


def test_geotiff_outputs_keep_the_map(model, scene, tmp_path):
    out = tmp_path / "labels.tif"
    result = predict_raster(model, scene, out, probs=True, confidence=True, polygons=True, progress=False, **WINDOW)
    assert set(result.outputs) == {"mask", "probs", "confidence", "polygons"}
    with rasterio.open(scene) as src, rasterio.open(out) as mask:
        assert mask.crs == src.crs and mask.crs.to_epsg() == 32632
        assert mask.transform == src.transform and mask.shape == src.shape == (300, 420)
        assert mask.count == 1 and mask.dtypes[0] == "uint8" and mask.nodata == 255
        assert mask.profile["tiled"] and mask.compression is not None
        colours = mask.colormap(1)
        assert [list(colours[i][:3]) for i in range(6)] == PALETTE
        assert json.loads(mask.tags()["CLASSES"]) == NAMES
        labels = mask.read(1)
        border = np.zeros(labels.shape, bool)
        border[:40, :] = border[:, :40] = True
        assert (labels[border] == 255).all()  # nodata where the input had none
        inside = labels[~border]
        assert inside.max() < 6 and len(np.unique(inside)) > 1  # classes elsewhere
        bounds = src.bounds
    with rasterio.open(result.outputs["probs"]) as probs:
        assert probs.count == 6 and set(probs.dtypes) == {"uint8"} and probs.crs == mask.crs
        assert list(probs.descriptions) == NAMES
        p = probs.read().astype(np.int64)
        assert np.abs(p[:, ~border].sum(0) - 255).max() <= 6  # probabilities x 255, rounded per band
        assert (probs.read_masks(1)[border] == 0).all() and (probs.read_masks(1)[~border] == 255).all()
        # the mask's class has the largest probability (rounding to 1/255 keeps the order, may make ties)
        assert (np.take_along_axis(p[:, ~border], inside[None].astype(np.int64), 0)[0] == p[:, ~border].max(0)).all()
    with rasterio.open(result.outputs["confidence"]) as confidence:
        assert confidence.count == 1 and confidence.dtypes[0] == "uint8" and confidence.nodata == 0
        c = confidence.read(1)
        assert (c[border] == 0).all() and (c[~border] >= 255 // 6).all()
        assert np.abs(c[~border].astype(int) - p[:, ~border].max(0)).max() == 0
    features = json.loads(result.outputs["polygons"].read_text())
    assert features["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32632"
    assert len(features["features"]) == result.polygons > 1
    for feature in features["features"]:
        assert feature["properties"]["name"] == NAMES[feature["properties"]["class"]]
        xs, ys = zip(*(point for ring in feature["geometry"]["coordinates"] for point in ring))
        assert bounds.left + 20 - 1e-6 <= min(xs) and max(xs) <= bounds.right  # the nodata border has none
        assert bounds.bottom <= min(ys) and max(ys) <= bounds.top - 20 + 1e-6


def test_sixteen_bit_four_band_raster_with_a_four_channel_model(tmp_path):
    model = _model(4)
    data = _pixels(4, 200, 260, dtype=np.uint16)
    source = _write(tmp_path / "multispectral.tif", data, crs="EPSG:3857", transform=TRANSFORM)
    out = tmp_path / "labels.tif"
    predict_raster(model, source, out, progress=False, **WINDOW)
    eight_bit = np.round(data.astype(np.float64) / 257).astype(np.uint8)  # docs/inference.md: round(v / 257)
    expected = predict(model, eight_bit.transpose(1, 2, 0), mode="slide", **WINDOW).mask.numpy()
    with rasterio.open(out) as result:
        labels = result.read(1)
    assert (labels == expected).mean() > 0.9999 and len(np.unique(labels)) > 1


def test_band_selection_and_band_count_errors(tmp_path):
    model = _model(4)
    data = _pixels(5, 140, 150)
    source = _write(tmp_path / "five.tif", data, crs="EPSG:32632", transform=TRANSFORM)
    with pytest.raises(ValueError, match=r"five.tif has 5 band\(s\) but the model takes 4.*--bands 1,2,3,4"):
        predict_raster(model, source, tmp_path / "a.tif", progress=False, **WINDOW)
    with pytest.raises(ValueError, match=r"five.tif has bands 1..5; bands \[1, 2, 3, 9\] asked for \[9\]"):
        predict_raster(model, source, tmp_path / "a.tif", bands=[1, 2, 3, 9], progress=False, **WINDOW)
    assert not (tmp_path / "a.tif").exists()
    predict_raster(model, source, tmp_path / "b.tif", bands=[5, 4, 3, 2], progress=False, **WINDOW)
    expected = predict(model, data[[4, 3, 2, 1]].transpose(1, 2, 0), mode="slide", **WINDOW).mask.numpy()
    with rasterio.open(tmp_path / "b.tif") as result:
        assert (result.read(1) == expected).mean() > 0.9999


def test_dtypes_the_model_cannot_take(model, tmp_path):
    signed = _write(tmp_path / "int8.tif", np.zeros((3, 140, 140), np.int8))
    with pytest.raises(ValueError, match=r"int8.tif holds int8 pixels; .*gdal_translate"):
        predict_raster(model, signed, tmp_path / "a.tif", progress=False, **WINDOW)
    floats = _pixels(3, 140, 140, dtype=np.float32)
    floats[:, 100:, 100:] = 7.5  # not on the 0..1 scale
    source = _write(tmp_path / "float.tif", floats)
    with pytest.raises(ValueError, match=r"float.tif \(window rows \d+:\d+, columns \d+:\d+\) holds floating-point"):
        predict_raster(model, source, tmp_path / "a.tif", progress=False, **WINDOW)
    assert not (tmp_path / "a.tif").exists()
    floats[:, 100:, 100:] = -9999.0  # ... unless it is the nodata value: never seen by the network
    _write(tmp_path / "float.tif", floats, nodata=-9999.0)
    predict_raster(model, source, tmp_path / "b.tif", progress=False, **WINDOW)
    with rasterio.open(tmp_path / "b.tif") as result:
        labels = result.read(1)
    assert (labels[100:, 100:] == 255).all() and (labels[:100] < 6).all()


def test_corrupt_and_truncated_rasters_name_the_file(model, scene, tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + os.urandom(3000))
    with pytest.raises(ValueError, match=r"cannot open .*garbage.tif as a raster"):
        predict_raster(model, garbage, tmp_path / "a.tif", progress=False, **WINDOW)
    whole = _write(tmp_path / "whole.tif", _pixels(3, 400, 400, seed=3), compress="deflate")
    truncated = tmp_path / "truncated.tif"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the header and the first blocks survive
    with pytest.raises(ValueError, match=r"cannot read .*truncated.tif, window rows \d+:\d+, columns \d+:\d+"):
        predict_raster(model, truncated, tmp_path / "a.tif", progress=False, **WINDOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.tif", "truncated.tif", "whole.tif"]


def test_a_raster_without_crs_is_written_without_one(model, tmp_path, caplog):
    source = _write(tmp_path / "plain.tif", _pixels(3, 140, 150))
    with caplog.at_level(logging.WARNING, logger="pspnet_lib"):
        predict_raster(model, source, tmp_path / "labels.tif", progress=False, **WINDOW)
    assert "plain.tif has no coordinate reference system" in caplog.text
    with rasterio.open(tmp_path / "labels.tif") as result:
        assert result.crs is None and result.shape == (140, 150)


def test_outputs_checked_before_work(model, scene, tmp_path):
    with pytest.raises(ValueError, match=r"refusing to write .*scene.tif: it is the input"):
        predict_raster(model, scene, scene, **WINDOW)
    with pytest.raises(ValueError, match=r"must end in .tif \(a GeoTIFF\) or .png"):
        predict_raster(model, scene, tmp_path / "labels.jpg", **WINDOW)
    (tmp_path / "labels.tif").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"labels.tif; pass overwrite=True \(--overwrite\)"):
        predict_raster(model, scene, tmp_path / "labels.tif", **WINDOW)
    assert (tmp_path / "labels.tif").read_bytes() == b"mine"
    with pytest.raises(ValueError, match=r"crop \(--crop\) 512x512 is larger than the picture \(300x420 pixels\)"):
        predict_raster(model, scene, tmp_path / "x.tif", crop=512)


def test_disk_full_leaves_no_file_under_the_final_name(model, scene, tmp_path, monkeypatch):
    calls = []

    def full(self, bottom):
        calls.append(bottom)
        if len(calls) > 0:  # the first block row of the mask
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(raster_io.RasterOutputs, "_flush", full)
    with pytest.raises(OSError, match="No space left"):
        predict_raster(model, scene, tmp_path / "labels.tif", confidence=True, progress=False, **WINDOW)
    assert calls and list(tmp_path.iterdir()) == []  # no output, no temporary file left behind


def test_large_pictures_keep_pillows_guard_unless_raised(model, tmp_path, monkeypatch):
    picture = tmp_path / "big.png"
    Image.fromarray(_pixels(3, 150, 180).transpose(1, 2, 0)).save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 27,000 pixels: a "bomb" for this limit
    with pytest.raises(ValueError, match=r"big.png has more pixels than Pillow's .*\(--max-image-pixels N\)"):
        predict_raster(model, picture, tmp_path / "big_labels.png", progress=False, **WINDOW)
    predict_raster(model, picture, tmp_path / "big_labels.png", max_image_pixels=30_000, progress=False, **WINDOW)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # restored
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    expected = predict(model, picture, mode="slide", **WINDOW)
    written = Image.open(tmp_path / "big_labels.png")
    assert written.mode == "P" and np.array_equal(np.asarray(written), expected.mask.numpy())


def test_pspnet_predict_scene_tif(model, scene, tmp_path, capsys, caplog):
    weights = save_model_dir(model, tmp_path / "weights")
    out = tmp_path / "scene_labels.tif"
    assert (
        main(["predict", str(scene), "--weights", str(weights), "--out", str(out), "--crop", "128", "--stride", "96"])
        == 0
    )
    assert "segmented 1 of 1 input(s) by tiles" in capsys.readouterr().out
    with rasterio.open(out) as result, rasterio.open(scene) as src:
        assert result.crs == src.crs and result.transform == src.transform
    assert needs_tiling(scene) and not needs_tiling(ROOT / "pspnet_lib" / "assets" / "chelsea.jpg")
    code = main(["predict", str(scene), "--weights", str(weights), "--out", str(tmp_path / "b.tif"), "--flip"])
    assert code == 1 and "--flip does not apply to tiled inference" in caplog.text
    code = main(["predict", str(scene), "--weights", str(weights), "--out", str(tmp_path / "c.tif"), "--stride", "0"])
    assert code == 1 and "stride (--stride) must be between 1 and the crop" in caplog.text


KILLED = textwrap.dedent(
    """
    import sys, time, torch
    from pspnet_lib import predict_raster

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.3)
            return torch.cat([x[:, :1], -x[:, :1]], dim=1)

    print("started", flush=True)
    predict_raster(Slow(), sys.argv[1], sys.argv[2], crop=64, stride=64, batch_size=1, progress=False)
    """
)


@pytest.mark.slow
def test_killed_mid_write_leaves_no_output(scene, tmp_path):
    """SIGKILL while the outputs are being written: nothing under the final name; a rerun restarts."""
    out = tmp_path / "out" / "labels.tif"
    process = subprocess.Popen([sys.executable, "-c", KILLED, str(scene), str(out)], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip() == b"started"
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(".labels.tif.*.stage.tif")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # windows are running and the first blocks are being written
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert all(p.name.startswith(".labels.tif.") for p in out.parent.iterdir())  # hidden temporaries only


MEMORY = textwrap.dedent(
    """
    import sys, torch
    from pspnet_lib import predict_raster

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    class Tiny(torch.nn.Module):  # a per-pixel two-class model: cheap, so that the pipeline is measured
        def forward(self, x):
            return torch.cat([x[:, :1] - x[:, 1:2], x[:, 2:3]], dim=1)

    model = Tiny()
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    predict_raster(model, sys.argv[1], sys.argv[2], crop=512, stride=512, progress=False)
    print(status("VmHWM:") - before)
    """
)


def _square_raster(path: Path, side: int) -> Path:
    profile = dict(driver="GTiff", height=side, width=side, count=1, dtype="uint8", crs="EPSG:32632")
    profile.update(transform=TRANSFORM, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    ramp = (np.arange(side) % 251).astype(np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 1024):
            rows = (ramp[None, :] + np.arange(y, y + 1024)[:, None] % 7).astype(np.uint8)
            dst.write(rows[None], window=rasterio.windows.Window(0, y, side, 1024))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset")
def test_peak_memory_does_not_grow_with_the_raster(tmp_path):
    """16x the pixels (8,192^2 vs 2,048^2): peak RSS growth of the call within 1.5x, in fresh processes.

    The growth counts everything the call adds to a process holding the model (GDAL's and torch's
    first-use set-up included); what stays is bounded by the window batch, one strip's band of logits
    and GDAL's block cache (16 MB), none of which depends on the raster's size.
    """
    growth = {}
    for side in (2048, 8192):
        source = _square_raster(tmp_path / f"in{side}.tif", side)
        run = subprocess.run(
            [sys.executable, "-c", MEMORY, str(source), str(tmp_path / f"out{side}.tif")],
            capture_output=True,
            text=True,
            check=True,
            # glibc returns blocks of 4 MB and more to the system when they are freed (its default
            # threshold grows to the largest block freed, after which freed windows stay in the heap
            # by an amount that depends on timing): the peak is then what the call holds.
            env={**{k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}, "MALLOC_MMAP_THRESHOLD_": "4194304"},
        )
        growth[side] = int(run.stdout.split()[-1])
        source.unlink()
    assert growth[8192] <= 1.5 * growth[2048], {k: f"{v / 2**20:.0f} MiB" for k, v in growth.items()}
