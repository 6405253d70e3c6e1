"""Loads do no wasted work, and trust no more than before (issue 23, item 5).

* A model the weights fill is built on the meta device and takes them: no random initialisation
  (torch's generator is not touched), no copy; the model equals the old path's (build, initialise,
  copy) bit for bit for every source kind. Keys not loaded (missing with strict=False, replaced
  classifiers) get the old path's initialisation, value for value under the same seed.
* A cached file is hashed when it enters the cache and then trusted while its stamp (size, mtime,
  ctime, inode) holds; a changed stamp means a full hash, and a mismatch is caught.
* The NaN/Inf scan runs when weights enter the cache (conversion, a download's first load), not on
  every load of a verified entry; local files are scanned on every load as before.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

import pspnet_lib.hub.converted_cache as converted_cache
import pspnet_lib.hub.load_report as load_report
import pspnet_lib.hub.url_record as url_record
import pspnet_lib.hub.validation as validation
from pspnet_lib import PSPNet, build_pspnet, load_pretrained
from pspnet_lib._testing import randomize_batchnorm_
from pspnet_lib.cli import main
from pspnet_lib.core.digest import DIGEST_KEY, content_digest
from pspnet_lib.hub import OfflineError, Weights, register_weights, unregister_weights
from pspnet_lib.hub.download import cached_paths, save_cached, verify_cached
from pspnet_lib.hub.serialization import CheckpointError, write_safetensors

from .hub_utils import SMALL, make_hf_cache, serve_directory

NAME = "test_lean_r18-3cls"
CFG = {"classes": ["a", "b", "c"], "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2]]}


def _model(seed: int = 0) -> PSPNet:
    torch.manual_seed(seed)
    model = build_pspnet("resnet18", 3, stem="standard", **SMALL)
    randomize_batchnorm_(model, seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.num_batches_tracked.fill_(7)  # a counter that is loaded, not rebuilt as 0
    model.pretrained_cfg = dict(CFG)
    return model


def _entry(config: dict) -> Weights:
    meta = {"task": "semantic-segmentation", "num_classes": 3, "categories": CFG["classes"], "license": "MIT"}
    return register_weights(
        Weights(NAME, "https://example.invalid/lean-00000000.pth", "00000000", "mmseg", config, meta), overwrite=True
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One reference model written as every kind of source."""
    root = tmp_path_factory.mktemp("lean")
    model = _model()
    sd = model.state_dict()
    model.save_pretrained(root / "folder")
    checkpoint = {
        "format": "pspnet_lib.train_checkpoint",
        "iteration": 3,
        "model": sd,
        "model_config": model.config.to_dict(),
        "pretrained_cfg": dict(CFG),
    }
    checkpoint[DIGEST_KEY] = content_digest(checkpoint)
    torch.save(checkpoint, root / "run.pt")
    hf = root / "hf"
    make_hf_cache(hf, "org/lean", root / "folder", "a" * 40)
    yield {"root": root, "sd": sd, "config": model.config.to_dict(), "hf": hf}
    unregister_weights(NAME)


def _zoo_cache(files, cache, state_dict=None, values_checked=True):
    weights = _entry(files["config"])
    cfg = {"mean": [0.5] * 3, "std": [0.25] * 3, **CFG}
    save_cached(
        weights, cache, state_dict or files["sd"], files["config"], cfg, "0" * 64, values_checked=values_checked
    )
    return weights


class CallCounter:
    """Counts calls of a function it wraps (hashing, the value scan)."""

    def __init__(self, monkeypatch, module, name):
        self.calls = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def _assert_same(model, expected: dict[str, torch.Tensor]) -> None:
    """Bit for bit, and tensors a model can own: leaf parameters, contiguous, none sharing memory."""
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    tensors = [*model.parameters(), *model.buffers()]
    assert all(not t.is_meta and t.is_contiguous() and t.device.type == "cpu" for t in tensors)
    assert all(p.is_leaf and p.requires_grad for p in model.parameters())
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)  # no larger storage
    pointers = [t.untyped_storage().data_ptr() for t in tensors if t.numel()]
    assert len(set(pointers)) == len(pointers)


def _load_without_rng(load):
    """``load()``, asserting it drew nothing from torch's generator (nothing was randomly initialised)."""
    state = torch.random.get_rng_state()
    model = load()
    assert torch.equal(torch.random.get_rng_state(), state), "the load initialised weights it then overwrote"
    return model


