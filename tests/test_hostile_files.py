"""Hostile files stay within the budget or fail in one line (issue 22, items 1 and 2).

Every file here is generated (a few bytes to a few MB). The constructs are the probe's: pickles
that torch's weights-only unpickler accepts but that build gigabytes or burn minutes, zip records
that inflate 1000-fold, ambiguous archives that two parsers read differently, tensors whose
``numel`` is 10^10 over one stored value, a config that nests its pipeline 64 levels by name.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pspnet_lib import build_pspnet, load_pretrained
from pspnet_lib.core.limits import ResourceLimitError
from pspnet_lib.hub import CheckpointError
from pspnet_lib.hub.mmseg_config import read_checkpoint_config
from pspnet_lib.hub.serialization import read_checkpoint
from pspnet_lib.hub.validation import check_tensors

from . import hostile_files as H
from .hub_utils import SMALL

REPO = Path(__file__).resolve().parents[1]


def _refused(path: Path, *fragments: str) -> str:
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert time.perf_counter() - start < 5, message
    assert "\n" not in message and str(path) in message and "weights_only" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize(
    "name, pickle, fragments",
    [
        ("bytearray", H.bytearray_bomb(), ["calls builtins.bytearray with 1 argument(s) (int)", "trust_pickle"]),
        ("counter", H.counter_bomb(), ["calls builtins.bytearray with 1 argument(s) (int)"]),
        ("counter_of_text", H.counter_of_text(), ["calls collections.Counter with 1 argument(s) (str)"]),
        ("tensor_constructor", H.PROTO + H.glob("torch", "FloatTensor") + H.integer(3 << 30) + H.TUPLE1 + H.REDUCE + H.STOP,
         ["calls torch.FloatTensor"]),
        ("sparse", H.PROTO + H.glob("torch._utils", "_rebuild_sparse_tensor") + H.EMPTY_TUPLE + H.REDUCE + H.STOP,
         ["calls torch._utils._rebuild_sparse_tensor"]),
        ("hash", H.hash_bomb(), ["over the limit of 20,000,000 on items", "PSPNET_LIMIT_PICKLE_WORK"]),
        ("bytes", H.bytes_bomb(), ["over the limit of 256.0 MiB on bytes", "PSPNET_LIMIT_PICKLE_OBJECTS_BYTES"]),
        ("tree", H.tree_bomb(), ["its metadata needs", "PSPNET_LIMIT_PICKLE_NODES"]),
        ("deep", H.deep_nesting(), ["nesting depth", "PSPNET_LIMIT_PICKLE_DEPTH"]),
        ("view", H.state_dict({"w": H.tensor("0", 4, (100,), (1,))}), ["a tensor views element 99 of storage '0', which holds 4 elements"]),
        ("numel", H.state_dict({"w": H.tensor("0", 10**12, (2,), (1,))}),
         ["storage '0' is 16 bytes in the archive but its pickle declares 1000000000000 torch.float32 values"]),
    ],
)  # fmt: skip
def test_pickle_constructs_are_refused_before_they_run(tmp_path, name, pickle, fragments):
    path = H.write_zip(tmp_path / f"{name}.pth", pickle, [("archive/data/0", bytes(16))])
    _refused(path, *fragments)


def test_limits_are_raised_by_their_environment_variable(tmp_path, monkeypatch):
    path = H.write_zip(tmp_path / "bytes.pth", H.bytes_bomb(size=1 << 16, copies=20), [])
    monkeypatch.setenv("PSPNET_LIMIT_PICKLE_OBJECTS_BYTES", "1M")
    _refused(path, "its pickle needs", "over the limit of 1.0 MiB", "PSPNET_LIMIT_PICKLE_OBJECTS_BYTES=")
    monkeypatch.setenv("PSPNET_LIMIT_PICKLE_OBJECTS_BYTES", "2M")
    assert len(read_checkpoint(path)) == 20
    monkeypatch.setenv("PSPNET_LIMIT_PICKLE_OBJECTS_BYTES", "lots")
    with pytest.raises(ValueError, match=r"PSPNET_LIMIT_PICKLE_OBJECTS_BYTES='lots' is not a number"):
        read_checkpoint(path)


def _saved(tmp_path: Path) -> tuple[Path, dict]:
    state = {"w": torch.arange(64, dtype=torch.float32).reshape(8, 8), "b": torch.ones(3)}
    path = tmp_path / "good.pth"
    torch.save(state, path)
    return path, state


def test_zip_records_are_checked_before_they_are_read_or_inflated(tmp_path, monkeypatch):
    path, state = _saved(tmp_path)
    with zipfile.ZipFile(path) as source:
        records = [(i.filename, source.read(i)) for i in source.infolist()]
    # the same archive re-zipped with deflate (as `zip -r` would): read the same
    deflated = tmp_path / "deflated.pth"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in records:
            out.writestr(name, data)
    loaded = read_checkpoint(deflated)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    # 64 MiB of zeros deflated to 64 kB: refused from the directory, before inflating
    bomb = H.write_zip(
        tmp_path / "bomb.pth",
        H.state_dict({"w": H.tensor("0", 16 << 20, (16 << 20,), (1,))}),
        [("archive/data/0", bytes(64 << 20))],
        compression=zipfile.ZIP_DEFLATED,
    )
    assert bomb.stat().st_size < 200_000
    _refused(bomb, "its record archive/data/0", "bytes inflating to 67108864", "PSPNET_LIMIT_ZIP_INFLATE_RATIO")

    # many small records (each under the 1 MiB floor) are checked together
    entries = {f"w{i}": H.tensor(str(i), (64 << 10) // 4, (4,), (1,)) for i in range(300)}
    records = [(f"archive/data/{i}", bytes(64 << 10)) for i in range(300)]
    many = H.write_zip(tmp_path / "many.pth", H.state_dict(entries), records, compression=zipfile.ZIP_DEFLATED)
    _refused(many, "its 300 compressed tensor records (19660800 bytes inflated)", "PSPNET_LIMIT_ZIP_INFLATE_RATIO")

    # the pickle record's size is checked from the directory too
    monkeypatch.setenv("PSPNET_LIMIT_PICKLE_BYTES", "100")
    _refused(path, "its pickle record good/data.pkl needs", "over the limit of 100 bytes")


def _flip_in_record(path: Path, record: str) -> None:
    """Flip one bit inside a stored record's data (the CRC in the directory stays the old one)."""
    with zipfile.ZipFile(path) as archive:
        start = archive.getinfo(record).header_offset
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[start + 26 : start + 28], "little")
    extra_len = int.from_bytes(data[start + 28 : start + 30], "little")
    offset = start + 30 + name_len + extra_len
    data[offset + 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_ambiguous_and_damaged_archives_are_refused(tmp_path):
    path, _ = _saved(tmp_path)
    good = path.read_bytes()
    pickle = zipfile.ZipFile(path).read("good/data.pkl")

    case = H.write_zip(tmp_path / "case.pth", pickle, [("archive/Data.pkl", pickle)])
    _refused(case, "two records named 'archive/Data.pkl' (ignoring case)")
    upper = H.write_zip(tmp_path / "upper.pth", pickle, pickle_name="archive/Data.pkl")
    _refused(upper, "no archive/data.pkl")

    legacy_then_zip = tmp_path / "polyglot.pth"
    legacy_then_zip.write_bytes(H.legacy_bytes({"w": torch.zeros(2)}) + good)
    _refused(legacy_then_zip, "holds a zip archive after other data")
    prefixed = tmp_path / "prefixed.pth"
    prefixed.write_bytes(b"JUNK" + good)
    _refused(prefixed, "holds a zip archive after other data")
    trailing = tmp_path / "trailing.pth"
    trailing.write_bytes(good + b"more")
    _refused(trailing, "does not end with the zip directory")

    tar_path = tmp_path / "old.pth"
    with tarfile.open(tar_path, "w") as tar:
        for name in ("sys_info", "pickle", "tensors", "storages"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\x80\x02N."))
    _refused(tar_path, "it is a tar archive")

    flipped = tmp_path / "flipped.pth"
    flipped.write_bytes(good)
    _flip_in_record(flipped, "good/data/0")  # torch.load reads this without a word
    _refused(flipped, "record good/data/0 fails its CRC-32 check")

    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    _refused(cut, "not a complete zip archive", "truncated")
    legacy = H.legacy_bytes({"w": torch.zeros(1000)})
    cut_legacy = tmp_path / "cut_legacy.pth"
    cut_legacy.write_bytes(legacy[:-100])
    message = _refused(cut_legacy, "(the file is truncated)")
    assert "codec" not in message  # torch said "'ascii' codec can't decode..."


def test_legacy_storage_sizes_are_checked_before_allocation(tmp_path):
    data = H.legacy_bytes({"w": torch.zeros(3)})
    pid = H.integer(3) + H.NONE + H.TUPLE  # the storage's element count in its persistent id
    assert data.count(pid) == 1
    huge = tmp_path / "huge.pth"
    huge.write_bytes(data.replace(pid, H.integer(10**12) + H.NONE + H.TUPLE))
    _refused(huge, "its storages need 4000000000008 bytes after the pickles but 20 follow")
    assert torch.equal(read_checkpoint(_write(tmp_path / "ok.pth", data))["w"], torch.zeros(3))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_finiteness_check_reads_stored_values_only():
    one = torch.ones(1)
    expanded = one.as_strided((100_000, 100_000), (0, 0))  # numel 1e10: 10 GB of booleans if materialised
    start = time.perf_counter()
    check_tensors({"w": expanded}, "file.pth")
    assert time.perf_counter() - start < 1
    one[0] = float("nan")
    with pytest.raises(ValueError, match=r"file.pth: 1 weight tensor\(s\) hold NaN or Inf: w \(1 of 1 stored values\)"):
        check_tensors({"w": expanded}, "file.pth")
    strided = torch.randn(300, 200).t()
    strided[3, 4] = float("inf")
    with pytest.raises(ValueError, match=r"w \(1 of 60000 values\)"):
        check_tensors({"w": strided}, "file.pth")


def nested_pipeline_config(levels: int = 64) -> str:
    """The probe's 65-line config: the test pipeline nested in itself by name, 2^63 paths."""
    lines = ["p0 = [dict(type='Resize', img_scale=(2048, 512), keep_ratio=True)]"]
    for i in range(1, levels + 1):
        step = f"dict(type='MultiScaleFlipAug', img_scale=(2048, 512), transforms=p{i - 1})"
        lines.append(f"p{i} = [{step}, {step}]")
    lines.append(f"test_pipeline = p{levels}")
    lines.append("model = dict(decode_head=dict(type='PSPHead', num_classes=19, align_corners=True))")
    return "\n".join(lines)


def test_config_reading_work_is_bounded(caplog):
    start = time.perf_counter()
    with caplog.at_level("WARNING"):
        assert read_checkpoint_config({"config": nested_pipeline_config()}) is None
    assert time.perf_counter() - start < 2
    assert "PSPNET_LIMIT_CONFIG_VALUES" in caplog.text and "names nested in names" in caplog.text
    # a few levels are read as before
    fields, extra = read_checkpoint_config({"config": nested_pipeline_config(3)})
    assert fields["align_corners"] is True and extra["inference"]["resize"] == [2048, 512]


def _config_only_folder(folder: Path, config: dict, pretrained_cfg: dict, heads: bool = True) -> Path:
    """A save_pretrained folder whose weights file holds a tensor or two: every check below runs before
    the weights are fitted to the architecture."""
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"config": config, "pretrained_cfg": pretrained_cfg}))
    tensors = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}
    if heads:
        tensors["decode_head.classifier.bias"] = torch.zeros(3)
    save_file(tensors, folder / "model.safetensors")
    return folder


