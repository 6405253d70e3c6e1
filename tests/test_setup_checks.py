"""Issue 21: training never lies about what it did.

Degenerate set-ups are refused or warned about before training; files' hidden metadata (EXIF
orientation, byte-order marks) is read the same way in every path; one setting (the ignore index,
the validation precision) reaches every stage; raw framework errors became sentences.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib.cli import main
from pspnet_lib.data import FolderDataset, build_dataset, read_classes_file, train_transforms
from pspnet_lib.engine import TrainConfig, Trainer
from pspnet_lib.engine.config import SettingError
from pspnet_lib.engine.preflight import one_size_collate
from pspnet_lib.engine.run import TrainingRun

from ._engine_helpers import one_thread, tiny_pspnet  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "resnet18", "head_channels": 16, "aux_channels": 8, "ppm_channels": 4, "stem": "standard"}


def _folder(root: Path, sizes, classes=("background", "object"), ignore=255, seed=0) -> Path:
    """A folder dataset: pictures whose left part is bright (class 1) over dark (class 0), an
    ignored border row stored as ``ignore``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i, (h, w) in enumerate(sizes):
        mask = np.zeros((h, w), np.uint8)
        mask[:, : w // 2] = 1
        mask[0] = ignore
        picture = (40 + 160 * (mask == 1)[..., None] + rng.integers(0, 30, (h, w, 3))).astype(np.uint8)
        Image.fromarray(picture).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root


def _settings(**train):
    return {
        "dataset": "folder",
        "model": dict(TINY),
        "augment": {"crop_size": [32, 32], "rotation": 0, "blur_p": 0},
        "train": {"iters": 1, "batch_size": 2, "num_workers": 0, "progress": False, "log_interval": 1, **train},
    }


# ------------------------------------------------------------------ 1. degenerate set-ups


def test_one_class_run_is_refused_with_the_fix(tmp_path, caplog):
    """mmsegmentation#2201: 0/255 masks and a classes.txt of one name trained to 'mIoU 100.00'."""
    root = tmp_path / "cracks"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("crack\n")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20] = 255
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    caplog.set_level(logging.ERROR)
    code = main(["train", "--dataset", "folder", "--data-root", str(root), "--no-val", "--out", str(tmp_path / "r")])
    assert code == 1 and not (tmp_path / "r").exists()  # refused before anything was built or written
    message = caplog.records[-1].getMessage()
    assert "at least 2 classes" in message and "'crack'" in message and "\n" not in message
    assert "--num-classes 2" in message and "--label-map 255:1" in message and "--classes background,crack" in message
    with pytest.raises(SettingError, match=r"label_map=\{255: 1\}"):  # the Python spelling
        TrainingRun.from_settings({"dataset": "folder"}, root, validate=False)
    # A Trainer built by hand refuses a 1-class model with the cross-entropy loss too.
    one = FolderDataset(root, transforms=train_transforms(32))
    with pytest.raises(ValueError, match="1-class softmax"):
        Trainer(tiny_pspnet(1), one, None, TrainConfig(iters=1, out_dir=str(tmp_path / "t")))


def test_crop_larger_than_the_pictures_and_a_tiny_validation_split_are_warned(tmp_path, caplog):
    """The README's --crop-size 512 on 64x64 pictures; --val-fraction 0.1 of 12 pictures."""
    root = _folder(tmp_path / "small", [(64, 64)] * 12)
    caplog.set_level(logging.WARNING)
    settings = _settings()
    settings["augment"]["crop_size"] = [512, 512]
    TrainingRun.from_settings(settings, root, dataset_options={"val_fraction": 0.1})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "crop_size=[512, 512] is larger than 11 of the 11 pictures read (median 64x64" in text
    assert "about 98% of each crop is padding" in text and "--crop-size 64" in text
    assert "validating on 1 picture (val_fraction=0.1 of 12)" in text
    assert "--val-fraction 0.42" in text  # round(12 * 0.42) = 5 pictures


def test_mixed_sizes_without_a_crop_are_one_line_naming_crop_size(tmp_path, caplog):
    """smp#538: training started, then failed with "stack expects each tensor to be equal size"."""
    root = _folder(tmp_path / "mixed", [(32, 40), (48, 32), (32, 40), (40, 40)])
    recipe = tmp_path / "recipe.json"
    settings = _settings()
    settings["augment"] = {"crop_size": None, "scale_range": None, "rotation": 0, "blur_p": 0}
    recipe.write_text(json.dumps(settings))
    caplog.set_level(logging.ERROR)
    argv = ["train", "--recipe", str(recipe), "--data-root", str(root), "--no-val", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    message = caplog.records[-1].getMessage()
    assert "no --crop-size and --batch-size 2" in message and "3 sizes (32x40, 40x40, 48x32, HxW)" in message
    assert "--crop-size 32,32 (fits every picture read)" in message and "\n" not in message
    # A Trainer built by hand: the first batch says it in one sentence, not PyTorch's stack error.
    plain = FolderDataset(root, transforms=train_transforms(None, scale_range=None, rotation=0, blur_p=0))
    trainer = Trainer(
        tiny_pspnet(2), plain, None, TrainConfig(iters=1, batch_size=4, num_workers=0, out_dir=str(tmp_path / "t"))
    )
    with pytest.raises(
        ValueError, match=r"^a training batch holds pictures of 3 sizes .*--crop-size N\) or use batch_size=1$"
    ):
        trainer.fit()
    same = [(torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))] * 2
    assert one_size_collate(same)[0].shape == (2, 3, 8, 8)