def _sources(files, tmp_path, server_url):
    root = files["root"]
    zoo = tmp_path / "zoo"
    _zoo_cache(files, zoo)
    url_cache = tmp_path / "urls"
    return {
        "zoo cache": lambda: load_pretrained(NAME, cache_dir=zoo, local_files_only=True),
        "safetensors file": lambda: load_pretrained(root / "folder" / "model.safetensors"),
        "folder": lambda: load_pretrained(root / "folder"),
        "Trainer checkpoint": lambda: load_pretrained(root / "run.pt"),
        "hf-hub cache": lambda: load_pretrained("hf-hub:org/lean", cache_dir=files["hf"], local_files_only=True),
        "URL cache": lambda: load_pretrained(f"{server_url}/folder/model.safetensors", cache_dir=url_cache),
        "PSPNet.from_pretrained": lambda: PSPNet.from_pretrained(str(root / "folder")),
    }


def test_every_source_kind_loads_bit_identical_to_the_old_path_without_initialising(files, tmp_path, monkeypatch):
    """The old path (build, initialise, copy) gives the file's tensors; so does each lean load."""
    with serve_directory(files["root"]) as server:
        sources = _sources(files, tmp_path, server.url)
        sources["URL cache"]()  # the download; the loads below use the cached file
        lean = {kind: _load_without_rng(load) for kind, load in sources.items()}
        monkeypatch.setattr(load_report, "_fills", lambda *args: False)  # the old path, for two of them
        old = {kind: sources[kind]() for kind in ("zoo cache", "Trainer checkpoint")}
        assert len(server.requests) == 1
    for kind, model in lean.items():
        _assert_same(model, files["sd"])
        assert not model.training and model.pretrained_cfg["classes"] == CFG["classes"], kind
    for kind, model in old.items():
        _assert_same(model, files["sd"])
        assert (model.config, model.pretrained_cfg) == (lean[kind].config, lean[kind].pretrained_cfg)
        assert model.load_report == lean[kind].load_report


def test_weights_the_model_cannot_keep_as_they_are_are_copied_as_before(files, tmp_path):
    """Half-precision weights, weights sharing one storage (tied in the file) and absent BatchNorm
    counters: the model owns float32 tensors of its own, as the old path's copy made them."""
    sd = files["sd"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"pspnet_lib.config": json.dumps(files["config"]), "format": "pt"}
    write_safetensors(half, tmp_path / "half.safetensors", meta)
    flat = torch.cat([v.reshape(-1).float() for v in sd.values()])  # every weight a view of one storage
    shared, offset = {}, 0
    for key, value in sd.items():
        if not key.endswith("num_batches_tracked"):  # counters left out: rebuilt as 0, as built
            shared[key] = flat[offset : offset + value.numel()].view(value.shape)
        offset += value.numel()
    torch.save(
        {"format": "pspnet_lib.train_checkpoint", "model": shared, "model_config": files["config"]},
        tmp_path / "shared.pt",
    )

    expected_half = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    expected_shared = {
        k: torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else v for k, v in sd.items()
    }
    for path, expected in ((tmp_path / "half.safetensors", expected_half), (tmp_path / "shared.pt", expected_shared)):
        model = _load_without_rng(lambda: load_pretrained(path))
        _assert_same(model, expected)


def test_keys_not_loaded_get_the_old_paths_initialisation(files, tmp_path):
    """strict=False with missing keys, and new classifiers: what is not loaded is initialised as
    before, value for value under the same seed (the model is built and initialised as it was)."""
    partial = {k: v for k, v in files["sd"].items() if not k.startswith("decode_head.bottleneck.")}
    torch.save(
        {"format": "pspnet_lib.train_checkpoint", "model": partial, "model_config": files["config"]},
        tmp_path / "partial.pt",
    )

    torch.manual_seed(1)
    model = load_pretrained(tmp_path / "partial.pt", strict=False)
    torch.manual_seed(1)
    old = PSPNet(files["config"])
    old.load_state_dict(partial, strict=False)
    _assert_same(model, old.state_dict())
    assert model.load_report.missing == [
        k for k in files["sd"] if k.startswith("decode_head.bottleneck.") and "num_batches" not in k
    ]
    fresh = model.decode_head.bottleneck.conv.weight
    assert fresh.std() > 0 and not torch.equal(fresh, files["sd"]["decode_head.bottleneck.conv.weight"])

    torch.manual_seed(2)
    model = load_pretrained(files["root"] / "folder", num_classes=5)
    torch.manual_seed(2)
    old = PSPNet({**files["config"], "num_classes": 5})
    old.load_state_dict({k: v for k, v in files["sd"].items() if "classifier" not in k}, strict=False)
    _assert_same(model, old.state_dict())