def test_model_and_protocol_are_estimated_together_before_building(tmp_path, monkeypatch):
    config = build_pspnet("resnet18", 3, stem="standard", **SMALL).config.to_dict()
    wide = _config_only_folder(
        tmp_path / "wide",
        {**config, "head_channels": 8192},  # each value within its documented bound...
        {"inference": {"mode": "whole", "resize": [8192, 8192]}},
    )
    for options in ({}, {"num_classes": 3}):  # ...and following the advice to replace the classifiers
        with pytest.raises(CheckpointError) as info:
            load_pretrained(wide, **options)
        message = str(info.value)
        assert "head_channels=8192" in message and "run at up to 8192x8192 by its stored whole protocol" in message
        assert "PSPNET_LIMIT_MEMORY" in message and "tiled inference" in message and "\n" not in message

    # backbone weights only, whose fresh heads alone exceed the model_bytes limit (lowered here
    # rather than writing a 1 GB model)
    backbone = _config_only_folder(tmp_path / "backbone", config, {}, heads=False)
    monkeypatch.setenv("PSPNET_LIMIT_MODEL_BYTES", "20M")
    with pytest.raises(CheckpointError, match=r"a resnet18 PSPNet with 3 classes .*PSPNET_LIMIT_MODEL_BYTES"):
        load_pretrained(backbone, num_classes=3, head_channels=2048)
    monkeypatch.setenv("PSPNET_LIMIT_MODEL_BYTES", "200M")
    model = load_pretrained(backbone, num_classes=3, head_channels=2048, strict=False)
    assert model.config.head_channels == 2048


