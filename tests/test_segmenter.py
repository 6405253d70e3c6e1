"""Issue 19: ``Segmenter``, the picklable predictor for batch engines: every batch form, lazy
loading once per process, one TypeError for a wrong form; a real Ray local cluster and Dask's
local scheduler give predict()'s masks."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from pspnet_lib import Segmenter, predict
from pspnet_lib.inference import segmenter as segmenter_module

from .infer_utils import save_model_dir, tiny_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = tiny_model(num_classes=3)
    model.pretrained_cfg = {"inference": {"mode": "whole"}}
    return save_model_dir(model, tmp_path_factory.mktemp("weights") / "tiny"), model


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("pictures")
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((40, 48, 3), (40, 48, 3), (48, 40, 3))]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(root / f"p{i}.png")
        Image.fromarray(array).save(paths[-1])
    return arrays, paths


def _expected(model, arrays):
    return [predict(model, a).mask.numpy() for a in arrays]


def test_pickles_without_the_model_and_loads_once_per_process(weights, pictures, monkeypatch):
    weights_dir, model = weights
    arrays, _ = pictures
    loads = []
    real = segmenter_module.Segmenter._load
    monkeypatch.setattr(segmenter_module, "_MODELS", {})
    monkeypatch.setattr(segmenter_module.Segmenter, "_load", lambda self: loads.append(1) or real(self))
    seg = Segmenter(weights_dir, device="cpu")
    blob = pickle.dumps(seg)
    assert len(blob) < 2000 and not loads  # the configuration only: nothing loaded yet
    copies = [pickle.loads(blob) for _ in range(3)]  # as Dask unpickles a function per task
    for copy in copies:
        mask = copy(arrays[0])
        assert mask.dtype == np.uint8 and np.array_equal(mask, _expected(model, arrays[:1])[0])
    assert len(loads) == 3 and len(segmenter_module._MODELS) == 1  # one model in the process
    assert all(c.model is copies[0].model for c in copies)
    assert len(pickle.dumps(copies[0])) == len(blob)  # a loaded model does not travel


def test_numpy_and_dict_forms(weights, pictures):
    weights_dir, model = weights
    arrays, paths = pictures
    seg = Segmenter(weights_dir, device="cpu", confidence="maxprob", batch_size=2)
    expected = _expected(model, arrays)
    same = np.stack(arrays[:2])
    assert np.array_equal(seg(same), np.stack(expected[:2]))  # (N, H, W, C) -> (N, H, W)
    out = seg({"image": same, "id": np.array([7, 8])})  # Ray's read_images column, other columns kept
    assert out["mask"].shape == (2, 40, 48) and list(out["id"]) == [7, 8]
    probs = predict(model, arrays[0], return_probs=True).probs
    assert np.allclose(out["confidence"][0], probs.max(0).values.numpy(), atol=1e-6)
    mixed = seg({"path": np.array([str(p) for p in paths])})  # paths, sizes differ: object array
    assert mixed["mask"].dtype == object and all(np.array_equal(m, e) for m, e in zip(mixed["mask"], expected))
    encoded = seg({"bytes": np.array([p.read_bytes() for p in paths], dtype=object)})  # read_binary_files
    assert all(np.array_equal(m, e) for m, e in zip(encoded["mask"], expected))


def test_spark_and_table_forms(weights, pictures):
    weights_dir, model = weights
    arrays, paths = pictures
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    seg = Segmenter(weights_dir, device="cpu", confidence="entropy")
    expected = _expected(model, arrays)
    rows = seg(np.array([str(p) for p in paths], dtype=object))  # predict_batch_udf on a string column
    assert [(r["height"], r["width"]) for r in rows] == [(40, 48), (40, 48), (48, 40)]
    assert all(np.array_equal(r["mask"].reshape(r["height"], r["width"]), e) for r, e in zip(rows, expected))
    assert rows[0]["mask"].dtype == np.int32 and 0 <= rows[0]["uncertainty"] <= 1

    def decode(png):
        return np.asarray(Image.open(io.BytesIO(png)))

    frame = seg(pd.Series([p.read_bytes() for p in paths]))  # pandas_udf over binaryFile's content
    assert list(frame.columns) == ["mask", "height", "width", "confidence_mean", "uncertainty"]
    assert all(np.array_equal(decode(png), e) for png, e in zip(frame["mask"], expected))
    assert frame["mask"][0] == _png_of(model, arrays[0])  # the bytes pspnet predict writes
    table = seg(pa.table({"path": [str(p) for p in paths]}))
    assert table.column_names == ["path", "mask", "height", "width", "confidence_mean", "uncertainty"]
    assert table.column("height").to_pylist() == [40, 40, 48]
    df = seg(pd.DataFrame({"path": [str(p) for p in paths], "n": [1, 2, 3]}))
    assert list(df["n"]) == [1, 2, 3] and np.array_equal(decode(df["mask"][2]), expected[2])


def _png_of(model, array):
    buffer = io.BytesIO()
    predict(model, array).colorize().save(buffer, format="PNG")
    return buffer.getvalue()


def test_wrong_forms_and_bad_pictures(weights, pictures, tmp_path):
    weights_dir, _ = weights
    arrays, paths = pictures
    seg = Segmenter(weights_dir, device="cpu")
    for bad in ("a.png", 3, [arrays[0]], np.zeros((2, 2, 2, 2, 2))):
        with pytest.raises(TypeError, match="it takes a dict of NumPy arrays") as info:
            seg(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match=r"cannot take a list;"):
        seg([arrays[0]])
    with pytest.raises(TypeError, match="none of the columns image, bytes, path"):
        seg({"pixels": np.stack(arrays[:2])})
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n nope")
    with pytest.raises(ValueError, match="broken.png"):
        seg({"path": np.array([str(broken)])})
    tolerant = Segmenter(weights_dir, device="cpu", errors="record")
    out = tolerant({"path": np.array([str(paths[0]), str(broken)])})
    assert out["error"][0] == "" and "broken.png" in out["error"][1] and out["mask"][1].shape == (0, 0)
    with pytest.raises(ValueError, match="errors must be"):
        Segmenter(weights_dir, errors="ignore")
    assert seg(np.zeros((0, 0, 3), np.uint8)).shape == (0, 0)  # Dask's meta probe, no model needed


@pytest.mark.slow  # a real Ray local cluster: ~10 s of start-up on 2 cores
def test_ray_data_map_batches(weights, pictures):
    ray = pytest.importorskip("ray")
    weights_dir, model = weights
    arrays, paths = pictures
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.read_images([str(p) for p in paths], include_paths=True)
        result = ds.map_batches(
            Segmenter,
            fn_constructor_kwargs={"weights": str(weights_dir), "device": "cpu"},
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(size=1),
        ).take_all()
    finally:
        ray.shutdown()
    by_path = {row["path"]: row["mask"] for row in result}
    assert len(by_path) == 3
    for path, expected in zip(paths, _expected(model, arrays)):
        assert np.array_equal(by_path[str(path)], expected)


def test_dask_map_overlap(weights, pictures):
    da = pytest.importorskip("dask.array")
    weights_dir, model = weights
    arrays, _ = pictures
    image = np.concatenate([arrays[0], arrays[1]], axis=1)  # 40 x 96
    seg = Segmenter(weights_dir, device="cpu")
    lazy = da.map_overlap(
        seg, da.from_array(image, chunks=(40, 48, 3)), depth=(0, 8, 0), boundary="none", drop_axis=2, dtype=np.uint8
    )
    result = lazy.compute(scheduler="threads")
    assert result.shape == (40, 96) and result.dtype == np.uint8
    # each chunk is segmented with its 8-pixel overlap, then trimmed back to the chunk
    left = predict(model, image[:, :56]).mask.numpy()[:, :48]
    right = predict(model, image[:, 40:]).mask.numpy()[:, 8:]
    assert np.array_equal(result, np.concatenate([left, right], axis=1))