# --- the converted cache: hashed once, then trusted by its stamp ---


def _wait_past(ns: int) -> None:
    """Let the clock pass ``ns`` (a stamp's time), so that a change now gets another time stamp."""
    while time.time_ns() <= ns + 20_000_000:
        time.sleep(0.01)


def _alter_in_place(path) -> None:
    """Flip bytes inside the tensor data; the size and inode stay."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = bytes(b ^ 0xFF for b in f.read(64))
        f.seek(os.path.getsize(path) // 2)
        f.write(data)


def test_a_cached_entry_is_hashed_once_and_a_change_in_place_is_caught(files, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    weights = _zoo_cache(files, cache)
    st, js = cached_paths(weights, cache)
    hashes = CallCounter(monkeypatch, converted_cache, "sha256_file")
    scans = CallCounter(monkeypatch, validation, "_count_non_finite")
    load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert verify_cached(weights, cache) is None and (hashes.calls, scans.calls) == (0, 0)

    # Modified in place with the same size: a new mtime, so the file is hashed and caught.
    stamp = json.loads(js.read_text())["safetensors_stamp"]
    _wait_past(stamp["mtime_ns"])
    _alter_in_place(st)
    assert st.stat().st_size == stamp["size"] and st.stat().st_mtime_ns != stamp["mtime_ns"]
    assert "was modified: its sha256" in verify_cached(weights, cache)
    assert hashes.calls == 1
    with pytest.raises(OfflineError, match=r"did not verify and were removed .*was modified"):
        load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert not st.exists()


@pytest.mark.skipif(os.name != "posix", reason="the ctime in the stamp is POSIX's")
def test_a_change_with_its_mtime_set_back_is_caught_by_the_ctime(files, tmp_path):
    """``touch -d`` / ``os.utime`` can restore size and mtime, not the ctime."""
    cache = tmp_path / "cache"
    weights = _zoo_cache(files, cache)
    st, js = cached_paths(weights, cache)
    stamp = json.loads(js.read_text())["safetensors_stamp"]
    _wait_past(stamp["ctime_ns"])
    _alter_in_place(st)
    os.utime(st, ns=(st.stat().st_atime_ns, stamp["mtime_ns"]))
    assert (st.stat().st_size, st.stat().st_mtime_ns) == (stamp["size"], stamp["mtime_ns"])
    assert "was modified: its sha256" in verify_cached(weights, cache)


def test_what_the_stamp_cannot_see_and_pspnet_download_hashing_in_full(files, tmp_path, monkeypatch, caplog):
    """The documented limit: bytes that change while the file's stamp stays (bit rot below the file
    system) are trusted by a load; ``pspnet download`` hashes in full and removes the entry."""
    cache = tmp_path / "cache"
    weights = _zoo_cache(files, cache)
    st, js = cached_paths(weights, cache)
    _alter_in_place(st)
    record = json.loads(js.read_text())
    record["safetensors_stamp"] = converted_cache.file_stamp(st)  # the change is invisible to the stamp
    js.write_text(json.dumps(record))
    assert verify_cached(weights, cache) is None  # trusted: the limit
    assert "was modified: its sha256" in verify_cached(weights, cache, full=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the original is not cached: rebuilding needs it
    assert main(["download", NAME, "--cache-dir", str(cache)]) == 1
    assert "discarding damaged cache entry" in caplog.text and not st.exists() and not js.exists()
    assert f"Fetch {weights.url}" in caplog.text  # the CLI's one-line error


def test_a_copied_or_older_entry_is_hashed_and_scanned_once_then_trusted(files, tmp_path, monkeypatch):
    """An entry copied elsewhere (another inode) or written before stamps and value checks were
    recorded: the first load hashes and scans it and records both; the next does neither."""
    cache = tmp_path / "cache"
    weights = _zoo_cache(files, cache, values_checked=False)
    st, js = cached_paths(weights, cache)
    record = json.loads(js.read_text())
    del record["safetensors_stamp"]
    js.write_text(json.dumps(record))
    copied = tmp_path / "copied"
    shutil.copytree(cache, copied)
    hashes = CallCounter(monkeypatch, converted_cache, "sha256_file")
    scans = CallCounter(monkeypatch, validation, "_count_non_finite")
    for where in (cache, copied):
        load_pretrained(NAME, cache_dir=where, local_files_only=True)
        assert hashes.calls == 1 and scans.calls > 0
        hashes.calls = scans.calls = 0
        _assert_same(load_pretrained(NAME, cache_dir=where, local_files_only=True), files["sd"])
        assert (hashes.calls, scans.calls) == (0, 0)
        assert json.loads((where / js.name).read_text())["values_checked"] is True


def test_non_finite_weights_never_load_from_the_cache(files, tmp_path):
    """A converted entry's values are checked when it enters the cache; an entry written without
    that check (an older version) is scanned on load, and never marked checked."""
    bad = dict(files["sd"])
    bad["decode_head.classifier.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    cache = tmp_path / "cache"
    weights = _zoo_cache(files, cache, state_dict=bad, values_checked=False)
    for _ in range(2):
        with pytest.raises(CheckpointError, match=r"hold NaN or Inf: decode_head.classifier.bias \(1 of 3 values\)"):
            load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert json.loads(cached_paths(weights, cache)[1].read_text())["values_checked"] is False


# --- URL downloads ---


def test_a_url_download_is_checked_at_its_first_load_only(files, tmp_path, monkeypatch):
    hashes = CallCounter(monkeypatch, url_record, "sha256_file")
    scans = CallCounter(monkeypatch, validation, "_count_non_finite")
    served = tmp_path / "served"
    served.mkdir()
    bad = dict(files["sd"], **{"aux_head.classifier.bias": torch.tensor([float("inf"), 0.0, 0.0])})
    write_safetensors(bad, served / "bad.safetensors", {"pspnet_lib.config": json.dumps(files["config"])})
    shutil.copyfile(files["root"] / "folder" / "model.safetensors", served / "model.safetensors")
    with serve_directory(served) as server:
        url = f"{server.url}/model.safetensors"
        load_pretrained(url, cache_dir=tmp_path / "cache")
        assert hashes.calls == 0 and scans.calls > 0  # hashed as it arrived, scanned at its first load
        hashes.calls = scans.calls = 0
        _assert_same(load_pretrained(url, cache_dir=tmp_path / "cache"), files["sd"])
        assert (hashes.calls, scans.calls) == (0, 0)
        for _ in range(2):  # a download that cannot be right is refused at every load, never marked
            with pytest.raises(CheckpointError, match=r"hold NaN or Inf: aux_head.classifier.bias"):
                load_pretrained(f"{server.url}/bad.safetensors", cache_dir=tmp_path / "cache")
        assert len(server.requests) == 2


def test_a_loaded_model_does_not_change_with_its_file(files, tmp_path):
    """Weights are read into memory of the model's own, not left on a mapping of the file."""
    path = tmp_path / "model.safetensors"
    shutil.copyfile(files["root"] / "folder" / "model.safetensors", path)
    model = load_pretrained(path)
    with open(path, "r+b") as f:  # overwrite the tensor data in place
        f.seek(4096)
        f.write(bytes(os.path.getsize(path) - 4096))
    _assert_same(model, files["sd"])


