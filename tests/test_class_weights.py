"""Class weights computed from the training masks (``class_weight="auto"``, ``--class-weight``), and
what a run reports per class (validation JSON, confusion matrices, ``pspnet eval``)."""

import json
import logging
import math

import numpy as np
import pytest
from PIL import Image

from pspnet_lib.cli import main
from pspnet_lib.data import build_dataset
from pspnet_lib.engine import TrainConfig
from pspnet_lib.engine.checkpoint import load_checkpoint
from pspnet_lib.engine.class_weights import (
    PixelCounts,
    class_weights_from_counts,
    compute_class_weights,
    count_class_pixels,
)
from pspnet_lib.engine.config import SettingError

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 40  # pictures of 40x40 pixels: 25 cells of the model's 8x8 output grid
CLASSES = ["background", "building", "car"]
#: which images hold a car / a building (one 8x8 block each): in the 16 training images 2 cars and
#: 10 buildings, i.e. 0.5% and 2.5% of the 25,600 pixels (97% background); half the 8 validation
#: images hold a car.
CARS = {0, 8, 16, 18, 20, 22}
BUILDINGS = {*range(1, 11), 16, 17, 19, 21, 23}


def write_imbalanced_folder(root, seed: int = 0):
    """The folder layout of docs/datasets.md with splits/train.txt (16 images) and splits/val.txt (8);
    the pictures colour-code the classes (grey background, red buildings, green cars)."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "splits" / "train.txt").write_text("".join(f"{i:03d}\n" for i in range(16)))
    (root / "splits" / "val.txt").write_text("".join(f"{i:03d}\n" for i in range(16, 24)))
    for i in range(24):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cells = [divmod(int(c), SIZE // 8) for c in rng.permutation(25)[:2]]
        for value, (y, x) in ((2, cells[0]), (1, cells[1])):
            if i in (CARS if value == 2 else BUILDINGS):
                mask[8 * y : 8 * y + 8, 8 * x : 8 * x + 8] = value
        image = 110 + 8 * rng.standard_normal((SIZE, SIZE, 3))
        for value, colour in ((1, (200, 60, 60)), (2, (60, 200, 60))):
            image[mask == value] = colour + 8 * rng.standard_normal(((mask == value).sum(), 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    return write_imbalanced_folder(tmp_path_factory.mktemp("imbalanced"))


def test_auto_weights_are_the_documented_ones(imbalanced):
    """97% / 2.5% / 0.5% of the training pixels: auto (ENet's inverse log) gives 1 / ln(1.02 + p);
    median-frequency balancing takes each class's frequency in the images that hold it (4% for
    both the building and the car here), so the car is not up-weighted above the building."""
    train = build_dataset("folder", imbalanced, "train")
    counts = count_class_pixels(train, 3)
    assert counts.class_pixels.tolist() == [24832, 640, 128] and counts.images == 16
    auto = compute_class_weights(train, progress=False)
    assert auto == pytest.approx([1 / math.log(1.02 + p) for p in (0.97, 0.025, 0.005)], rel=1e-12)
    assert auto == pytest.approx([1.4532, 22.7186, 40.4979], abs=1e-4)  # the values docs/training.md quotes
    assert compute_class_weights(train, rule="inverse_log", num_workers=1) == auto  # a worker reads the masks
    assert compute_class_weights(train, rule="median_frequency") == pytest.approx([0.04 / 0.97, 1.0, 1.0], rel=1e-12)


def test_median_frequency_on_masks_of_equal_shares():
    """Masks that each hold 97 / 2.5 / 0.5 %: the median class (2.5%) weighs 1 -> [0.025/0.97, 1, 5]."""
    counts = PixelCounts(np.array([9700, 250, 50]), np.array([10000, 10000, 10000]), images=10, ignored_pixels=0)
    assert class_weights_from_counts(counts, "median_frequency") == pytest.approx([0.025 / 0.97, 1.0, 5.0])


def test_weight_rules_on_counts(caplog):
    # Class 1 occurs in a quarter of the pixels of the images that hold it; class 3 never occurs.
    counts = PixelCounts(np.array([600, 100, 300, 0]), np.array([1000, 400, 1000, 0]), images=5, ignored_pixels=7)
    frequencies = [0.6, 0.25, 0.3]
    median = 0.3  # of the classes that occur
    assert class_weights_from_counts(counts, "median_frequency") == pytest.approx(
        [median / f for f in frequencies] + [0.0]
    )
    shares = [0.6, 0.1, 0.3]
    assert class_weights_from_counts(counts) == pytest.approx([1 / math.log(1.02 + p) for p in shares] + [0.0])
    with pytest.raises(
        ValueError, match="unknown class-weight rule 'median'; expected auto, inverse_log, median_frequency"
    ):
        class_weights_from_counts(counts, "median")
    empty = PixelCounts(np.zeros(2, np.int64), np.zeros(2, np.int64), images=3, ignored_pixels=30)
    with pytest.raises(ValueError, match="the 3 training masks hold no scored pixel"):
        class_weights_from_counts(empty)


def test_absent_class_gets_zero_and_a_warning(imbalanced, caplog):
    train = build_dataset("folder", imbalanced, "train", classes=[*CLASSES, "boat"])
    with caplog.at_level(logging.WARNING, logger="pspnet_lib"):
        weights = compute_class_weights(train)
    assert weights[3] == 0.0 and weights[:3] == pytest.approx([1 / math.log(1.02 + p) for p in (0.97, 0.025, 0.005)])
    assert "class(es) boat have no pixel in the 16 training masks: weight 0" in caplog.text


@pytest.mark.parametrize(
    "value, message",
    [
        ("1,2", "class_weight=[1.0, 2.0]: has 2 weights but there are 3 classes: give one per class, or auto"),
        ("1,-2,1", "class_weight='1,-2,1': must hold finite weights >= 0, got -2.0"),
        ("1,inf,1", "class_weight='1,inf,1': must hold finite weights >= 0, got inf"),
        ("0,0,0", "needs at least one positive weight"),
        ("median", "must be auto, inverse_log, median_frequency or one weight per class"),
    ],
)
def test_bad_class_weights_are_refused_before_any_work(imbalanced, tmp_path, value, message):
    with pytest.raises(SettingError) as error:
        TrainConfig(class_weight=value).check_num_classes(3)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_loss_flags_stop_pspnet_train_before_any_work(imbalanced, tmp_path, caplog):
    out = tmp_path / "run"
    base = ["train", "--dataset", "folder", "--data-root", str(imbalanced), "--out", str(out), "--iters", "1"]
    for flags, message in (
        (["--class-weight", "1,2"], "--class-weight 1.0,2.0: has 2 weights but there are 3 classes"),
        (["--class-weight", "1,-1,1"], "--class-weight 1,-1,1: must hold finite weights >= 0, got -1.0"),
        (["--loss", "dic"], "--loss dic: unknown loss term 'dic'; expected one of cross_entropy (ce), focal"),
        (
            ["--aux-loss", "ce(label_smoothing=2)"],
            "--aux-loss ce(label_smoothing=2): the cross_entropy loss: label_smoothing must be in [0, 1)",
        ),
        (
            ["--sampler", "ohem(thresh=1.5)"],
            "--sampler ohem(thresh=1.5): the ohem sampler: thresh must be in (0, 1) or None",
        ),
        (["--sampler", "ohem", "--loss", "dice"], "--sampler ohem: weights per-pixel terms, but the loss has none"),
    ):
        caplog.clear()
        assert main([*base, *flags]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], (flags, errors)
    assert not out.exists()


TINY = {"backbone": "resnet18", "stem": "standard", "head_channels": 32, "aux_channels": 16, "ppm_channels": 8}


def _train_twice(folder, root):
    """The same short run (60 SGD steps of 4 pictures, seed 0) without and with ``--class-weight auto``,
    through ``pspnet train``; validated at iterations 30 and 60."""
    recipe = root / "tiny.json"
    recipe.write_text(
        json.dumps(
            {
                "model": TINY,
                "augment": {"crop_size": [SIZE, SIZE], "scale_range": None, "rotation": 0, "blur_p": 0},
                "train": {"batch_size": 4, "lr": 0.02, "num_workers": 0, "ckpt_interval": 0, "log_interval": 30},
            }
        )
    )
    base = ["train", "--recipe", str(recipe), "--dataset", "folder", "--data-root", str(folder)]
    base += ["--iters", "60", "--val-interval", "30", "--seed", "0", "--no-progress", "--device", "cpu"]
    for name, flags in (("plain", []), ("auto", ["--class-weight", "auto"])):
        assert main([*base, "--out", str(root / name), *flags]) == 0


@pytest.mark.slow
def test_a_short_run_with_auto_class_weights(imbalanced, tmp_path, capsys):
    """One test (the two runs are set up once, on one xdist worker) for what the runs show."""
    _train_twice(imbalanced, tmp_path)
    capsys.readouterr()
    _check_the_rare_class_is_learned(tmp_path)
    _check_the_weights_are_recorded(tmp_path)
    _check_each_validation_reports_per_class(tmp_path / "auto")
    _check_pspnet_eval_prints_and_draws(tmp_path / "auto", imbalanced, tmp_path / "eval", capsys)


def _check_the_rare_class_is_learned(runs):
    """Same seed, same steps: without weights the 0.5% class is never predicted (IoU 0); with the
    computed weights its IoU on the validation images is clearly above 0 (0.25 with seed 0; from
    0.12 to 0.30 over seeds 0-5, and 0 without weights for every seed, when this test was written)."""
    plain = json.loads((runs / "plain" / "metrics.json").read_text())["per_class"]
    weighted = json.loads((runs / "auto" / "metrics.json").read_text())["per_class"]
    assert plain["car"]["IoU"] == 0.0
    assert weighted["car"]["IoU"] > 0.1


def _check_the_weights_are_recorded(runs):
    expected = pytest.approx([1 / math.log(1.02 + p) for p in (0.97, 0.025, 0.005)], rel=1e-12)
    assert json.loads((runs / "auto" / "train_config.json").read_text())["class_weight"] == expected
    assert load_checkpoint(runs / "auto" / "checkpoints" / "latest.pt")["config"]["class_weight"] == expected
    cfg = json.loads((runs / "auto" / "model" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["class_weight"] == expected and cfg["class_weight_rule"] == "inverse_log"
    assert "class_weight" not in json.loads((runs / "plain" / "model" / "config.json").read_text())["pretrained_cfg"]


def _check_each_validation_reports_per_class(run):
    folder = run / "validation"
    assert sorted(p.name for p in folder.iterdir()) == [
        "iter_00000030.json",
        "iter_00000030_confusion.png",
        "iter_00000060.json",
        "iter_00000060_confusion.png",
    ]
    report = json.loads((folder / "iter_00000060.json").read_text())
    final = json.loads((run / "metrics.json").read_text())
    assert report["iteration"] == 60 and report["per_class"] == final["per_class"]
    matrix = report["confusion_matrix"]
    assert matrix["rows"] == "ground truth" and matrix["columns"] == "prediction" and matrix["classes"] == CLASSES
    counts = np.array(matrix["counts"])
    # 8 validation pictures of 40x40: 4 cars and 5 buildings of 64 pixels
    assert counts.sum() == report["pixels"] == 8 * SIZE * SIZE
    assert counts.sum(1).tolist() == [8 * SIZE * SIZE - 9 * 64, 5 * 64, 4 * 64]
    iou = np.diag(counts) / (counts.sum(0) + counts.sum(1) - np.diag(counts))
    assert iou.tolist() == pytest.approx([report["per_class"][c]["IoU"] for c in CLASSES])
    assert final["confusion_matrix"] == matrix
    with Image.open(folder / "iter_00000030_confusion.png") as picture:
        assert picture.mode == "RGB" and picture.width > 200 and picture.height > 150


def _check_pspnet_eval_prints_and_draws(run, folder, out, capsys):
    out.mkdir()
    report, drawing = out / "eval.json", out / "cm.png"
    argv = [
        "eval",
        "--weights",
        str(run / "model"),
        "--dataset",
        "folder",
        "--data-root",
        str(folder),
        "--split",
        "val",
    ]
    assert main([*argv, "--json", str(report), "--confusion-matrix", str(drawing)]) == 0
    printed = capsys.readouterr().out
    trained = json.loads((run / "metrics.json").read_text())
    car_iou = trained["per_class"]["car"]["IoU"]
    assert any(line.split()[:2] == ["car", f"{100 * car_iou:.2f}"] for line in printed.splitlines()), printed
    assert json.loads(report.read_text())["confusion_matrix"] == trained["confusion_matrix"]
    assert f"confusion matrix drawn in {drawing}" in printed
    with Image.open(drawing) as picture:
        assert picture.format == "PNG"
    assert main([*argv, "--confusion-matrix", str(out / "cm.jpg")]) == 1  # a PNG only, refused before any work
    assert not (out / "cm.jpg").exists()
