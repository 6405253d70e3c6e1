"""``pspnet predict``: folders, corrupt files, overlays, no silent overwrite."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pspnet_lib import predict
from pspnet_lib.cli import main

from .infer_utils import CLASSES, save_model_dir, tiny_model

PALETTE = [(10, 20, 30), (200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = tiny_model()
    model.pretrained_cfg = {"classes": CLASSES, "palette": PALETTE, "inference": {"mode": "whole", "resize": None}}
    return save_model_dir(model, tmp_path_factory.mktemp("weights") / "tiny"), model


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(root / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (25, 19), dtype=np.uint8)).save(root / "b_gray.png")
    Image.fromarray(rng.integers(0, 256, (22, 27, 4), dtype=np.uint8)).save(root / "sub" / "c_rgba.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return root


def test_folder_with_a_corrupt_file(weights, folder, tmp_path, capsys, caplog):
    weights_dir, model = weights
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--weights", str(weights_dir), "--out", str(out), "--overlay", "--recursive"])
    assert code == 1
    summary = capsys.readouterr().out
    assert "segmented 3 of 4 image(s)" in summary and "1 failed" in summary and "broken.jpg" in summary
    assert any("broken.jpg" in r.getMessage() and "cannot read" in r.getMessage() for r in caplog.records)

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "a.png",
        "a_overlay.png",
        "b_gray.png",
        "b_gray_overlay.png",
        "manifest.jsonl",
        "sub/c_rgba.png",
        "sub/c_rgba_overlay.png",
    ]
    # The mask PNG is paletted, at the image's size, and holds exactly what predict() computes.
    mask = Image.open(out / "a.png")
    assert mask.mode == "P" and mask.size == (41, 30)
    assert mask.getpalette()[:15] == [c for colour in PALETTE for c in colour]
    expected = predict(model, folder / "a.jpg").mask.numpy()
    assert np.array_equal(np.asarray(mask), expected)
    overlay = Image.open(out / "sub" / "c_rgba_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (27, 22)
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_success_exits_zero_and_explicit_files_work(weights, folder, tmp_path, capsys):
    weights_dir, _ = weights
    out = tmp_path / "out"
    code = main(
        ["predict", str(folder / "a.jpg"), str(folder / "b_gray.png"), "--weights", str(weights_dir), "--out", str(out)]
    )
    assert code == 0
    assert "segmented 2 of 2" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b_gray.png", "manifest.jsonl"]
    # Without --recursive, sub-folders are not searched.
    code = main(["predict", str(folder / "sub"), "--weights", str(weights_dir), "--out", str(tmp_path / "o2")])
    assert code == 0 and (tmp_path / "o2" / "c_rgba.png").is_file()


def test_existing_outputs_are_not_overwritten_silently(weights, folder, tmp_path, caplog):
    weights_dir, _ = weights
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_gray.png").write_bytes(b"precious")
    args = [
        "predict",
        str(folder / "a.jpg"),
        str(folder / "b_gray.png"),
        "--weights",
        str(weights_dir),
        "--out",
        str(out),
    ]
    assert main(args) == 1
    assert "already exist" in caplog.text and "--overwrite" in caplog.text
    # Checked before any work: nothing else was written and the existing file is untouched.
    assert (out / "b_gray.png").read_bytes() == b"precious"
    assert not (out / "a.png").exists()
    assert main(args + ["--overwrite"]) == 0
    assert Image.open(out / "b_gray.png").mode == "P"


def test_bad_arguments_fail_before_work(weights, folder, tmp_path, caplog):
    weights_dir, _ = weights
    out = tmp_path / "out"
    assert main(["predict", str(folder / "nope.jpg"), "--weights", str(weights_dir), "--out", str(out)]) == 1
    assert "input not found" in caplog.text
    assert main(["predict", str(folder), "--weights", str(tmp_path / "no_model"), "--out", str(out)]) == 1
    assert "no_model" in caplog.text
    assert main(["predict", str(folder), "--weights", str(weights_dir), "--out", str(out), "--mode", "slide"]) == 1
    assert "crop" in caplog.text
    slide = ["--mode", "slide", "--crop", "64", "--stride", "100"]
    assert main(["predict", str(folder), "--weights", str(weights_dir), "--out", str(out), *slide]) == 1
    assert "stride must be at most the crop" in caplog.text and "(set by --mode/--size/--crop/--stride" in caplog.text
    assert not out.exists() or not any(out.iterdir())


def test_same_stem_in_two_folders_keeps_the_relative_path(weights, folder, tmp_path, caplog):
    """Issue 19: inputs with the same stem in different folders no longer collide (they were
    refused): the outputs keep the path relative to the inputs' common folder. Two inputs of one
    folder that differ only by extension still name one output, and are refused before any work."""
    weights_dir, _ = weights
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.jpg").write_bytes((folder / "a.jpg").read_bytes())
    out = tmp_path / "out"
    args = ["--weights", str(weights_dir), "--out", str(out)]
    assert main(["predict", str(folder / "a.jpg"), str(other / "a.jpg"), *args]) == 0
    assert (out / "photos" / "a.png").read_bytes() == (out / "other" / "a.png").read_bytes()
    same = tmp_path / "same"
    same.mkdir()
    (same / "x.jpg").write_bytes((folder / "a.jpg").read_bytes())
    Image.open(folder / "a.jpg").save(same / "x.png")
    assert main(["predict", str(same), "--weights", str(weights_dir), "--out", str(tmp_path / "o2")]) == 1
    message = caplog.records[-1].getMessage()
    assert "x.jpg" in message and "x.png" in message and "would both be written" in message
    assert not (tmp_path / "o2").exists()


def test_fast_option(weights, folder, tmp_path):
    weights_dir, _ = weights
    args = ["predict", str(folder / "a.jpg"), "--weights", str(weights_dir), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--out", str(tmp_path / "fast32"), "--fast", "--dtype", "float32"]) == 0
    assert main(args + ["--out", str(tmp_path / "fast"), "--fast"]) == 0  # auto: bf16 where native
    plain = np.asarray(Image.open(tmp_path / "plain" / "a.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fast32" / "a.png")), plain)  # exact path
    assert (np.asarray(Image.open(tmp_path / "fast" / "a.png")) == plain).mean() > 0.99


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [True, False])
def test_outputs_never_replace_the_input_pictures(weights, tmp_path, caplog, overwrite):
    """Issue 10 item 4: `predict DIR --out DIR --overwrite` replaced the photos with their masks."""
    weights_dir, _ = weights
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("p1.png", "p2.png", "p3.png", "p4.png"):
        Image.fromarray(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)).save(photos / name)
    before = _snapshot(photos)
    flag = ["--overwrite"] if overwrite else []
    assert main(["predict", str(photos), "--weights", str(weights_dir), "--out", str(photos), *flag]) == 1
    assert _snapshot(photos) == before
    message = caplog.records[-1].getMessage()
    assert "\n" not in message and "the input" in message and "p1.png" in message
    assert "--out" in message and "photos-masks" in message and "--overwrite" not in message


def test_the_input_folder_is_never_the_output_folder(weights, tmp_path, caplog):
    """JPEG inputs: no mask would replace a picture, but masks among the photos would be read as
    photos next time (and a.png would then clash with a.jpg's mask)."""
    weights_dir, _ = weights
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)).save(photos / name)
    before = _snapshot(photos)
    for out in (photos, tmp_path / "." / "photos"):
        assert main(["predict", str(photos), "--weights", str(weights_dir), "--out", str(out), "--overwrite"]) == 1
        message = caplog.records[-1].getMessage()
        assert "\n" not in message and "input folder" in message and "--out" in message and "photos-masks" in message
    assert _snapshot(photos) == before  # nothing written among the photos
    assert main(["predict", str(photos), "--weights", str(weights_dir), "--out", str(tmp_path / "masks")]) == 0


def test_outputs_that_are_links_to_inputs_are_refused(weights, tmp_path, caplog):
    """The same through a symlinked --out folder and through a hard link."""
    weights_dir, _ = weights
    rng = np.random.default_rng(2)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)).save(photos / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)).save(photos / "a_overlay.png")
    before = _snapshot(photos)
    link = tmp_path / "link-to-photos"
    link.symlink_to(photos, target_is_directory=True)
    assert main(["predict", str(photos), "--weights", str(weights_dir), "--out", str(link), "--overwrite"]) == 1
    assert "a_overlay.png" in caplog.records[-1].getMessage()
    # a hard link of an input (a_overlay.png) at the name of an output (a.png, the mask of a.jpg)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").hardlink_to(photos / "a_overlay.png")
    assert main(["predict", str(photos), "--weights", str(weights_dir), "--out", str(out), "--overwrite"]) == 1
    message = caplog.records[-1].getMessage()
    assert "a.png" in message and "a_overlay.png" in message
    assert _snapshot(photos) == before
