"""Masks as people save them and the CLI's simplest folder jobs (issue 12, items 6-8): VOC colour
masks with void, declared ignore colours, verify()'s advice about 255, generic class names,
``pspnet eval --split all`` and errors that name the CLI flag."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet_lib.cli import main
from pspnet_lib.data import CityscapesDataset, FolderDataset
from pspnet_lib.data.metadata import VOC_PALETTE

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--backbone",
    "resnet18",
    "--crop-size",
    "32",
    "--batch-size",
    "2",
    "--iters",
    "2",
    "--no-val",
    "--num-workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--seed",
    "0",
]
VOID = (224, 224, 192)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _voc_colour_folder(root: Path, n: int = 3, size: int = 40) -> list[np.ndarray]:
    """Images + RGB masks in the VOC palette (background, aeroplane, bicycle) with void outlines;
    returns the hand-written index masks (255 on the void outline)."""
    rng = np.random.default_rng(0)
    expected = []
    for i in range(n):
        index = np.zeros((size, size), np.int64)
        index[8:24, 8:24] = 1
        index[20:36, 22:38] = 2
        index[8:24, 8] = 255  # a void outline, as VOC draws object boundaries
        index[20, 22:38] = 255
        rgb = np.zeros((size, size, 3), np.uint8)
        for k in (1, 2):
            rgb[index == k] = VOC_PALETTE[k]
        rgb[index == 255] = VOID
        _save(root / "images" / f"{i:03d}.jpg", rng.integers(0, 256, (size, size, 3)))
        _save(root / "masks" / f"{i:03d}.png", rgb)
        expected.append(index)
    (root / "classes.txt").write_text("background\naeroplane\nbicycle\n")
    (root / "palette.txt").write_text("".join(f"{r} {g} {b}\n" for r, g, b in VOC_PALETTE[:3]))
    return expected


def test_voc_colour_masks_with_void_read_train_and_evaluate(tmp_path, capsys):
    root = tmp_path / "voc_colours"
    expected = _voc_colour_folder(root)
    dataset = FolderDataset(root)
    for i, mask in enumerate(expected):
        assert np.array_equal(dataset[i][1].numpy(), mask)  # void -> 255 with no configuration
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(out), *TINY]) == 0
    report = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "model"),
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--split",
                "all",
                "--json",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads(report.read_text())
    assert metrics["pixels"] == sum(int((m != 255).sum()) for m in expected)
    assert set(metrics["per_class"]) == {"background", "aeroplane", "bicycle"}


def test_declared_ignore_colours(tmp_path, caplog):
    root = tmp_path / "white"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, 8:] = (255, 0, 0)
    rgb[4, :] = (255, 255, 255)  # drawn in white: "don't score"
    _save(root / "images" / "a.png", np.zeros((16, 16, 3)))
    _save(root / "masks" / "a.png", rgb)
    (root / "classes.txt").write_text("sky\nroof\n")
    (root / "palette.txt").write_text("0 0 0\n255 0 0\n")
    with pytest.raises(ValueError, match=r"\(255, 255, 255\).*R G B ignore.*--ignore-colour"):
        FolderDataset(root)[0]
    expected = np.zeros((16, 16), np.int64)
    expected[:, 8:] = 1
    expected[4, :] = 255
    assert np.array_equal(FolderDataset(root, ignore_colours=[(255, 255, 255)])[0][1].numpy(), expected)
    (root / "palette.txt").write_text("0 0 0\n255 255 255 ignore\n255 0 0\n")  # the palette-file form
    dataset = FolderDataset(root)
    assert dataset.palette == [(0, 0, 0), (255, 0, 0)] and np.array_equal(dataset[0][1].numpy(), expected)
    # The CLI flag: scoring with white ignored counts every other pixel.
    (root / "palette.txt").write_text("0 0 0\n255 0 0\n")
    caplog.set_level(logging.ERROR)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(out), *TINY]) == 1
    assert "--ignore-colour" in caplog.text
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--out",
                str(out),
                *TINY,
                "--crop-size",
                "16",
                "--ignore-colour",
                "255,255,255",
            ]
        )
        == 0
    )


def test_verify_suggests_mapping_255_only_for_binary_masks(tmp_path, caplog):
    def folder(name: str, mask: np.ndarray, classes: str) -> Path:
        root = tmp_path / name
        _save(root / "images" / "a.png", np.zeros((*mask.shape, 3)))
        _save(root / "masks" / "a.png", mask)
        (root / "classes.txt").write_text(classes)
        return root

    caplog.set_level(logging.WARNING)
    # Cityscapes-like: road (0), car (13) and 255 = void. 255 must stay void: no mapping suggested.
    street = np.zeros((16, 32), np.uint8)
    street[8:, :] = 13
    street[:, :2] = 255
    names = "".join(f"c{i}\n" for i in range(19))
    FolderDataset(folder("street", street, names)).verify()
    assert "no pixel of class" in caplog.text and "label_map" not in caplog.text and "--label-map" not in caplog.text
    caplog.clear()
    # Two-valued 0/255 masks of a two-class folder: the binary-mask export; 255 -> 1 is suggested.
    binary = np.where(street == 13, 255, 0).astype(np.uint8)
    FolderDataset(folder("binary", binary, "background\nobject\n")).verify()
    assert "label_map={255: 1}" in caplog.text and "--label-map 255:1" in caplog.text
    caplog.clear()
    # A dataset whose convention is 255 = void never gets the suggestion, even for 0/255 masks.
    city = tmp_path / "cityscapes"
    _save(city / "leftImg8bit" / "val" / "x" / "x_0_0_leftImg8bit.png", np.zeros((16, 32, 3)))
    _save(city / "gtFine" / "val" / "x" / "x_0_0_gtFine_labelTrainIds.png", binary)
    CityscapesDataset(city, "val").verify()
    assert "no pixel of class" in caplog.text and "label_map" not in caplog.text


def test_num_classes_without_class_file_then_eval_split_all(tmp_path, caplog):
    root = tmp_path / "flat"
    rng = np.random.default_rng(1)
    masks = []
    for i in range(4):
        mask = rng.integers(0, 3, (24, 24)).astype(np.uint8)
        mask[0, :] = 255
        _save(root / "images" / f"{i}.png", rng.integers(0, 256, (24, 24, 3)))
        _save(root / "masks" / f"{i}.png", mask)
        masks.append(mask)
    caplog.set_level(logging.WARNING)
    out = tmp_path / "run"
    # No class names at all: the error names the CLI flags, not Python arguments.
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(out), *TINY]) == 1
    assert "--num-classes K" in caplog.text and "--classes" in caplog.text
    caplog.clear()
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--num-classes",
                "3",
                "--out",
                str(out),
                *TINY,
                "--crop-size",
                "24",
            ]
        )
        == 0
    )
    assert "class_0 .. class_2" in caplog.text
    caplog.clear()
    # A flat folder has no 'val' split: the error says how to score everything from the CLI.
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "model"),
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "--split all" in caplog.text
    report = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "model"),
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--split",
                "all",
                "--json",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads(report.read_text())
    assert metrics["pixels"] == sum(int((m != 255).sum()) for m in masks) == 4 * 23 * 24
    assert list(metrics["per_class"]) == ["class_0", "class_1", "class_2"]
    assert (
        main(
            [
                "eval",
                "--weights",
                str(out / "model"),
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--split",
                "all",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
