"""Untrusted files stay data (issue 10 items 1, 5, 7, 9, 10, 12; issue 12 item 5).

Crafted checkpoints never crash the process or become live numpy objects; configs and
``pretrained_cfg`` are checked before anything is allocated; weights that cannot be right are
refused; every message is one line naming the file and never recommends ``weights_only=False``.
"""

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pspnet_lib import build_pspnet, load_pretrained
from pspnet_lib.hub import CheckpointError
from pspnet_lib.hub.serialization import InertObject, OpenMMLabPlaceholder, pickle_globals, read_checkpoint

from .hub_utils import SMALL, write_mmseg_checkpoint

REPO = Path(__file__).resolve().parents[1]


# --- crafted files ---


class _DTypeReduce:
    """Pickles as numpy's own dtype record: GLOBAL numpy.dtype, REDUCE (spec, False, True), BUILD state."""

    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return (np.dtype, (self.spec, False, True), self.state)


class _ArrayReduce:
    """Pickles as numpy's ndarray record: _reconstruct(ndarray, (0,), b'b') then BUILD (1, shape, dtype, fortran, raw)."""

    def __init__(self, shape, dtype, raw):
        self.shape, self.dtype, self.raw = shape, dtype, raw

    def __reduce__(self):
        return (
            np._core.multiarray._reconstruct,
            (np.ndarray, (0,), b"b"),
            (1, self.shape, self.dtype, False, self.raw),
        )


def forged_pointer_array():
    """A structured dtype with an object field whose flags are cleared, and 8 raw bytes that become its pointer.

    With numpy's real globals bound, touching the loaded value dereferences 0x4141414141414141.
    """
    obj = _DTypeReduce("O8", (3, "|", None, None, None, -1, -1, 0))  # object dtype, flags cleared (normally 63)
    forged = _DTypeReduce("V8", (3, "|", None, ("a",), {"a": (obj, 0)}, 8, 1, 0))  # flags cleared (normally 27)
    return _ArrayReduce((1,), forged, b"\x41" * 8)


def write_forged(path: Path, state_dict, zip_format: bool) -> None:
    meta = {"CLASSES": forged_pointer_array(), "PALETTE": forged_pointer_array(), "mmseg_version": "0.30.0"}
    torch.save({"meta": meta, "state_dict": state_dict}, path, _use_new_zipfile_serialization=zip_format)


@pytest.fixture(scope="module")
def mmseg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sec") / "pspnet_r18.pth"
    data = write_mmseg_checkpoint(path)
    return path, torch.load(path, weights_only=True)["state_dict"], data


def _fake_module(name, **attrs):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attrs.items():
        value.__module__ = name
        value.__qualname__ = key
        setattr(sys.modules[name], key, value)


def _drop_fake(prefix):
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]


def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    assert "weights_only" not in message, message
    return message


# --- item 1: the forged pointer, in a subprocess through every entry point ---


