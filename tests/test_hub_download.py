"""The whole zoo download path against a real HTTP server on 127.0.0.1."""

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import pspnet_lib.hub.checkpoint_files as checkpoint_files_module
import pspnet_lib.hub.sources as sources_module
from pspnet_lib import build_pspnet, load_pretrained
from pspnet_lib.hub import (
    ChecksumError,
    OfflineError,
    Weights,
    get_weight,
    is_cached,
    register_weights,
    unregister_weights,
)
from pspnet_lib.hub.download import cached_paths
from pspnet_lib.hub.http_download import url_cache_path

from .hub_utils import serve_directory, wait_for, write_mmseg_checkpoint
from .reference import relative_error

NAME = "test_pspnet_r18-d8_toy-5cls"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A 'published' mmsegmentation checkpoint: file named ...-<sha8>.pth, like the real zoo."""
    root = tmp_path_factory.mktemp("published")
    tmp = root / "tmp.pth"
    data = write_mmseg_checkpoint(tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = root / f"pspnet_r18-d8_toy_20240101_000000-{sha[:8]}.pth"
    tmp.rename(path)
    return {"dir": root, "path": path, "sha": sha, "data": data}


def _register(url: str, sha: str) -> Weights:
    weights = Weights(
        name=NAME,
        url=url,
        sha256=sha[:8],
        format="mmseg",
        config={"backbone": "resnet18", "num_classes": 5, "stem": "deep", "output_stride": 8, "aux": True},
        meta={
            "task": "semantic-segmentation",
            "dataset": "toy",
            "num_classes": 5,
            "categories": ["a", "b", "c", "d", "e"],
            "palette": [[i, i, i] for i in range(5)],
            "ignore_index": 255,
            "inference": {"mode": "whole", "resize": None},
            "license": "Apache-2.0",
        },
    )
    return register_weights(weights, overwrite=True)


@pytest.fixture
def entry(published):
    """Registers the test entry pointing at a server started by each test (the URL gets its port later)."""
    state = {}

    def point_to(server_url: str) -> Weights:
        state["w"] = _register(f"{server_url}/{published['path'].name}", published["sha"])
        return state["w"]

    yield point_to
    unregister_weights(NAME)


def _cache_files(cache: Path) -> list[str]:
    """The files next to the weights (lock files live in the .locks/ sub-folder)."""
    return sorted(p.name for p in cache.iterdir() if p.name != ".locks") if cache.exists() else []


def _assert_reference(model, data):
    with torch.no_grad():
        main, aux = model(data["input"], return_aux=True)
    assert relative_error(main.numpy(), data["out"]) <= 1e-4
    assert relative_error(aux.numpy(), data["aux"]) <= 1e-4


def test_download_verify_convert_cache_then_offline(published, entry, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with serve_directory(published["dir"]) as server:
        weights = entry(server.url)
        model = load_pretrained(NAME, cache_dir=cache, progress=False)
        assert server.requests == [f"/{published['path'].name}"]
    _assert_reference(model, published["data"])
    assert model.pretrained_cfg["classes"] == ["a", "b", "c", "d", "e"]
    assert model.pretrained_cfg["name"] == NAME and model.pretrained_cfg["sha256"] == published["sha"][:8]
    st, js = cached_paths(weights, cache)
    assert st.name == f"{NAME}-{published['sha'][:8]}.safetensors" and js.is_file()
    assert (cache / published["path"].name).read_bytes() == published["path"].read_bytes()
    assert is_cached(weights, cache)
    assert not [n for n in _cache_files(cache) if n.endswith((".partial", ".tmp"))]

    # The server is gone; the second load must come from the safetensors alone: no pickle is read.
    def no_pickle(*args, **kwargs):
        raise AssertionError("the .pth was read again")

    monkeypatch.setattr(sources_module, "read_checkpoint", no_pickle)  # the zoo path
    monkeypatch.setattr(checkpoint_files_module, "read_checkpoint", no_pickle)  # the file paths
    (cache / published["path"].name).unlink()  # not even the original file is needed any more
    again = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    _assert_reference(again, published["data"])
    assert again.pretrained_cfg == model.pretrained_cfg


def test_tampered_file_is_rejected_and_not_cached(published, entry, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    tampered = bytearray(published["path"].read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    (served / published["path"].name).write_bytes(bytes(tampered))
    cache = tmp_path / "cache"
    with serve_directory(served) as server:
        entry(server.url)
        with pytest.raises(
            ChecksumError, match=rf"expected a sha256 starting with {published['sha'][:8]}.*Nothing was cached"
        ):
            load_pretrained(NAME, cache_dir=cache, progress=False)
    assert _cache_files(cache) == []


def test_truncated_transfer_leaves_nothing(published, entry, tmp_path):
    cache = tmp_path / "cache"
    size = published["path"].stat().st_size
    with serve_directory(published["dir"], mode="truncate") as server:
        entry(server.url)
        with pytest.raises(
            OSError, match=rf"cut short: the server announced {size} bytes and sent {size // 3} .*Nothing was cached"
        ):
            load_pretrained(NAME, cache_dir=cache, progress=False)
    assert _cache_files(cache) == []


def test_killed_download_leaves_nothing_trusted(published, entry, tmp_path):
    """A process killed mid-download leaves at most a temporary file; the next load starts over."""
    cache = tmp_path / "cache"
    with serve_directory(published["dir"], mode="stall") as server:
        weights = entry(server.url)
        script = textwrap.dedent(
            f"""
            from pspnet_lib.hub import Weights, register_weights
            from pspnet_lib import load_pretrained
            register_weights(Weights(**{{
                "name": {NAME!r}, "url": {weights.url!r}, "sha256": {weights.sha256!r}, "format": "mmseg",
                "config": {dict(weights.config)!r}, "meta": {{"task": "semantic-segmentation"}}}}))
            load_pretrained({NAME!r}, cache_dir={str(cache)!r}, progress=False)
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            assert wait_for(server.stalled.is_set, timeout=120), "the download never started"
            assert wait_for(lambda: any(n.endswith(".partial") for n in _cache_files(cache)), timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    leftovers = _cache_files(cache)
    assert published["path"].name not in leftovers  # never under its real name
    assert not any(n.endswith(".safetensors") or n.endswith(".json") for n in leftovers)
    with serve_directory(published["dir"]) as server:
        entry(server.url)
        model = load_pretrained(NAME, cache_dir=cache, progress=False)
    _assert_reference(model, published["data"])


def test_offline_without_cache_says_what_to_fetch_and_where(published, entry, tmp_path, monkeypatch):
    weights = entry("http://127.0.0.1:9")  # nothing listens there, and nothing may be contacted
    cache = tmp_path / "cache"
    expected = str(cache / published["path"].name)
    with pytest.raises(OfflineError) as info:
        load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    message = str(info.value)
    assert weights.url in message and expected in message and published["sha"][:8] in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        load_pretrained(NAME, cache_dir=cache)


def test_air_gapped_copy_into_cache_is_verified_and_converted(published, entry, tmp_path):
    entry("http://127.0.0.1:9")
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(published["path"], cache / published["path"].name)
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    _assert_reference(model, published["data"])
    assert is_cached(get_weight(NAME), cache)


def test_corrupt_cached_original_is_removed_with_a_clear_error(published, entry, tmp_path):
    entry("http://127.0.0.1:9")
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / published["path"].name
    bad.write_bytes(published["path"].read_bytes()[:1000])  # truncated copy
    with pytest.raises(ChecksumError, match=rf"{bad.name}.*expected a hash starting with {published['sha'][:8]}"):
        load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert not bad.exists()


def test_damaged_converted_cache_is_rebuilt(published, entry, tmp_path, caplog):
    cache = tmp_path / "cache"
    with serve_directory(published["dir"]) as server:
        weights = entry(server.url)
        load_pretrained(NAME, cache_dir=cache, progress=False)
    st, _ = cached_paths(weights, cache)
    st.write_bytes(st.read_bytes()[:4096])  # truncated safetensors
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)  # rebuilt from the verified .pth
    _assert_reference(model, published["data"])
    assert "discarding damaged cache entry" in caplog.text


