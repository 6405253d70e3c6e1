"""Issue 19 x issue 20: one predict-to-files run over a folder mixing pictures and rasters.

Small pictures go through the batched pipeline, rasters that need tiling through
``predict_raster``; both share the manifest, ``--skip-existing`` and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

rasterio = pytest.importorskip("rasterio")  # the [geo] extra; CI installs it through [dev]
from rasterio.transform import from_origin  # noqa: E402

from pspnet_lib import predict, predict_files  # noqa: E402
from pspnet_lib.cli import main  # noqa: E402
from pspnet_lib.inference.manifest import read_manifest  # noqa: E402

from .infer_utils import save_model_dir, tiny_model  # noqa: E402

WINDOW = {"crop": 64, "stride": 48}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    model = tiny_model(num_classes=3)
    with torch.no_grad():
        model.decode_head.classifier.bias.zero_()
    model.pretrained_cfg = {"inference": {"mode": "whole"}}
    weights = save_model_dir(model, root / "weights")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(small).save(data / "small.png")
    big = np.kron(rng.integers(0, 256, (3, 7, 6)), np.ones((1, 16, 16))).astype(np.uint8)[:, :100, :90]  # 100 x 90
    for name, profile in (("big.tif", {}), ("map.tif", {"crs": "EPSG:32632", "transform": from_origin(0, 0, 1, 1)})):
        with rasterio.open(
            data / name, "w", driver="GTiff", height=100, width=90, count=3, dtype="uint8", **profile
        ) as f:
            f.write(big)
    return model, weights, data, small, big.transpose(1, 2, 0)


@pytest.mark.slow
def test_a_folder_of_a_picture_and_a_large_raster_is_one_run(setup, tmp_path):
    model, _, data, small, big = setup
    (tmp_path / "in").mkdir()
    for name in ("small.png", "big.tif"):
        (tmp_path / "in" / name).write_bytes((data / name).read_bytes())
    out = tmp_path / "out"
    run = dict(tiled_pixels=64 * 64, tiled_options={**WINDOW, "batch_size": 2}, num_workers=0, progress=False)
    summary = predict_files(model, [tmp_path / "in"], out, **run)
    assert summary.ok and summary.done == 2 and summary.failed == []
    records = {Path(r["input"]).name: r for r in read_manifest(out)}
    assert records["small.png"]["outputs"] == {"mask": "small.png"} and "tiled" not in records["small.png"]
    assert records["big.tif"]["outputs"] == {"mask": "big.tif"} and records["big.tif"]["tiled"] is True
    assert (records["big.tif"]["height"], records["big.tif"]["width"]) == (100, 90)
    assert records["big.tif"]["windows"] == 4 and all(r["status"] == "done" for r in records.values())
    assert np.array_equal(np.asarray(Image.open(out / "small.png")), predict(model, small).mask.numpy())
    with rasterio.open(out / "big.tif") as mask:  # the tiled mean blend is slide inference
        assert np.array_equal(mask.read(1), predict(model, big, mode="slide", **WINDOW).mask.numpy())
    assert sorted(p.name for p in out.iterdir()) == ["big.tif", "manifest.jsonl", "small.png"]  # no temporaries
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".jsonl"}

    resumed = predict_files(model, [tmp_path / "in"], out, skip_existing=True, **run)
    assert resumed.ok and resumed.done == 0 and resumed.already_done == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".jsonl"} == before
    assert [r["status"] for r in read_manifest(out)] == ["done", "done"]
    with pytest.raises(ValueError, match=r"big.tif is segmented by tiles .* overlay=True, flip does not apply"):
        predict_files(model, [tmp_path / "in"], tmp_path / "o2", overlay=True, flip=True, **run)
    # Under the threshold (the default, 8,192^2) the same raster is a picture of the batched path.
    plain = predict_files(model, [tmp_path / "in"], tmp_path / "plain", num_workers=0, progress=False)
    assert plain.ok and sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "big.png",
        "manifest.jsonl",
        "small.png",
    ]


def test_pspnet_predict_over_a_mixed_folder_then_resumed(setup, tmp_path, capsys, caplog):
    _, weights, data, _, _ = setup
    (tmp_path / "in").mkdir()
    for name in ("small.png", "map.tif"):
        (tmp_path / "in" / name).write_bytes((data / name).read_bytes())
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00 truncated")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--weights", str(weights), "--out", str(out), "--num-workers", "0"]
    window = ["--crop", "64", "--stride", "48", "--confidence"]
    assert main([*args, *window]) == 1  # the broken file is recorded, the others done
    line = capsys.readouterr().out.strip()
    assert "segmented 2 of 3" in line and "1 failed" in line and "broken.tif" in line
    records = {Path(r["input"]).name: r for r in read_manifest(out)}
    assert records["broken.tif"]["status"] == "failed" and "\n" not in records["broken.tif"]["error"]
    assert records["map.tif"]["outputs"] == {"mask": "map.tif", "confidence": "map_confidence.tif"}
    assert records["small.png"]["outputs"] == {"mask": "small.png", "maxprob": "small_maxprob.png"}
    with rasterio.open(out / "map.tif") as mask:
        assert mask.crs.to_epsg() == 32632 and mask.shape == (100, 90)
    (tmp_path / "in" / "broken.tif").unlink()
    assert main([*args, *window, "--skip-existing"]) == 0
    assert "2 already done" in capsys.readouterr().out
    assert [r["status"] for r in read_manifest(out)] == ["done", "done"]
    # Options the tiled path cannot apply are refused before any work, naming the file.
    assert main([*args, "--overlay", "--out", str(tmp_path / "o2")]) == 1
    assert "map.tif is segmented by tiles" in caplog.text and "overlay" in caplog.text
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["input"].endswith(("map.tif", "small.png"))