@pytest.mark.slow  # one subprocess through every entry point, both layouts (issue 22: was 8 subprocesses)
def test_forged_pointer_checkpoint_never_crashes(mmseg_file, tmp_path):
    _, state_dict, _ = mmseg_file
    forged = {}
    for layout, zip_format in (("zip", True), ("legacy", False)):
        forged[layout] = tmp_path / f"forged-{layout}.pth"
        write_forged(forged[layout], state_dict, zip_format)

    from pspnet_lib.data import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, 4, size=(32, 32), seed=0, splits={"train": 0.5, "val": 0.5})
    recipe = tmp_path / "tiny.json"
    recipe.write_text(
        json.dumps(
            {
                "augment": {"crop_size": [32, 32], "scale_range": [1.0, 1.0]},
                "train": {"batch_size": 2, "num_workers": 0, "log_interval": 1, "ckpt_interval": 1},
            }
        )
    )
    # Every entry point in one fresh process, one after the other (a crash is a signal: a negative
    # exit code; the last "step" line printed names where it happened). One interpreter start-up
    # instead of eight.
    script = textwrap.dedent(
        """
        import json, sys
        from pspnet_lib import load_pretrained
        from pspnet_lib.cli import main
        from pspnet_lib.hub.serialization import read_checkpoint
        data, recipe, root = sys.argv[1:4]
        for layout, forged in zip(("zip", "legacy"), sys.argv[4:]):
            print("step load_pretrained", layout, flush=True)
            model = load_pretrained(forged)
            json.dumps(model.pretrained_cfg)  # what crashed: the first use of the metadata
            str(model.pretrained_cfg)
            assert "classes" not in model.pretrained_cfg and "palette" not in model.pretrained_cfg
            meta = read_checkpoint(forged)["meta"]
            print("meta", repr(meta["CLASSES"]), json.dumps(meta, default=repr), flush=True)
            for name, argv in (
                ("info", ["info", forged]),
                ("convert", ["convert", forged, f"{root}/converted-{layout}"]),
                ("train", ["train", "--recipe", recipe, "--weights", forged, "--dataset", "folder", "--data-root",
                           data, "--out", f"{root}/run-{layout}", "--iters", "1", "--no-progress"]),
            ):
                print("step", name, layout, flush=True)
                assert main(argv) == 0, (name, layout)
        print("done", flush=True)
        """
    )  # fmt: skip
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(data),
            str(recipe),
            str(tmp_path),
            str(forged["zip"]),
            str(forged["legacy"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    steps = [line for line in run.stdout.splitlines() if line.startswith("step")]
    assert run.returncode == 0, f"exited with {run.returncode} after {steps[-1:]}: {run.stderr[-2000:]}"
    assert run.stdout.splitlines()[-1] == "done"
    meta_lines = [line for line in run.stdout.splitlines() if line.startswith("meta")]
    assert len(meta_lines) == 2
    assert all("<inert numpy array: dtype 'V8' is not a plain number or bool>" in line for line in meta_lines)
    for layout in ("zip", "legacy"):
        written = json.loads((tmp_path / f"converted-{layout}" / "config.json").read_text())
        assert "classes" not in written["pretrained_cfg"] and "palette" not in written["pretrained_cfg"]
        latest = read_checkpoint(tmp_path / f"run-{layout}" / "checkpoints" / "latest.pt")
        flat = json.dumps(latest.get("pretrained_cfg"), default=repr)
        assert "inert" not in flat and "AAAAAAAA" not in flat  # nothing of the forged metadata was carried along


def test_forged_pointer_is_inert_in_process(mmseg_file, tmp_path):
    _, state_dict, _ = mmseg_file
    for zip_format in (True, False):
        path = tmp_path / f"forged-{zip_format}.pth"
        write_forged(path, state_dict, zip_format)
        meta = read_checkpoint(path)["meta"]
        assert isinstance(meta["CLASSES"], InertObject) and "V8" in meta["CLASSES"].reason
        assert "numpy.dtype" in pickle_globals(path)


def test_legit_numpy_metadata_keeps_its_values(mmseg_file, tmp_path):
    _, state_dict, _ = mmseg_file
    meta = {
        "seed": np.int64(3),
        "best": np.float64(0.4375),
        "half": np.float16(1.5),
        "flag": np.bool_(True),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.array([1, 256], dtype=">i4"),
        "empty": np.zeros((0, 3), np.float32),
        "dt": np.dtype("float32"),
        "strings": np.array(["a", "b"]),
        "objects": np.array([{"x": 1}], dtype=object),
    }
    for zip_format in (True, False):
        path = tmp_path / f"meta-{zip_format}.pth"
        torch.save({"meta": meta, "state_dict": state_dict}, path, _use_new_zipfile_serialization=zip_format)
        got = read_checkpoint(path)["meta"]
        assert got["seed"] == 3 and type(got["seed"]) is int
        assert got["best"] == 0.4375 and type(got["best"]) is float
        assert got["half"] == 1.5 and got["flag"] is True
        for key in ("ids", "fortran", "big_endian", "empty"):
            assert type(got[key]) is np.ndarray and got[key].dtype == meta[key].dtype
            np.testing.assert_array_equal(got[key], meta[key])
        assert got["dt"] == np.dtype("float32")
        # Not plain numbers: inert markers, never numpy's unpickling machinery.
        assert isinstance(got["strings"], InertObject) and isinstance(got["objects"], InertObject)
        assert load_pretrained(path).load_report.ok


def test_numpy_array_whose_bytes_lie_is_inert(mmseg_file, tmp_path):
    _, state_dict, _ = mmseg_file
    dtype = _DTypeReduce("f8", (3, "<", None, None, None, -1, -1, 0))
    meta = {"short": _ArrayReduce((1000,), dtype, b"\x00" * 8), "huge": _ArrayReduce((10**12, 10**12), dtype, b"")}
    torch.save({"meta": meta, "state_dict": state_dict}, tmp_path / "lie.pth")
    got = read_checkpoint(tmp_path / "lie.pth")["meta"]
    assert (
        isinstance(got["short"], InertObject)
        and "8 bytes for a [1000] float64 array (8000 expected)" in got["short"].reason
    )
    assert isinstance(got["huge"], InertObject)


# --- issue 12 item 5 and issue 10 item 12: OpenMMLab objects ---


def test_older_configdict_loads_as_an_inert_mapping(mmseg_file, tmp_path):
    path, state_dict, data = mmseg_file

    class ConfigDict(dict):  # older mmengine/mmcv form: a dict subclass pickled with its items (NEWOBJ + SETITEMS)
        pass

    cfg = ConfigDict(model={"type": "EncoderDecoder", "align_corners": False}, crop_size=(512, 512))
    cfg.filename = "pspnet.py"  # instance state: a BUILD after the items
    _fake_module("mmengine.config.config", ConfigDict=ConfigDict)
    try:
        torch.save({"meta": {"cfg": cfg, "CLASSES": ["a"]}, "state_dict": state_dict}, tmp_path / "cfgdict.pth")
        torch.save(
            {"meta": cfg, "state_dict": state_dict},
            tmp_path / "meta_is_cfgdict.pth",
            _use_new_zipfile_serialization=False,
        )
    finally:
        _drop_fake("mmengine")
    got = read_checkpoint(tmp_path / "cfgdict.pth")["meta"]["cfg"]
    assert isinstance(got, OpenMMLabPlaceholder) and isinstance(got, dict)
    assert got.qualified_name == "mmengine.config.config.ConfigDict"
    assert got == {"model": {"type": "EncoderDecoder", "align_corners": False}, "crop_size": (512, 512)}
    assert got.state == {"filename": "pspnet.py"}
    for name in ("cfgdict.pth", "meta_is_cfgdict.pth"):
        model = load_pretrained(tmp_path / name)
        own = model.state_dict()
        reference = load_pretrained(path).state_dict()
        assert all(torch.equal(own[k], reference[k]) for k in reference)


def test_more_than_32_openmmlab_types_in_a_legacy_file(mmseg_file, tmp_path):
    _, state_dict, data = mmseg_file
    classes = {
        f"Hook{i}": type(f"Hook{i}", (), {"__init__": lambda self, i=i: setattr(self, "i", i)}) for i in range(40)
    }
    _fake_module("mmengine.hooks.fake", **classes)
    try:
        meta = {"hooks": [cls() for cls in classes.values()]}
        torch.save(
            {"meta": meta, "state_dict": state_dict}, tmp_path / "hooks.pth", _use_new_zipfile_serialization=False
        )
    finally:
        _drop_fake("mmengine")
    hooks = read_checkpoint(tmp_path / "hooks.pth")["meta"]["hooks"]
    assert [h.state["i"] for h in hooks] == list(range(40))
    assert {h.qualified_name for h in hooks} == {f"mmengine.hooks.fake.Hook{i}" for i in range(40)}
    assert load_pretrained(tmp_path / "hooks.pth").load_report.ok


def test_process_wide_safe_globals_cannot_reopen_numpy(mmseg_file, tmp_path):
    _, state_dict, _ = mmseg_file
    write_forged(tmp_path / "f.pth", state_dict, True)
    with torch.serialization.safe_globals([np.dtype, np.ndarray, np._core.multiarray._reconstruct]):
        meta = read_checkpoint(tmp_path / "f.pth")["meta"]
        assert isinstance(meta["CLASSES"], InertObject)
        assert np.dtype in torch.serialization.get_safe_globals()  # the caller's list is restored


# --- item 9: refusals never pass on torch's advice ---


def test_unreadable_files_give_one_line_without_weights_only_advice(tmp_path, mmseg_file):
    rng = np.random.default_rng(0)
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    html = tmp_path / "page.pth"
    html.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    for path, expected in ((random_bytes, "not a PyTorch checkpoint"), (html, "HTML")):
        with pytest.raises(CheckpointError) as info:
            load_pretrained(path)
        assert expected in _one_line(str(info.value)) and str(path) in str(info.value)

    _, state_dict, _ = mmseg_file

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    _fake_module("evil.payload", Payload=Payload)
    try:
        torch.save({"meta": {"x": Payload()}, "state_dict": state_dict}, tmp_path / "evil.pth")
    finally:
        _drop_fake("evil")
    with pytest.raises(CheckpointError) as info:
        load_pretrained(tmp_path / "evil.pth")
    assert "builtins.print" in _one_line(str(info.value)) and "trust_pickle=True" in str(info.value)


def test_resume_from_a_refused_checkpoint(mmseg_file, tmp_path):
    from pspnet_lib.engine.checkpoint import load_checkpoint

    _, state_dict, _ = mmseg_file

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    _fake_module("evil.payload", Payload=Payload)
    try:
        torch.save(
            {"format": "pspnet_lib.train_checkpoint", "x": Payload(), "model": state_dict}, tmp_path / "latest.pt"
        )
    finally:
        _drop_fake("evil")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "latest.pt")
    message = _one_line(str(info.value))
    assert "refusing to unpickle" in message and "resume only from its own checkpoints" in message
    assert "trust" not in message


# --- items 5 and 10: values checked before anything is allocated ---


def _save_folder(tmp_path, name="model", **config_changes):
    model = build_pspnet("resnet18", 3, stem="standard", **SMALL)
    folder = tmp_path / name
    model.save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    for key, value in config_changes.items():
        section, _, field = key.partition("__")
        target = data[section]
        *parents, last = field.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_huge_num_classes_is_refused_fast_and_small(tmp_path):
    folder = _save_folder(tmp_path, config__num_classes=1_000_000_000)
    script = textwrap.dedent(
        """
        import resource, sys, time
        from pspnet_lib import load_pretrained
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            load_pretrained(sys.argv[1])
        except Exception as exc:
            print(type(exc).__name__, exc)
        print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        print("SECONDS", time.perf_counter() - start)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("CheckpointError ") and str(folder / "config.json") in lines[0]
    assert "num_classes must be an integer in [1, 65536] (the number of classes), or 0 for no classifier" in lines[0]
    assert lines[0].endswith("got 1000000000")
    growth_kb = int(lines[1].split()[1])
    seconds = float(lines[2].split()[1])
    assert growth_kb < 500 * 1024 and seconds < 10


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"pretrained_cfg__inference__resize": [100000, 100000]},
            r"pretrained_cfg inference.resize must be a pair of integers in \[1, 8192\], got \[100000, 100000\]",
        ),
        ({"pretrained_cfg__inference__crop": "big"}, r"pretrained_cfg inference.crop must be"),
        ({"pretrained_cfg__inference__mode": "tile"}, r"pretrained_cfg inference.mode must be one of whole, slide"),
        ({"pretrained_cfg__tta__scales": [0.5, 100]}, r"pretrained_cfg tta.scales must be a list of 1 to 16 numbers"),
        ({"config__dropout": "0.1"}, r"dropout must be a number in \[0, 1\), got '0.1'"),
        ({"config__align_corners": "yes"}, r"align_corners must be true or false, got 'yes'"),
        ({"config__bins": [1, "2"]}, r"bins\[1\] must be a positive integer"),
        ({"config__head_channels": 10**6}, r"head_channels must be a positive integer \(at most 8192\)"),
        (
            {"pretrained_cfg__classes": [1, 2, 3]},
            r"pretrained_cfg classes must be a list of class names \(strings\), got \[1, 2, 3\]",
        ),
        (
            {"pretrained_cfg__palette": ["red", "green", "blue"]},
            r"pretrained_cfg palette must be a list of \[r, g, b\] colours",
        ),
        ({"pretrained_cfg__std": [0, 0, 0]}, r"pretrained_cfg std must be positive numbers"),
        ({"pretrained_cfg__mean": [0.5, 0.5]}, r"pretrained_cfg mean must be 3 numbers"),
    ],
)
def test_bad_values_in_config_json(tmp_path, change, message):
    folder = _save_folder(tmp_path, **change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_pretrained(folder)
    assert str(folder / "config.json") in _one_line(str(info.value))


def test_unknown_config_keys_are_reported(tmp_path, caplog):
    folder = _save_folder(tmp_path, config__dilation=2)
    with caplog.at_level("WARNING"):
        load_pretrained(folder)
    assert any("config.json" in r.getMessage() and "'dilation'" in r.getMessage() for r in caplog.records)


def test_safetensors_metadata_problems(tmp_path):
    model = build_pspnet("resnet18", 3, stem="standard", **SMALL)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    listed = tmp_path / "listed.safetensors"
    save_file(tensors, listed, metadata={"pspnet_lib.config": json.dumps([1, 2]), "pspnet_lib.pretrained_cfg": "{}"})
    with pytest.raises(
        CheckpointError,
        match=r"listed.safetensors \(safetensors metadata\): the architecture config must be a JSON object",
    ) as info:
        load_pretrained(listed)
    _one_line(str(info.value))
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, broken, metadata={"pspnet_lib.config": "{not json"})
    with pytest.raises(
        CheckpointError, match=r"broken.safetensors: safetensors metadata 'pspnet_lib.config' is not valid JSON"
    ):
        load_pretrained(broken)


def test_paths_that_are_not_files(tmp_path):
    folder = _save_folder(tmp_path)
    weights = folder / "model.safetensors"
    weights.unlink()
    weights.mkdir()
    with pytest.raises(CheckpointError, match=r"model.safetensors is a folder or special file, not a file") as info:
        load_pretrained(folder)
    _one_line(str(info.value))
    with pytest.raises(CheckpointError, match=r"/dev/zero is not a regular file") as info:
        load_pretrained("/dev/zero")
    with pytest.raises(IsADirectoryError, match=r"is a folder"):
        read_checkpoint(tmp_path)


# --- item 7: weights that cannot be right ---


def _weights_file(tmp_path, name, change):
    model = build_pspnet("resnet18", 3, stem="standard", **SMALL)
    folder = tmp_path / name
    model.save_pretrained(folder)
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    metadata = {"pspnet_lib.config": json.dumps(model.config.to_dict()), "pspnet_lib.pretrained_cfg": "{}"}
    save_file(tensors, folder / "model.safetensors", metadata=metadata)
    return folder


def test_non_finite_and_non_float_weights_are_refused(tmp_path):
    def nan(t):
        t["decode_head.classifier.weight"].fill_(float("nan"))
        t["backbone.layer1.0.bn1.running_var"][0] = float("inf")

    def integer(t):
        t["decode_head.classifier.weight"] = t["decode_head.classifier.weight"].to(torch.int32)

    folder = _weights_file(tmp_path, "nan", nan)
    with pytest.raises(
        CheckpointError,
        match=r"2 weight tensor\(s\) hold NaN or Inf: .*running_var \(1 of 64 values\), "
        r"decode_head.classifier.weight \(96 of 96 values\)",
    ) as info:
        load_pretrained(folder)
    _one_line(str(info.value))
    folder = _weights_file(tmp_path, "int", integer)
    with pytest.raises(CheckpointError, match=r"not floating point: decode_head.classifier.weight \(torch.int32\)"):
        load_pretrained(folder)


def test_safetensors_header_dtype_that_lies(tmp_path):
    folder = _weights_file(tmp_path, "lie", lambda t: None)
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header["decode_head.classifier.weight"]["dtype"] = "I32"  # same byte count: the header lies about the type
    new = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    assert len(new) == size
    raw[8 : 8 + size] = new
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"decode_head.classifier.weight \(torch.int32\)"):
        load_pretrained(folder)


def test_from_pretrained_checks_the_same_values(tmp_path):
    from pspnet_lib import PSPNet

    folder = _save_folder(tmp_path, config__align_corners="yes")
    with pytest.raises(CheckpointError, match=r"config.json\): align_corners must be true or false, got 'yes'") as info:
        PSPNet.from_pretrained(folder)
    _one_line(str(info.value))
    folder = _save_folder(tmp_path, "std0", pretrained_cfg__std=[0, 0, 0])
    with pytest.raises(CheckpointError, match=r"pretrained_cfg std must be positive numbers"):
        PSPNet.from_pretrained(folder)


def test_torch_load_is_called_in_one_module():
    # Every pickle the library reads goes through the restricted reader; a second torch.load call
    # site would be a way around its allow-list.
    import ast

    callers = []
    for path in sorted((REPO / "pspnet_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "load":
                if isinstance(node.value, ast.Name) and node.value.id == "torch":
                    callers.append(path.relative_to(REPO).as_posix())
            elif isinstance(node, ast.ImportFrom) and node.module == "torch":
                if any(alias.name == "load" for alias in node.names):
                    callers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(callers)) == ["pspnet_lib/hub/checkpoint_reader.py"]