# ------------------------------------------------------------------ 2. hidden metadata of files


def _save_with_orientation(picture: np.ndarray, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(picture).save(path, exif=exif, quality=95)


def test_exif_orientation_3_photo_agrees_with_its_upright_mask(tmp_path, caplog):
    """labelme#1529, detectron2#1319: predict turned the photo, the datasets read it as stored: 0% agreement."""
    root = _folder(tmp_path / "phone", [(32, 48)] * 2)
    upright = np.array(Image.open(root / "images" / "00.png"))
    _save_with_orientation(upright[::-1, ::-1], root / "images" / "00.jpg", 3)  # stored upside down, tag 3
    (root / "images" / "00.png").unlink()
    dataset = FolderDataset(root)
    caplog.set_level(logging.WARNING)
    dataset.verify()
    image, mask = dataset[0]
    bright = image.numpy().mean(0) > 128  # the object is the bright part of the picture
    agree = (bright == (mask.numpy() == 1))[1:].mean()  # row 0 is ignored
    assert agree >= 0.99, agree
    from pspnet_lib.core.images import to_rgb_tensor

    assert torch.equal(image, to_rgb_tensor(root / "images" / "00.jpg"))  # what predict sees
    assert not caplog.records


def test_quarter_turn_that_would_not_fit_the_mask_is_said(tmp_path, caplog):
    """A mask drawn on the stored pixels (a tool that ignores EXIF): the stored pixels are used, and the log says so."""
    root = _folder(tmp_path / "old-tool", [(24, 32)])
    stored = np.array(Image.open(root / "images" / "00.png"))
    _save_with_orientation(stored, root / "images" / "00.jpg", 6)  # upright it would be 32x24
    (root / "images" / "00.png").unlink()
    caplog.set_level(logging.WARNING)
    image, mask = FolderDataset(root)[0]
    assert tuple(image.shape[-2:]) == tuple(mask.shape) == (24, 32)
    assert any("EXIF orientation 6" in r.getMessage() and "00.jpg" in r.getMessage() for r in caplog.records)


def test_byte_order_marks_and_crlf_in_text_files(tmp_path):
    """DIGITS#420, evo#161: the first class became '\\ufeffroad' and a split file named 'missing' files."""
    root = _folder(tmp_path / "win", [(16, 16)] * 3, classes=("road", "car"))
    (root / "classes.txt").write_bytes(b"\xef\xbb\xbfroad\r\ncar\r\n")
    assert read_classes_file(root / "classes.txt") == ["road", "car"]
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_bytes(b"\xef\xbb\xbf00\r\n01\r\n")
    (root / "palette.txt").write_bytes("10 20 30\r\n40 50 60\r\n".encode("utf-16"))  # Notepad's "Unicode"
    dataset = FolderDataset(root, "train")
    assert dataset.classes == ["road", "car"] and len(dataset) == 2
    assert dataset.palette == [(10, 20, 30), (40, 50, 60)]
    (root / "classes.txt").write_bytes(b"road\xff\n")
    with pytest.raises(ValueError, match=r"classes.txt is not UTF-8 text"):
        FolderDataset(root)


# ------------------------------------------------------------------ 3. one setting, every stage


def test_mask_messages_name_the_stored_value(tmp_path):
    """ADE20K reported an annotation storing 200 as 'holds value(s) 199'; LoveDA already said 12."""
    ade = tmp_path / "ADEChallengeData2016"
    for part in ("images", "annotations"):
        (ade / part / "validation").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ade / "images" / "validation" / "ADE_val_00000001.jpg")
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(ade / "annotations" / "validation" / "ADE_val_00000001.png")
    with pytest.raises(ValueError, match=r"holds value\(s\) 200 outside the 150 classes of ADE20KDataset"):
        build_dataset("ade20k", tmp_path, "val")[0]
    loveda = tmp_path / "loveda"
    for part in ("img_dir", "ann_dir"):
        (loveda / part / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(loveda / "img_dir" / "val" / "1.png")
    Image.fromarray(np.full((8, 8), 12, np.uint8)).save(loveda / "ann_dir" / "val" / "1.png")
    with pytest.raises(ValueError, match=r"holds value\(s\) 12 outside the 7 classes of LoveDADataset"):
        build_dataset("loveda", loveda, "val")[0]


def test_ignore_index_other_than_255_reaches_the_padding(tmp_path):
    """pytorch-semseg#67: ignore 250 on the dataset and the config still crashed (masks padded with 255)."""
    root = _folder(tmp_path / "ign", [(24, 24)] * 4, ignore=250)
    dataset = FolderDataset(root, ignore_index=250, transforms=train_transforms(32, rotation=0, blur_p=0))
    config = TrainConfig(iters=1, batch_size=2, num_workers=0, ignore_index=250, out_dir=str(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"fill padded .* with 255, but the ignore index is 250.*ignore_index=250\)"):
        Trainer(tiny_pspnet(2), dataset, None, config)  # refused before any work, naming the fix
    with pytest.raises(ValueError, match="marks unscored pixels 255 but TrainConfig.ignore_index is 250"):
        Trainer(tiny_pspnet(2), FolderDataset(root), None, config)


@pytest.fixture(scope="module")
def amp_runs(tmp_path_factory):
    """Two tiny runs with --amp (bf16 on the CPU) and --ignore-index 250: validation at its default
    (full precision) and with --val-amp."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("amp")
    root = _folder(base / "data", [(24, 24)] * 6, ignore=250)
    (base / "recipe.json").write_text(json.dumps(_settings()))
    runs = {}
    try:
        for name, extra in (("default", []), ("val-amp", ["--val-amp"])):
            out = base / name
            argv = ["train", "--recipe", str(base / "recipe.json"), "--data-root", str(root), "--val-fraction", "0.5"]
            assert main([*argv, "--amp", "--ignore-index", "250", "--out", str(out), *extra]) == 0
            runs[name] = out
    finally:
        torch.set_num_threads(threads)
    return root, runs


@pytest.mark.parametrize("run, amp, precision", [("default", "none", "fp32"), ("val-amp", "bf16", "bf16")])
def test_amp_validation_equals_pspnet_eval_with_the_same_precision(amp_runs, run, amp, precision, tmp_path):
    """mmsegmentation#1680/#2440: validation under --amp reported other numbers than pspnet eval, silently."""
    root, runs = amp_runs
    trained = json.loads((runs[run] / "metrics.json").read_text())
    assert trained["precision"] == precision  # the metrics file says which
    # ignore 250 trained (padding from the 24 px pictures to the 32 px crop) and is recorded with the model
    assert json.loads((runs[run] / "model" / "config.json").read_text())["pretrained_cfg"]["ignore_index"] == 250
    argv = ["eval", "--weights", str(runs[run] / "model"), "--dataset", "folder", "--data-root", str(root)]
    assert main([*argv, "--val-fraction", "0.5", "--amp", amp, "--json", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["precision"] == precision
    for key in ("mIoU", "mAcc", "aAcc", "pixels", "per_class"):
        assert evaluated[key] == trained[key], key


# ------------------------------------------------------------------ 4. sentences, not framework errors


def test_short_palette_is_padded_the_same_way_everywhere_never_black():
    """mmsegmentation#3371/#3285: colorize painted extra classes black, legend() raised IndexError."""
    from pspnet_lib.core.palette import IGNORE_COLOUR, default_palette, padded_palette
    from pspnet_lib.inference.visualize import colorize, legend, overlay

    short = [(200, 10, 10)]
    expected = [(200, 10, 10), *default_palette(3)[1:]]
    assert padded_palette(short, 3) == expected and IGNORE_COLOUR not in expected[1:]
    key = legend(["road", "car", "tree"], short)
    # the middle of each swatch (rows of 18 px from y=3, 14 px squares from x=4)
    assert [key.getpixel((11, 3 + r * 18 + 8)) for r in range(3)] == expected
    mask = np.array([[0, 1], [2, 255]])
    painted = colorize(mask, short).convert("RGB")
    assert [painted.getpixel((x, y)) for y, x in ((0, 0), (0, 1), (1, 0))] == expected
    assert painted.getpixel((1, 1)) == IGNORE_COLOUR  # only ignored pixels are black
    assert colorize(np.array([[250, 1]]), short, ignore_index=250).convert("RGB").getpixel((0, 0)) == IGNORE_COLOUR
    blended = overlay(np.zeros((2, 2, 3), np.uint8), mask, short, alpha=1.0)
    assert blended.getpixel((1, 0)) == expected[1]  # (x, y): the pixel of class 1


def test_model_card_and_predictions_use_the_padded_palette():
    from pspnet_lib.core.palette import padded_palette
    from pspnet_lib.hub.model_card import generate_model_card

    model = tiny_pspnet(3)
    model.pretrained_cfg = {"classes": ["road", "car", "tree"], "palette": [[200, 10, 10]]}
    card = str(generate_model_card(model))
    colours = padded_palette([(200, 10, 10)], 3)
    assert all(f"| {i} | {name} | {colours[i]} |" in card for i, name in enumerate(["road", "car", "tree"]))
    prediction = model.predict(torch.zeros(3, 16, 16, dtype=torch.uint8))
    assert prediction.palette == colours


def test_load_log_names_the_source_once(tmp_path, caplog):
    from pspnet_lib import load_pretrained

    tiny_pspnet(2).save_pretrained(tmp_path / "m")
    caplog.set_level(logging.INFO, logger="pspnet_lib.hub.loading")
    load_pretrained(tmp_path / "m", num_classes=3)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("settings"))
    assert line.count(str(tmp_path / "m")) == 1 and "stored with" in line and "num_classes=3 (argument)" in line
