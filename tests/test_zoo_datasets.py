"""Every zoo dataset end to end on tiny synthetic fixtures: the official download format ->
``prepare_<dataset>`` -> the dataset's class indices and 255s (against hand-written masks) ->
``pspnet eval`` (scored pixels) and a recipe training for 2 iterations. No network."""

from __future__ import annotations

import argparse
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet_lib import build_pspnet
from pspnet_lib.cli import main
from pspnet_lib.data import DATASETS, PREPARERS, build_dataset
from pspnet_lib.data.prepare import (
    prepare_coco_stuff10k,
    prepare_coco_stuff164k,
    prepare_isaid,
    prepare_loveda,
    prepare_pascal_context,
    prepare_potsdam,
    prepare_vaihingen,
)
from pspnet_lib.data.prepare._common import isprs_starts
from pspnet_lib.data.prepare.pascal_context import decode_coco_rle

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"stem": "standard", "head_channels": 32, "aux_channels": 16, "ppm_channels": 8}


# ----------------------------------------------------------------------------------------- helpers
def _photo(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blocks(h: int, w: int, values: list, seed: int, block: int = 8) -> np.ndarray:
    """A label picture of ``block``-px squares; every value appears at least once (the first squares)."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-h // block), -(-w // block)
    picks = rng.integers(0, len(values), rows * cols)
    picks[: len(values)] = np.arange(len(values))
    grid = np.array([values[i] for i in picks]).reshape(rows, cols, *np.shape(values[0]))
    return np.repeat(np.repeat(grid, block, 0), block, 1)[:h, :w]


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _zip(path: Path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


def _mapped(stored: np.ndarray, table: dict) -> np.ndarray:
    """Apply a hand-written {stored value or colour: expected value} table to a label picture."""
    out = np.full(stored.shape[:2], -1, dtype=np.int64)
    for key, value in table.items():
        hit = np.all(stored == np.array(key), axis=-1) if stored.ndim == 3 else stored == key
        out[hit] = value
    assert (out >= 0).all(), "the fixture uses a value the table does not cover"
    return out


def _dataset_masks(name: str, root: Path, split: str) -> dict[str, np.ndarray]:
    dataset = build_dataset(name, root, split)
    return {Path(m).name: dataset[i][1].numpy() for i, (_, m) in enumerate(dataset.files)}


# ---------------------------------------------------------------------------------- ISPRS (tiles)
# Hand-written: official colour -> class the dataset yields (255 = ignored). Black is the eroded
# boundary; (10, 20, 30) is a colour of no class (upstream files it under the boundary value 0).
ISPRS_CLASSES = {
    (255, 255, 255): 0,
    (0, 0, 255): 1,
    (0, 255, 255): 2,
    (0, 255, 0): 3,
    (255, 255, 0): 4,
    (255, 0, 0): 5,
    (0, 0, 0): 255,
    (10, 20, 30): 255,
}
ISPRS_STORED = {c: (0 if k == 255 else k + 1) for c, k in ISPRS_CLASSES.items()}


def _isprs_official(src: Path, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Two 80x96 pictures (one train, one val) with colour labels; returns key -> (image, label, split)."""
    colours = list(ISPRS_CLASSES)
    pictures = {}
    if dataset == "potsdam":
        keys = {"2_10": "train", "2_13": "val"}
        labels = {}
        for n, (key, split) in enumerate(keys.items()):
            image, label = _photo(80, 96, n), _blocks(80, 96, colours, n)
            pictures[key] = (image, label, split)
            _write(src / "2_Ortho_RGB" / f"top_potsdam_{key}_RGB.tif", _png_bytes(image, "TIFF"))
            _write(src / "2_Ortho_RGB" / f"top_potsdam_{key}_RGB.tfw", b"0.05\n")  # world file: not a picture
            labels[f"5_Labels_all_noBoundary/top_potsdam_{key}_label_noBoundary.tif"] = _png_bytes(label, "TIFF")
        _zip(src / "5_Labels_all_noBoundary.zip", labels)
    else:
        keys = {"area1": "train", "area2": "val"}
        images, labels = {}, {}
        for n, (key, split) in enumerate(keys.items()):
            image, label = _photo(80, 96, n), _blocks(80, 96, colours, n)
            pictures[key] = (image, label, split)
            images[f"top/top_mosaic_09cm_{key}.tif"] = _png_bytes(image, "TIFF")
            labels[f"top_mosaic_09cm_{key}_noBoundary.tif"] = _png_bytes(label, "TIFF")
        labels["top_mosaic_09cm_area9_noBoundary.tif"] = _png_bytes(_blocks(80, 96, colours, 9), "TIFF")
        _zip(src / "ISPRS_semantic_labeling_Vaihingen.zip", images)
        _zip(src / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip", labels)
    return pictures


def test_isprs_tile_origins_match_upstream_counts():
    # mmsegmentation's potsdam.py on a 6000 px image (512 tiles, stride 256): 12 x 12 = 144 tiles per
    # image, 3,456 for the 24 training images, as its documentation states.
    starts = isprs_starts(6000, 512, 256)
    assert len(starts) == 12 and starts[:3] == [0, 512, 1024] and starts[-1] == 6000 - 512
    assert isprs_starts(96, 64, 32) == [0, 32] and isprs_starts(80, 64, 32) == [0, 16]
    assert isprs_starts(50, 64, 32) == [0]


@pytest.mark.parametrize("dataset", ["potsdam", "vaihingen"])
def test_isprs_prepare_and_read(tmp_path, dataset):
    src, dst = tmp_path / "src", tmp_path / "out"
    pictures = _isprs_official(src, dataset)
    prepare = prepare_potsdam if dataset == "potsdam" else prepare_vaihingen
    result = prepare(src, dst, tile_size=64, stride=32)
    assert result == {"written": 16, "skipped": 0}  # 2 pictures x 4 tiles x (image + label); area9 skipped
    boxes = [(0, 0, 64, 64), (32, 0, 96, 64), (0, 16, 64, 80), (32, 16, 96, 80)]
    for key, (image, label, split) in pictures.items():
        names = sorted(f"{key}_{x0}_{y0}_{x1}_{y1}.png" for x0, y0, x1, y1 in boxes)
        assert sorted(p.name for p in (dst / "ann_dir" / split).glob(f"{key}_*")) == names
        masks = _dataset_masks(dataset, dst, split)
        for x0, y0, x1, y1 in boxes:
            name = f"{key}_{x0}_{y0}_{x1}_{y1}.png"
            assert np.array_equal(_read(dst / "img_dir" / split / name), image[y0:y1, x0:x1])
            assert np.array_equal(_read(dst / "ann_dir" / split / name), _mapped(label[y0:y1, x0:x1], ISPRS_STORED))
            expected = _mapped(label[y0:y1, x0:x1], ISPRS_CLASSES)
            assert np.array_equal(masks[name], expected)
        assert {0, 5, 255} <= set(np.unique(np.concatenate([m.ravel() for m in masks.values()])).tolist())
    assert not list(dst.rglob("area9_*"))
    # Resumable: a second run writes nothing; a lost tile is the only one written again.
    assert prepare(src, dst, tile_size=64, stride=32) == {"written": 0, "skipped": 16}
    lost = next((dst / "ann_dir" / "val").iterdir())
    lost.unlink()
    assert prepare(src, dst, tile_size=64, stride=32) == {"written": 1, "skipped": 15}
    assert not list(dst.rglob(".*.tmp*"))  # no temporary file left behind


def test_isprs_missing_archive_is_named(tmp_path, caplog):
    (tmp_path / "src").mkdir()
    with pytest.raises(FileNotFoundError, match="2_Ortho_RGB.zip"):
        prepare_potsdam(tmp_path / "src", tmp_path / "out")
    caplog.set_level(logging.ERROR)
    assert main(["prepare", "vaihingen", str(tmp_path / "src"), str(tmp_path / "out")]) == 1
    assert "ISPRS_semantic_labeling_Vaihingen.zip" in caplog.text and "Traceback" not in caplog.text
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


# ------------------------------------------------------------------------------------------ LoveDA
LOVEDA_CLASSES = {0: 255, 1: 0, 4: 3, 7: 6, 255: 255}  # stored -> class: 0 = no-data, 7 = agricultural


def _loveda_official(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    values = list(LOVEDA_CLASSES)
    pictures, train = {}, {}
    for n, (domain, stem) in enumerate((("Urban", "1366"), ("Rural", "0"))):
        image, mask = _photo(64, 64, n), _blocks(64, 64, values, n)
        pictures[stem] = (image, mask, "train")
        train[f"Train/{domain}/images_png/{stem}.png"] = _png_bytes(image)
        train[f"Train/{domain}/masks_png/{stem}.png"] = _png_bytes(mask)
    _zip(src / "Train.zip", train)
    image, mask = _photo(64, 64, 5), _blocks(64, 64, values, 5)
    pictures["2522"] = (image, mask, "val")
    _write(src / "Val" / "Val" / "Urban" / "images_png" / "2522.png", _png_bytes(image))  # extracted form
    _write(src / "Val" / "Val" / "Urban" / "masks_png" / "2522.png", _png_bytes(mask))
    return pictures


def test_loveda_prepare_and_read(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    pictures = _loveda_official(src)
    assert prepare_loveda(src, dst) == {"written": 6, "skipped": 0}
    for stem, (image, mask, split) in pictures.items():
        assert np.array_equal(_read(dst / "img_dir" / split / f"{stem}.png"), image)
        assert np.array_equal(_read(dst / "ann_dir" / split / f"{stem}.png"), mask)  # copied unchanged
        assert np.array_equal(_dataset_masks("loveda", dst, split)[f"{stem}.png"], _mapped(mask, LOVEDA_CLASSES))
    assert prepare_loveda(src, dst) == {"written": 0, "skipped": 6}
    assert main(["prepare", "loveda", str(src), str(tmp_path / "via-cli")]) == 0  # the command does the same
    assert sorted(p.name for p in (tmp_path / "via-cli" / "ann_dir" / "train").iterdir()) == ["0.png", "1366.png"]
    # A value of no class (8) is reported with the file's name.
    _write(dst / "ann_dir" / "val" / "2522.png", _png_bytes(np.full((64, 64), 8)))
    with pytest.raises(ValueError, match=r"2522\.png.*value\(s\) 8"):
        build_dataset("loveda", dst, "val")[0]
    (src / "Val").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="Val.zip"):
        prepare_loveda(src, dst)


# ------------------------------------------------------------------------------------------- iSAID
# Hand-written: iSAID colour -> class (0 = background, 15 = Harbor); an unknown colour becomes
# background, as upstream; 255 only where a picture smaller than a patch was padded.
ISAID_CLASSES = {(0, 0, 0): 0, (0, 0, 63): 1, (0, 100, 155): 15, (1, 2, 3): 0}


def _isaid_official(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    colours = list(ISAID_CLASSES)
    image, label = _photo(50, 100, 0), _blocks(50, 100, colours, 0)
    _zip(src / "train" / "images" / "part1.zip", {"images/P0001.png": _png_bytes(image)})
    _zip(src / "train" / "Semantic_masks" / "images.zip", {"images/P0001_instance_color_RGB.png": _png_bytes(label)})
    image2, label2 = _photo(64, 64, 1), _blocks(64, 64, colours, 1)
    _write(src / "val" / "images" / "images" / "P0002.png", _png_bytes(image2))
    _write(src / "val" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png", _png_bytes(label2))
    return {"P0001": (image, label, "train"), "P0002": (image2, label2, "val")}


def test_isaid_prepare_and_read(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    pictures = _isaid_official(src)
    assert prepare_isaid(src, dst, patch_size=64, overlap=24) == {"written": 6, "skipped": 0}
    image, label, _ = pictures["P0001"]
    # 50x100 padded to 64x100 (image 0, label 255); patches every 40 px, the last moved back to end at 100.
    padded_image = np.zeros((64, 100, 3), np.uint8)
    padded_image[:50] = image
    expected = np.full((64, 100), 255, np.int64)
    expected[:50] = _mapped(label, ISAID_CLASSES)
    masks = _dataset_masks("isaid", dst, "train")
    assert sorted(masks) == ["P0001_0_64_0_64_instance_color_RGB.png", "P0001_0_64_36_100_instance_color_RGB.png"]
    for x0 in (0, 36):
        name = f"P0001_0_64_{x0}_{x0 + 64}"
        assert np.array_equal(_read(dst / "img_dir" / "train" / f"{name}.png"), padded_image[:, x0 : x0 + 64])
        assert np.array_equal(masks[f"{name}_instance_color_RGB.png"], expected[:, x0 : x0 + 64])
    val = _dataset_masks("isaid", dst, "val")
    assert np.array_equal(val["P0002_0_64_0_64_instance_color_RGB.png"], _mapped(pictures["P0002"][1], ISAID_CLASSES))
    assert prepare_isaid(src, dst, patch_size=64, overlap=24) == {"written": 0, "skipped": 6}


# -------------------------------------------------------------------------------------- COCO-Stuff
# Hand-written: official id -> class the dataset yields. 164k: 0-based ids, 255 unlabeled, 11 is an
# id of no class. 10k: 1-based ids in .mat files, 0 unlabeled, 12 is an id of no class.
COCO164K_CLASSES = {0: 0, 12: 11, 181: 170, 11: 255, 255: 255}
COCO10K_CLASSES = {0: 255, 1: 0, 13: 11, 182: 170, 12: 255}


def _coco164k_official(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    pictures = {}
    for n, (stem, split) in enumerate((("000000000009", "train2017"), ("000000000139", "val2017"))):
        image, ids = _photo(48, 64, n), _blocks(48, 64, list(COCO164K_CLASSES), n)
        _write(src / "images" / split / f"{stem}.jpg", _png_bytes(image, "JPEG"))
        _write(src / "annotations" / split / f"{stem}.png", _png_bytes(ids))
        pictures[stem] = (image, ids, split)
    return pictures


def _coco10k_official(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    from scipy.io import savemat

    pictures = {}
    for n, (stem, split) in enumerate(
        (("COCO_train2014_000000000077", "train2014"), ("COCO_train2014_000000000078", "test2014"))
    ):
        image, ids = _photo(48, 64, n), _blocks(48, 64, list(COCO10K_CLASSES), n)
        _write(src / "images" / f"{stem}.jpg", _png_bytes(image, "JPEG"))
        buffer = io.BytesIO()
        savemat(buffer, {"S": ids.astype(np.uint16), "names": np.array(["unused"], dtype=object)})
        _write(src / "annotations" / f"{stem}.mat", buffer.getvalue())
        pictures[stem] = (image, ids, split)
    _write(src / "imageLists" / "train.txt", b"COCO_train2014_000000000077\n")
    _write(src / "imageLists" / "test.txt", b"COCO_train2014_000000000078\n")
    return pictures


@pytest.mark.parametrize("dataset", ["coco-stuff164k", "coco-stuff10k"])
def test_coco_stuff_prepare_and_read(tmp_path, dataset):
    if dataset == "coco-stuff10k":
        pytest.importorskip("scipy")
    src, dst = tmp_path / "src", tmp_path / "out"
    build, prepare, table = (
        (_coco164k_official, prepare_coco_stuff164k, COCO164K_CLASSES)
        if dataset == "coco-stuff164k"
        else (_coco10k_official, prepare_coco_stuff10k, COCO10K_CLASSES)
    )
    pictures = build(src)
    assert prepare(src, dst) == {"written": 4, "skipped": 0}
    for stem, (image, ids, split) in pictures.items():
        assert (dst / "images" / split / f"{stem}.jpg").read_bytes() == (
            src / "images" / (split if dataset == "coco-stuff164k" else "") / f"{stem}.jpg"
        ).read_bytes()
        masks = _dataset_masks(dataset, dst, split)
        assert np.array_equal(masks[f"{stem}_labelTrainIds.png"], _mapped(ids, table))
    assert prepare(src, dst) == {"written": 0, "skipped": 4}


# ---------------------------------------------------------------------------------- PASCAL Context
# COCO RLE strings written by pycocotools' mask.encode (reference values, not computed here):
# a 40x50 mask with rows 3..32 x columns 10..44 set plus the full rows 20..21, and a 64x64 mask
# with the square 8..39 x 8..39 set.
RLE_40x50 = (
    "d02V100000000000000000_Ol0E0000000000000000000000000000000000000000000000000000000000000000000a0TO;0000000\\O"
)
RLE_64x64 = "X`0P1P10000000000000000000000000000000000000000000000000000000000000h_1"


def _rle_40x50_mask() -> np.ndarray:
    mask = np.zeros((40, 50), bool)
    mask[3:33, 10:45] = True
    mask[20:22, :] = True
    return mask


def test_coco_rle_decoding_matches_pycocotools():
    assert np.array_equal(decode_coco_rle({"size": [40, 50], "counts": RLE_40x50}), _rle_40x50_mask())
    square = np.zeros((64, 64), bool)
    square[8:40, 8:40] = True
    assert np.array_equal(decode_coco_rle({"size": [64, 64], "counts": RLE_64x64}), square)
    # Uncompressed counts (column-major runs, starting with 0s).
    assert np.array_equal(
        decode_coco_rle({"size": [2, 3], "counts": [1, 2, 3]}), np.array([[0, 1, 0], [1, 0, 0]], bool)
    )
    with pytest.raises(ValueError, match="sum"):
        decode_coco_rle({"size": [2, 3], "counts": [1, 2]})


def _pascal_context_official(src: Path, wood_id: int = 458) -> tuple[np.ndarray, np.ndarray]:
    """Three VOC2010 pictures (train, val, test phase) and trainval_merged.json; returns the
    hand-written 60-class masks of the train and val pictures."""
    jpegs = src / "VOCdevkit" / "VOC2010" / "JPEGImages"
    for n, (stem, h, w) in enumerate((("2008_000002", 40, 50), ("2008_000003", 64, 64), ("2008_000004", 8, 8))):
        _write(jpegs / f"{stem}.jpg", _png_bytes(_photo(h, w, n), "JPEG"))
    bottom = np.zeros((40, 50), np.uint8)
    bottom[30:, :] = 1
    runs, flat, current, count = [], bottom.T.ravel(), 0, 0
    for value in flat:  # column-major runs, for the uncompressed-counts form
        if value != current:
            runs.append(count)
            current, count = value, 0
        count += 1
    runs.append(count)
    data = {
        "images": [
            {"image_id": 1, "file_name": "2008_000002.jpg", "height": 40, "width": 50, "phase": "train"},
            {"image_id": 2, "file_name": "2008_000003.jpg", "height": 64, "width": 64, "phase": "val"},
            {"image_id": 3, "file_name": "2008_000004.jpg", "height": 8, "width": 8, "phase": "test"},
        ],
        "annos_segmentation": [
            {"id": 10, "image_id": 1, "category_id": 2, "segmentation": {"size": [40, 50], "counts": RLE_40x50}},
            # painted after (over) the aeroplane: 'wood', the last of the 59 classes
            {"id": 11, "image_id": 1, "category_id": wood_id, "segmentation": {"size": [40, 50], "counts": runs}},
            {"id": 12, "image_id": 2, "category_id": 259, "segmentation": {"size": [64, 64], "counts": RLE_64x64}},
        ],
        "categories": [
            {"category_id": 2, "name": "aeroplane"},
            {"category_id": 259, "name": "mountain"},
            {"category_id": 458, "name": "wood"},
        ],
        "annos_occlusion": [],
        "parts": [],
    }
    _write(src / "trainval_merged.json", json.dumps(data).encode())
    train = np.zeros((40, 50), np.int64)  # 0 = background
    train[_rle_40x50_mask()] = 1  # aeroplane
    train[30:, :] = 59  # wood
    val = np.zeros((64, 64), np.int64)
    val[8:40, 8:40] = 35  # mountain
    return train, val


def test_pascal_context_prepare_and_read_60_and_59(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    train60, val60 = _pascal_context_official(src)
    assert prepare_pascal_context(src, dst) == {"written": 4, "skipped": 0}
    voc = dst / "VOC2010"
    assert (voc / "ImageSets" / "SegmentationContext" / "train.txt").read_text() == "2008_000002\n"
    assert (voc / "ImageSets" / "SegmentationContext" / "val.txt").read_text() == "2008_000003\n"
    assert not (voc / "JPEGImages" / "2008_000004.jpg").exists()  # test phase: not part of either split
    assert np.array_equal(_read(voc / "SegmentationClassContext" / "2008_000002.png"), train60)
    for split, expected in (("train", train60), ("val", val60)):
        masks60 = _dataset_masks("pascal-context", dst, split)
        masks59 = _dataset_masks("pascal-context-59", dst, split)
        (name,) = masks60
        assert np.array_equal(masks60[name], expected)  # background is class 0
        expected59 = np.where(expected == 0, 255, expected - 1)  # background ignored, the rest shifted
        assert np.array_equal(masks59[name], expected59)
    assert build_dataset("pascal-context-59", dst, "val").num_classes == 59
    assert build_dataset("pascal-context", dst, "val").classes[0] == "background"
    assert prepare_pascal_context(src, dst) == {"written": 0, "skipped": 4}


def test_pascal_context_errors(tmp_path):
    src = tmp_path / "src"
    _pascal_context_official(src, wood_id=1)  # 1 = 'accordion': not one of the 59 classes
    with pytest.raises(ValueError, match=r"category id\(s\) \[1\]"):
        prepare_pascal_context(src, tmp_path / "out")
    (src / "trainval_merged.json").unlink()
    with pytest.raises(FileNotFoundError, match="trainval_merged.json"):
        prepare_pascal_context(src, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="pspnet prepare pascal-context"):
        build_dataset("pascal-context", tmp_path / "nothing", "val")


# ------------------------------------------------------------------ eval and training, per dataset
def _prepared(tmp_path: Path, dataset: str) -> tuple[Path, int]:
    """(root of the prepared fixture, scored pixels of its validation split)."""
    src, dst = tmp_path / "src", tmp_path / "out"
    if dataset in ("potsdam", "vaihingen"):
        _isprs_official(src, dataset)
        (prepare_potsdam if dataset == "potsdam" else prepare_vaihingen)(src, dst, tile_size=64, stride=32)
    elif dataset == "loveda":
        _loveda_official(src)
        prepare_loveda(src, dst)
    elif dataset == "isaid":
        _isaid_official(src)
        prepare_isaid(src, dst, patch_size=64, overlap=24)
    elif dataset == "coco-stuff164k":
        _coco164k_official(src)
        prepare_coco_stuff164k(src, dst)
    elif dataset == "coco-stuff10k":
        pytest.importorskip("scipy")
        _coco10k_official(src)
        prepare_coco_stuff10k(src, dst)
    else:
        _pascal_context_official(src)
        prepare_pascal_context(src, dst)
    masks = _dataset_masks(
        dataset, dst, "val" if "coco" not in dataset else {"coco-stuff10k": "test2014"}.get(dataset, "val2017")
    )
    return dst, int(sum((m != 255).sum() for m in masks.values()))


ZOO_KEYS = [
    "pascal-context",
    "pascal-context-59",
    "coco-stuff10k",
    "coco-stuff164k",
    "loveda",
    "potsdam",
    "vaihingen",
    "isaid",
]


@pytest.mark.parametrize("dataset", ZOO_KEYS)
def test_cli_eval_scores_the_expected_pixels(tmp_path, dataset):
    root, pixels = _prepared(tmp_path, dataset)
    classes = build_dataset(dataset, root, None).num_classes
    model = build_pspnet("resnet18", classes, **TINY_MODEL)
    model.save_pretrained(tmp_path / "model")
    report = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--weights",
                str(tmp_path / "model"),
                "--dataset",
                dataset,
                "--data-root",
                str(root),
                "--json",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads(report.read_text())
    assert metrics["pixels"] == pixels and len(metrics["per_class"]) == classes


def test_cli_eval_takes_the_dataset_from_the_weights(tmp_path, capsys):
    # Weights that record their zoo dataset (zoo entries do) need no --dataset.
    root, pixels = _prepared(tmp_path, "potsdam")
    model = build_pspnet("resnet18", 6, **TINY_MODEL)
    model.pretrained_cfg = {**(model.pretrained_cfg or {}), "dataset": "potsdam", "inference": {"mode": "whole"}}
    model.save_pretrained(tmp_path / "model")
    report = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--weights",
                str(tmp_path / "model"),
                "--data-root",
                str(root),
                "--json",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["pixels"] == pixels
    assert "on potsdam val" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ZOO_KEYS)
def test_recipe_trains_two_iterations(tmp_path, dataset):
    from pspnet_lib.engine.checkpoint import load_checkpoint
    from pspnet_lib.recipes import RECIPES

    root, _ = _prepared(tmp_path, dataset)
    recipe = next(name for name in sorted(RECIPES) if RECIPES[name]["dataset"] == dataset)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                recipe,
                "--data-root",
                str(root),
                "--iters",
                "2",
                "--backbone",
                "resnet18",
                "--crop-size",
                "64",
                "--base-size",
                "64",
                "--batch-size",
                "2",
                "--no-val",
                "--out",
                str(out),
                "--num-workers",
                "0",
                "--device",
                "cpu",
                "--no-progress",
                "--log-interval",
                "1",
            ]
        )
        == 0
    )
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["iteration"] == 2


def test_every_zoo_dataset_has_a_dataset_recipe_and_cli_choice():
    from pspnet_lib.cli.prepare import PREPARE_CHOICES
    from pspnet_lib.cli.train import DATASET_CHOICES, add_dataset_args
    from pspnet_lib.data import DATASET_INFO as ZOO_INFO
    from pspnet_lib.data import ZOO_DATASETS
    from pspnet_lib.hub import get_weight, list_pretrained
    from pspnet_lib.recipes import RECIPES

    assert tuple(DATASETS) == tuple(DATASET_CHOICES) and tuple(PREPARERS) == tuple(PREPARE_CHOICES)
    assert set(ZOO_DATASETS) == set(ZOO_INFO)
    # the dataset key `pspnet list` shows (voc12aug for the VOC models) is accepted by --dataset
    parser = argparse.ArgumentParser()
    add_dataset_args(parser)
    for key, name in ZOO_DATASETS.items():
        assert parser.parse_args(["--dataset", key]).dataset == name
    for key, name in ZOO_DATASETS.items():
        dataset_class = DATASETS[name]
        assert dataset_class.record.zoo_key == key and dataset_class.record.key == name
    # every zoo row of these datasets is named by a recipe (its training settings)
    covered = {z for r in RECIPES.values() for z in r.get("_zoo", [])}
    for name in list_pretrained():
        if get_weight(name).meta.get("dataset") in ZOO_KEYS:
            assert name in covered, name