# --- build_loaded for any model class ---


class _Tied(torch.nn.Module):
    """Tied weights and a parameter initialised by its parent."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.gate = torch.nn.Parameter(torch.full((4,), 0.5))


class _Table(torch.nn.Linear):
    """A non-persistent buffer: only the constructor makes it."""

    def __init__(self) -> None:
        super().__init__(4, 4)
        self.register_buffer("table", torch.arange(4.0) * 3, persistent=False)


def test_build_loaded_keeps_what_only_a_constructor_makes():
    """A model with tied weights or a non-persistent buffer is built and copied into (as before):
    the tie and the buffer survive. A model the weights fill (any class: torchvision's ResNet
    here) is built on the meta device, without drawing random numbers."""
    for cls in (_Tied, _Table):
        source = cls()
        with torch.no_grad():
            next(source.parameters()).mul_(3)
        model, report = load_report.build_loaded(cls, source.state_dict())
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
        assert report.ok and model.state_dict().keys() == source.state_dict().keys()
    assert isinstance(model, _Table) and torch.equal(model.table, torch.arange(4.0) * 3)
    tied, _ = load_report.build_loaded(_Tied, _Tied().state_dict())
    assert tied.b.weight is tied.a.weight

    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(num_classes=7)
    model, _ = _load_without_rng(
        lambda: load_report.build_loaded(lambda: torchvision.models.resnet18(num_classes=7), reference.state_dict())
    )
    _assert_same(model, reference.state_dict())
