"""Hostile arguments, downloads and damaged runs (issue 22, items 3-6).

The cache keyed by the URL asked for, checked Trainer checkpoints, outputs that never replace an
input, arguments checked where they enter, untrusted strings escaped, the inference budget.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib.cli import main
from pspnet_lib.core.escape import printable
from pspnet_lib.core.limits import ResourceLimitError
from pspnet_lib.engine import TrainConfig, Trainer
from pspnet_lib.engine.checkpoint import load_checkpoint
from pspnet_lib.hub import CheckpointError
from pspnet_lib.hub.http_download import fetch_url, url_cache_path

from ._engine_helpers import ColourBlocks, tiny_pspnet
from .hub_utils import serve_directory

# --- item 3: the cache keyed by what was asked ---


def test_downloads_are_cached_by_url_not_by_file_name(tmp_path):
    served = tmp_path / "served"
    for folder, content in (("other", b"\x00other model\x00" * 50), ("ok", b"\x00the right model\x00" * 50)):
        (served / folder).mkdir(parents=True)
        (served / folder / "plainmodel.pth").write_bytes(content)
    cache = tmp_path / "cache"
    with serve_directory(served) as server:
        other = fetch_url(f"{server.url}/other/plainmodel.pth", cache, progress=False)
        ok = fetch_url(f"{server.url}/ok/plainmodel.pth", cache, progress=False)
        assert server.requests == ["/other/plainmodel.pth", "/ok/plainmodel.pth"]  # the second was fetched
        assert ok != other and ok.read_bytes() == (served / "ok" / "plainmodel.pth").read_bytes()
        assert fetch_url(f"{server.url}/ok/plainmodel.pth", cache, progress=False) == ok
        assert len(server.requests) == 2  # the same URL again: from the cache
    record = json.loads(ok.with_name("plainmodel.pth.source.json").read_text())
    assert record["url"].endswith("/ok/plainmodel.pth") and record["size"] == ok.stat().st_size
    assert set(record) - {"ctime_ns"} == {"format", "url", "sha256", "size", "mtime_ns", "ino"}  # ctime: POSIX
    assert ok == url_cache_path(record["url"], cache)


def test_a_download_has_an_overall_deadline(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "slow.pth").write_bytes(bytes(200_000))
    monkeypatch.setenv("PSPNET_LIMIT_DOWNLOAD_SECONDS", "1")
    start = time.perf_counter()
    with serve_directory(served, mode="trickle") as server:
        url = f"{server.url}/slow.pth"
        with pytest.raises(OSError) as info:
            fetch_url(url, tmp_path / "cache", progress=False)
        server.release.set()
    message = str(info.value)
    assert time.perf_counter() - start < 10
    assert "did not finish within 1 s" in message and "kB/s" in message and "PSPNET_LIMIT_DOWNLOAD_SECONDS" in message
    assert "\n" not in message and not url_cache_path(url, tmp_path / "cache").exists()


# --- item 4: checked checkpoints ---


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run of 2 iterations with a numbered checkpoint at each, keeping both."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = TrainConfig(
        iters=2, batch_size=2, num_workers=0, ckpt_interval=1, keep_last=2, log_interval=1, progress=False,
        export=False, out_dir=str(root / "run"), seed=0,
    )  # fmt: skip
    Trainer(tiny_pspnet(), ColourBlocks(2, size=32), None, config).fit()
    return root / "run", config


def _copy_run(finished_run, tmp_path, *, copy: tuple[str, ...] = ()) -> tuple[Path, TrainConfig]:
    """The finished run in a new folder: files hard-linked (cheap), those in ``copy`` copied (to be changed)."""
    source, config = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run, copy_function=os.link)
    for name in copy:
        target = run / "checkpoints" / name
        target.unlink()
        shutil.copyfile(source / "checkpoints" / name, target)
    (run / "checkpoints" / "latest.pt").unlink()  # as the Trainer keeps it: the same file as the newest
    (run / "checkpoints" / "latest.pt").hardlink_to(run / "checkpoints" / "iter_00000002.pt")
    return run, config.replace(out_dir=str(run))


def _rewrite_keeping_digest(path: Path) -> None:
    """The content changed after the write (a valid file, a stale digest): what a disk error or an edit
    leaves, and what torch.load reads without a word."""
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key] + 1
    with open(path, "r+b") as f:  # in place: latest.pt and its iter_*.pt share the file
        f.truncate(0)
        torch.save(state, f)


def test_a_damaged_checkpoint_is_refused_and_resume_falls_back(finished_run, tmp_path, caplog):
    from pspnet_lib import load_pretrained

    run, config = _copy_run(finished_run, tmp_path, copy=("iter_00000002.pt",))
    latest = run / "checkpoints" / "latest.pt"
    assert "content_sha256" not in load_checkpoint(latest)  # verified, then removed from the state
    _rewrite_keeping_digest(latest)
    with pytest.raises(
        CheckpointError, match=r"latest.pt is damaged: its content \(sha256 .*\) differs from the digest"
    ):
        load_checkpoint(latest)
    with pytest.raises(CheckpointError, match=r"latest.pt is damaged"):
        load_pretrained(latest)
    trainer = Trainer(tiny_pspnet(), ColourBlocks(2, size=32), None, config, resume=True)
    with caplog.at_level(logging.WARNING):
        trainer._restore_or_seed()
    assert trainer.iteration == 1  # iter_00000001.pt, the newest intact one
    assert "cannot resume from" in caplog.text and "is damaged" not in caplog.text.split("instead")[1]


def test_a_run_killed_after_its_last_checkpoint_is_tidied_on_resume(finished_run, tmp_path):
    run, config = _copy_run(finished_run, tmp_path)
    ckpt = run / "checkpoints"
    # what a kill between writing iter_2 and rotating leaves with --keep-last 1: one numbered
    # checkpoint too many, and the temporary files of interrupted writes
    config = config.replace(keep_last=1)
    stale = [ckpt / ".latest.pt.tmp-99999999", run / ".history.json.abcd1234.tmp.json"]
    for path in stale:
        path.write_bytes(b"partial")
    summary = Trainer(tiny_pspnet(), ColourBlocks(2, size=32), None, config, resume=True).fit()
    assert summary["iteration"] == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["iter_00000002.pt", "latest.pt"]
    assert not any(p.exists() for p in stale)


# --- item 5: an input is never overwritten ---


def test_eval_never_writes_over_an_input(tmp_path, caplog):
    from pspnet_lib.data import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 0.5, "val": 0.5})
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "config.json").write_text("{}")  # never read: the outputs are checked first
    mask = next((data / "masks" / "val").iterdir())
    for target in (mask, data / "classes.txt", weights / "config.json"):
        before = target.read_bytes()
        argv = ["eval", "--weights", str(weights), "--dataset", "folder", "--data-root", str(data), "--json"]
        with caplog.at_level(logging.ERROR):
            assert main([*argv, str(target)]) == 1
        assert target.read_bytes() == before
        assert f"refusing to write {target}" in caplog.text and "choose another --json file" in caplog.text
        caplog.clear()


# --- item 6: arguments checked where they enter ---


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--momentum", "2"], "--momentum must be a number in [0, 1), got 2"),
        (["train", "--aux-weight", "nan"], "--aux-weight must be a number >= 0 (0 disables the auxiliary head), got nan"),
        (["train", "--clip-grad-norm", "-1"], "--clip-grad-norm must be a number > 0"),
        (["train", "--poly-power", "-2"], "--poly-power must be a number in [0, 100]"),
        (["train", "--eval-scales", "0.5,inf"], "argument --eval-scales: expected comma-separated finite numbers"),
        (["train", "--crop-size", "100000"], "argument --crop-size: expected N or H,W with values in [1, 8192]"),
        (["train", "--num-classes", "0"], "argument --num-classes: expected an integer in [1, 65536], got '0'"),
        (["eval", "--weights", "w", "--val-fraction", "2"], "argument --val-fraction: expected a number in (0, 1)"),
        (["convert", "a", "b", "--num-classes", "0"], "argument --num-classes: expected an integer in [1, 65536]"),
        (["export", "--weights", "w", "--out", "x.onnx", "--height", "0"], "argument --height: expected an integer in [1, 8192]"),
    ],
)  # fmt: skip
def test_arguments_are_checked_at_the_boundary(argv, message, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "train":
        argv = [*argv, "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage and one error line naming the flag
            code = exc.code
    shown = capsys.readouterr().err + caplog.text
    assert code in (1, 2) and message in shown, shown
    assert not (tmp_path / "run").exists()


def test_training_refuses_zero_classes():
    from pspnet_lib.engine.run import resolve_settings

    assert resolve_settings("voc-mmseg-20k", num_classes=0)["num_classes"] == 0  # kept, not replaced by the recipe's
    from pspnet_lib.engine import TrainingRun

    with pytest.raises(ValueError, match=r"num_classes must be an integer in \[1, 65536\] to train"):
        TrainingRun.from_recipe("voc-mmseg-20k", "nowhere", num_classes=0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": "x"}, "seed must be a 64-bit integer, got 'x'"),  # was "invalid literal for int()" hours later
        ({"sync_bn": "yes"}, "sync_bn must be true or false, got 'yes'"),
        ({"eval_scales": [float("nan")]}, "eval_scales must be 1 to 16 numbers in (0, 8]"),
        ({"warmup_ratio": 2}, "warmup_ratio must be a number in [0, 1], got 2"),
    ],
)
def test_settings_read_from_recipe_files_are_checked(change, message):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict(change)
    assert str(info.value).startswith(message)


def test_untrusted_strings_are_escaped_and_cut(tmp_path, capsys):
    assert printable("ok\x1b[31mred\x00\nINFO forged") == "ok\\x1b[31mred\\x00\\nINFO forged"
    assert printable("\u202eevil") == "\\u202eevil" and printable("Straße 東京") == "Straße 東京"
    assert printable("x" * 1000, 10) == "xxxxxxxxxx... (990 more characters)"

    from pspnet_lib.hub.load_report import load_weights

    model = tiny_pspnet()
    long_name = "x" * 1_000_000
    with pytest.raises(ValueError) as info:
        load_weights(model, {**model.state_dict(), long_name: torch.zeros(1)}, source="file.pth")
    assert len(str(info.value)) < 2000 and "\n" not in str(info.value) and "more characters" in str(info.value)

    model.pretrained_cfg = {"classes": ["road\x1b]0;pwned\x07", "car\x00\nINFO pspnet_lib: forged", "y" * 5000]}
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    assert main(["info", str(folder), "--classes"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out and "\x07" not in out
    assert not any(line.startswith("INFO pspnet_lib: forged") for line in out.splitlines())  # no forged line
    assert "road\\x1b]0;pwned\\x07" in out and "(4920 more characters)" in out


def test_no_scored_pixel_is_explained():
    from pspnet_lib.engine.metrics import NOTHING_SCORED, format_metrics_table

    nan = float("nan")
    table = format_metrics_table({"IoU": [nan, nan], "Acc": [nan, nan], "mIoU": nan, "mAcc": nan, "aAcc": nan,
                                  "pixels": 0}, ["a", "b"])  # fmt: skip
    assert table.splitlines()[-2].startswith("mIoU nan") and table.splitlines()[-1] == NOTHING_SCORED


def test_a_mask_with_a_meaningful_second_channel_is_refused(tmp_path):
    from pspnet_lib.data import FolderDataset

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / "a.png")
    labels = np.ones((16, 16), np.uint8)
    alpha = np.full((16, 16), 255, np.uint8)
    alpha[:4] = 0  # transparent rows: a second channel that means something
    Image.fromarray(np.stack([labels, alpha], -1), mode="LA").save(root / "masks" / "a.png")
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"a.png has 2 channels \(grey \+ alpha\) and 64 of its pixels are not opaque"):
        FolderDataset(root)[0]


def _png_header(width: int, height: int) -> bytes:
    """The signature and header chunks of a grey PNG of ``width x height`` (the picture data left out:
    the budget is checked from the header, before anything is decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_inference_has_a_pixel_budget_that_points_at_tiled_inference(tmp_path):
    from pspnet_lib import predict

    picture = tmp_path / "big.png"
    picture.write_bytes(_png_header(13_000, 13_000))  # 169 Mpx (the probe's PNG was 493 KB); never decoded
    model = tiny_pspnet()
    start = time.perf_counter()
    with pytest.raises(ResourceLimitError) as info:
        predict(model, picture)  # refused from the header, before decoding
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "big.png (13000x13000 pixels" in message and "169.0 Mpx" in message and "tiled inference" in message
    assert "PSPNET_LIMIT_WHOLE_IMAGE_PIXELS" in message

    model.pretrained_cfg = {"inference": {"mode": "slide", "crop": [1, 1], "stride": [1, 1]}}
    with pytest.raises(ResourceLimitError, match=r"slide inference with 1x1 windows every 1x1 pixels .*needs 90,000"):
        predict(model, np.zeros((300, 300, 3), np.uint8))