def test_url_sources_http_and_file(published, tmp_path):
    cache = tmp_path / "cache"
    with serve_directory(published["dir"]) as server:
        model = load_pretrained(f"{server.url}/{published['path'].name}", cache_dir=cache, progress=False)
    _assert_reference(model, published["data"])
    url = f"{server.url}/{published['path'].name}"
    assert url_cache_path(url, cache).is_file()  # cached under the URL's key and its own name, hash-checked
    assert url_cache_path(url, cache).name == published["path"].name
    model = load_pretrained(published["path"].as_uri())
    _assert_reference(model, published["data"])
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        load_pretrained("ftp://example.org/x.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained((tmp_path / "missing.pth").as_uri())


def test_backbone_zoo_entry_through_the_server(tmp_path, monkeypatch):
    """An ImageNet backbone entry (torchvision layout): download, convert, cache, then build on it."""
    import torchvision

    served = tmp_path / "served"
    served.mkdir()
    tv = torchvision.models.resnet18()
    tmp = served / "tmp.pth"
    torch.save(tv.state_dict(), tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = served / f"resnet18-{sha[:8]}.pth"
    tmp.rename(path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # the default cache: $TORCH_HOME/hub/checkpoints
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with serve_directory(served) as server:
        register_weights(
            Weights(
                "test_resnet18_tv",
                f"{server.url}/{path.name}",
                sha[:8],
                "torchvision",
                {"backbone": "resnet18", "stem": "standard", "stem_channels": 64},
                {"task": "backbone"},
            ),
            overwrite=True,
        )
        try:
            model = load_pretrained("test_resnet18_tv", num_classes=3, progress=False)
            assert len(server.requests) == 1 and (cache / f"test_resnet18_tv-{sha[:8]}.safetensors").is_file()
            built = build_pspnet("resnet18", 3, weights_backbone="test_resnet18_tv")
            assert len(server.requests) == 1  # the second use came from the cache
        finally:
            unregister_weights("test_resnet18_tv")
    for m in (model, built):
        assert m.config.stem == "standard" and m.load_report.ok
        torch.testing.assert_close(m.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert sorted(model.load_report.reinitialised) == sorted(
        k for k in model.state_dict() if not k.startswith("backbone.")
    )