@pytest.mark.slow  # one interpreter start-up (about 5 s here)
def test_hostile_files_stay_within_memory_and_time(tmp_path):
    """The done-when: loading any of these files of <= 10 MB uses under 1 GB more memory and 10 s, or
    fails in one line (measured in a fresh process: the peak RSS over the baseline after imports)."""
    files = {
        "bytearray": H.bytearray_bomb(),
        "counter": H.counter_bomb(),
        "hash": H.hash_bomb(),
        "bytes": H.bytes_bomb(),
        "tree": H.tree_bomb(),
        "numel": H.state_dict({"w": H.tensor("0", 10**9, (2,), (1,))}),
    }
    paths = [str(H.write_zip(tmp_path / f"{n}.pth", p, [("archive/data/0", bytes(16))])) for n, p in files.items()]
    paths.append(
        str(
            H.write_zip(
                tmp_path / "inflate.pth",
                H.state_dict({"w": H.tensor("0", (200 << 20) // 4, (10,), (1,))}),
                [("archive/data/0", bytes(200 << 20))],
                compression=zipfile.ZIP_DEFLATED,
            )
        )
    )
    # a Trainer checkpoint whose classifier is 40000 x 40000 values over one stored float
    model = build_pspnet("resnet18", 3, stem="standard", **SMALL)
    expanded = torch.ones(1).as_strided((40_000, 40_000, 1, 1), (0, 0, 0, 0))
    torch.save(
        {
            "format": "pspnet_lib.train_checkpoint",
            "model_config": model.config.to_dict(),
            "model": {"decode_head.classifier.weight": expanded},
        },
        tmp_path / "expanded.pt",
    )
    paths.append(str(tmp_path / "expanded.pt"))
    script = textwrap.dedent(
        """
        import resource, sys, time, json
        from pspnet_lib import load_pretrained
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = []
        for path in sys.argv[1:]:
            start = time.perf_counter()
            try:
                load_pretrained(path)
                message = "loaded"
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
            out.append([path, time.perf_counter() - start, message])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({"peak_kb": peak, "results": out}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for path, seconds, message in report["results"]:
        assert seconds < 10, (path, seconds)
        assert "\n" not in message, (path, message)
        assert message != "loaded", (path, message)
    assert report["peak_kb"] < 1024 * 1024, report
    assert all(Path(p).stat().st_size <= 10 << 20 for p in paths)


def test_npy_header_claiming_a_huge_shape(tmp_path):
    from pspnet_lib.core.images import read_image

    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000, 3)}
        )
        f.write(bytes(64))
    with pytest.raises(ValueError, match=r"huge.npy as a NumPy array: its header claims shape \[100000, 100000, 3\]"):
        read_image(path)


def test_values_that_overflow_are_one_line(tmp_path):
    config = build_pspnet("resnet18", 3, stem="standard", **SMALL).config.to_dict()
    folder = _config_only_folder(tmp_path / "m", config, {"mean": [10**400, 0.5, 0.5]})
    with pytest.raises(CheckpointError, match=r"pretrained_cfg mean must be a list of finite numbers .*got \[1000"):
        load_pretrained(folder)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"config.json is not usable JSON: it is nested too deeply"):
        load_pretrained(folder)

    # mmseg metadata: an infinite colour in PALETTE is ignored, not an OverflowError
    from pspnet_lib.hub.checkpoint_files import _classes_from_mmseg_meta

    meta = {"CLASSES": ["a", "b"], "PALETTE": [[float("inf"), 0, 0], [1, 2, 3]]}
    assert _classes_from_mmseg_meta(meta) == {"classes": ["a", "b"]}

    # a 1-D classifier weight (the shapes that tell the architecture are checked)
    from pspnet_lib.hub.converters import infer_config

    keys = [f"backbone.layer{s}.{b}.conv1.weight" for s in range(1, 5) for b in range(2)]
    weights = {k: torch.zeros(1, 1, 1, 1) for k in keys} | {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}
    weights["decode_head.classifier.weight"] = torch.zeros(19)
    with pytest.raises(ValueError, match=r"weight decode_head.classifier.weight has shape \[19\], expected a 4-D"):
        infer_config(weights)


def test_resource_limit_error_is_a_value_error():
    assert issubclass(ResourceLimitError, ValueError)


def test_every_command_refuses_a_hostile_file_in_one_line(tmp_path, caplog):
    """``pspnet info/convert/predict/eval`` and ``train --weights/--resume`` all read through the one reader."""
    from pspnet_lib.cli import main
    from pspnet_lib.data import write_synthetic_dataset

    bomb = str(H.write_zip(tmp_path / "bomb.pth", H.bytearray_bomb()))
    data = tmp_path / "data"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 0.5, "val": 0.5})
    picture = next((data / "images" / "val").iterdir())
    train = ["train", "--dataset", "folder", "--data-root", str(data), "--backbone", "resnet18", "--iters", "1",
             "--batch-size", "2", "--crop-size", "32", "--num-workers", "0", "--no-progress"]  # fmt: skip
    commands = {
        "info": ["info", bomb],
        "convert": ["convert", bomb, str(tmp_path / "converted")],
        "predict": ["predict", str(picture), "--weights", bomb, "--out", str(tmp_path / "masks")],
        "eval": ["eval", "--weights", bomb, "--dataset", "folder", "--data-root", str(data)],
        "train --weights": [*train, "--weights", bomb, "--out", str(tmp_path / "run1")],
        "train --resume": [*train, "--resume", bomb, "--out", str(tmp_path / "run2")],
    }
    for name, argv in commands.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(argv) == 1, name
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "\n" not in errors[0], (name, errors)
        assert "calls builtins.bytearray with 1 argument(s) (int)" in errors[0], (name, errors)


def test_docs_list_every_limit():
    from pspnet_lib.core.limits import LIMITS

    text = (REPO / "docs" / "weights.md").read_text()
    missing = [name for name in LIMITS if f"| `{name.upper()}` |" not in text]
    assert not missing, f"docs/weights.md's limits table lacks {missing}"
