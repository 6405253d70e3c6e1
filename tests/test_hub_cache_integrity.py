"""Every cached byte is verified: downloads, converted entries, leftovers (issue 10, items 2, 6, 11).

All traffic goes to HTTP servers the tests start on 127.0.0.1.
"""

import hashlib
import json
import os
import re
import shutil
import time
import uuid

import pytest
from filelock import FileLock

from pspnet_lib import load_pretrained
from pspnet_lib.cli import main
from pspnet_lib.hub import OfflineError, is_cached
from pspnet_lib.hub.download import LOCK_DIR, cached_paths, verify_cached
from pspnet_lib.hub.http_download import url_cache_path
from pspnet_lib.hub.serialization import CheckpointError

from .hub_utils import serve_directory
from .test_hub_download import NAME, _assert_reference, _cache_files, entry, published  # noqa: F401 (fixtures)


def _flip(path, count=96):
    """Flip ``count`` bytes in the middle of ``path`` (inside the tensor data); the size stays the same."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    size = path.stat().st_size
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def _list_json(cache):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", NAME, "--cache-dir", str(cache), "--json"]) == 0
    (row,) = json.loads(out.getvalue())
    return row


# --- downloads of URLs without a hash in their name ---


@pytest.fixture
def served(published, tmp_path):
    """The published checkpoint under a name without a hash (``model.pth``): nothing to verify it against."""
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copyfile(published["path"], folder / "model.pth")
    return folder


def test_truncated_download_is_not_cached_and_the_fixed_server_then_works(published, served, tmp_path):
    cache = tmp_path / "cache"
    size = published["path"].stat().st_size
    with serve_directory(served, mode="truncate") as server:
        url = f"{server.url}/model.pth"
        dest = url_cache_path(url, cache)
        with pytest.raises(
            OSError,
            match=rf"cut short: the server announced {size} bytes and sent {size // 3} .*Nothing was cached at {re.escape(str(dest))}",
        ):
            load_pretrained(url, cache_dir=cache, progress=False)
        assert _cache_files(dest.parent) == []  # neither the file nor a .partial
        server.mode = "normal"
        model = load_pretrained(url, cache_dir=cache, progress=False)
    _assert_reference(model, published["data"])
    assert _cache_files(dest.parent) == ["model.pth", "model.pth.source.json"]
    record = json.loads((dest.parent / "model.pth.source.json").read_text())
    assert record["url"] == url and record["sha256"] == published["sha"] and record["size"] == size


@pytest.mark.parametrize("mode", ["html", "html_error"])
def test_html_error_page_for_a_hashless_pth_is_never_cached(published, served, tmp_path, mode):
    cache = tmp_path / "cache"
    expected = r"answered with a web page \(Content-Type text/html" if mode == "html" else r"could not download .*404"
    with serve_directory(served, mode=mode) as server:
        url = f"{server.url}/model.pth"
        with pytest.raises(OSError, match=expected):
            load_pretrained(url, cache_dir=cache, progress=False)
        assert _cache_files(url_cache_path(url, cache).parent) == []
        server.mode = "normal"
        model = load_pretrained(url, cache_dir=cache, progress=False)
    _assert_reference(model, published["data"])


def test_unreadable_hashless_download_is_removed_and_named(published, served, tmp_path):
    """The issue's case: a short copy cached by an earlier version (no .sha256) was trusted forever."""
    cache = tmp_path / "cache"
    with serve_directory(served) as server:
        url = f"{server.url}/model.pth"
        cached = url_cache_path(url, cache)
        cached.parent.mkdir(parents=True)
        cached.write_bytes(published["path"].read_bytes()[: published["path"].stat().st_size // 3])  # by hand
        with pytest.raises(
            CheckpointError,
            match=rf"{re.escape(str(cached))} was downloaded from {re.escape(url)}.*removed from the cache, so the next load downloads it again",
        ):
            load_pretrained(url, cache_dir=cache, progress=False)
        assert server.requests == []  # the first load used the cached copy...
        assert not cached.exists()
        model = load_pretrained(url, cache_dir=cache, progress=False)  # ...the next one fetches it again
        assert len(server.requests) == 1
    _assert_reference(model, published["data"])

    # A server that sends something other than weights (not HTML): removed after the failed parse.
    (served / "model.pth").write_bytes(b"\x00not a checkpoint\x00" * 4000)
    with serve_directory(served) as server:
        url = f"{server.url}/model.pth"
        cached = url_cache_path(url, cache)
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(cached))} was downloaded from"):
            load_pretrained(url, cache_dir=cache, progress=False)
    assert _cache_files(cached.parent) == []


def test_a_cached_hashless_download_that_changed_is_fetched_again(published, served, tmp_path):
    cache = tmp_path / "cache"
    with serve_directory(served) as server:
        url = f"{server.url}/model.pth"
        load_pretrained(url, cache_dir=cache, progress=False)
        cached = url_cache_path(url, cache)
        _flip(cached)
        model = load_pretrained(url, cache_dir=cache, progress=False)
        assert len(server.requests) == 2
    _assert_reference(model, published["data"])
    _flip(cached)
    with pytest.raises(OfflineError, match=rf"{re.escape(str(cached))} of .* was removed \(its sha256 .* differs"):
        load_pretrained(url, cache_dir=cache, local_files_only=True)


# --- converted cache entries ---


@pytest.fixture
def cached_entry(published, entry, tmp_path):
    """A zoo entry downloaded, converted and cached; the server is gone afterwards."""
    cache = tmp_path / "cache"
    with serve_directory(published["dir"]) as server:
        weights = entry(server.url)
        load_pretrained(NAME, cache_dir=cache, progress=False)
    st, js = cached_paths(weights, cache)
    assert is_cached(weights, cache) and verify_cached(weights, cache) is None
    return weights, cache, st, js


def test_flipped_bytes_in_the_cached_safetensors_are_detected(published, cached_entry, caplog):
    weights, cache, st, js = cached_entry
    _flip(st)
    assert not is_cached(weights, cache)
    assert "was modified: its sha256" in verify_cached(weights, cache)
    row = _list_json(cache)
    assert row["cached"] is False and "was modified" in row["cache_problem"]

    # Rebuilt from the verified original (still in the cache), offline.
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    _assert_reference(model, published["data"])
    assert "discarding damaged cache entry" in caplog.text and is_cached(weights, cache)

    # Without the original the damage is an error naming the file; nothing altered is loaded.
    _flip(st)
    (cache / published["path"].name).unlink()
    with pytest.raises(
        OfflineError,
        match=rf"did not verify and were removed \({re.escape(str(st))}: .*was modified.*Fetch {re.escape(weights.url)}",
    ):
        load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert not st.exists() and not js.exists()


def test_pspnet_download_rebuilds_a_damaged_entry(published, cached_entry, capsys):
    weights, cache, st, _ = cached_entry
    _flip(st)
    assert main(["download", NAME, "--cache-dir", str(cache)]) == 0  # the original is cached: no network
    assert f"{st} (verified)" in capsys.readouterr().out
    assert is_cached(weights, cache)


def _edit_align_corners(js, recompute_digest=False):
    record = json.loads(js.read_text())
    record["config"]["align_corners"] = not record["config"]["align_corners"]
    if recompute_digest:  # a careful forgery: the json is consistent with itself
        blob = json.dumps({"config": record["config"], "pretrained_cfg": record["pretrained_cfg"]}, sort_keys=True)
        record["config_sha256"] = hashlib.sha256(blob.encode()).hexdigest()
    js.write_text(json.dumps(record, indent=2))


def test_edited_align_corners_in_the_cached_json_is_detected(published, cached_entry):
    weights, cache, st, js = cached_entry
    _edit_align_corners(js)
    assert "was modified: its config/pretrained_cfg" in verify_cached(weights, cache)
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    assert model.config.align_corners is False  # the registered value, not the edited one
    _assert_reference(model, published["data"])

    _edit_align_corners(js, recompute_digest=True)  # caught by the copy inside the (hashed) safetensors
    assert "differs from the one recorded inside" in verify_cached(weights, cache)
    assert load_pretrained(NAME, cache_dir=cache, local_files_only=True).config.align_corners is False


def test_entry_written_without_checksums_is_rebuilt(published, cached_entry):
    """Entries of pspnet_lib 0.1 (cache format 1) carry no checksums: they are converted again."""
    weights, cache, st, js = cached_entry
    record = json.loads(js.read_text())
    for key in ("safetensors_sha256", "config_sha256"):
        del record[key]
    record["cache_format"] = 1
    js.write_text(json.dumps(record))
    assert "older pspnet_lib" in verify_cached(weights, cache)
    _assert_reference(load_pretrained(NAME, cache_dir=cache, local_files_only=True), published["data"])
    assert json.loads(js.read_text())["cache_format"] == 2


def test_symlinks_to_altered_copies_are_detected(published, cached_entry, tmp_path):
    weights, cache, st, js = cached_entry
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    intact_st, intact_js = elsewhere / "intact.safetensors", elsewhere / "intact.json"
    shutil.copyfile(st, intact_st)
    shutil.copyfile(js, intact_js)
    altered_st, altered_js = elsewhere / "altered.safetensors", elsewhere / "altered.json"
    shutil.copyfile(st, altered_st)
    shutil.copyfile(js, altered_js)
    _flip(altered_st)
    _edit_align_corners(altered_js)
    altered_bytes = (altered_st.read_bytes(), altered_js.read_bytes())

    # Links to intact copies (e.g. a shared cache) verify: the content counts, not the link.
    for link, target in ((st, intact_st), (js, intact_js)):
        link.unlink()
        link.symlink_to(target)
    assert is_cached(weights, cache)

    for link, target in ((st, altered_st), (js, altered_js)):
        link.unlink()
        link.symlink_to(target)
    assert not is_cached(weights, cache)
    assert _list_json(cache)["cached"] is False
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    _assert_reference(model, published["data"])
    assert model.config.align_corners is False
    # The links were replaced by a fresh entry; the files they pointed to were not touched.
    assert not st.is_symlink() and not js.is_symlink() and is_cached(weights, cache)
    assert (altered_st.read_bytes(), altered_js.read_bytes()) == altered_bytes


# --- leftovers of interrupted downloads and conversions ---


def _leave_leftovers(cache, weights, st, js):
    original = weights.filename
    old = time.time() - 2 * 3600
    stale = {
        "partial": cache / f".{original}.{uuid.uuid4().hex}.partial",  # a killed download of this module
        "old torch.hub partial": cache / f"{original}.{uuid.uuid4().hex}.partial",
        "tmp safetensors": cache / f".{st.name}.k2j_3h4a.tmp.safetensors",  # a killed conversion
        "tmp json": cache / f".{js.name}.abcdefgh.tmp.json",
        "legacy entry lock": cache / f".{weights.cache_stem}.lock",  # pspnet_lib 0.1 kept these here
        "legacy download lock": cache / f".{original}.lock",
    }
    for name, path in stale.items():
        path.write_bytes(b"" if name.startswith("legacy") else os.urandom(51_000))
    os.utime(stale["old torch.hub partial"], (old, old))
    kept = {
        # Another program's torch.hub download in progress (it takes no lock of ours): recent, kept.
        "fresh torch.hub partial": cache / f"{original}.{uuid.uuid4().hex}.partial",
        # Another entry's file.
        "other entry": cache / f".other-entry.pth.{uuid.uuid4().hex}.partial",
    }
    for path in kept.values():
        path.write_bytes(os.urandom(1000))
    return stale, kept


@pytest.mark.parametrize("entry_complete", [True, False], ids=["cached-entry", "conversion"])
def test_leftovers_are_removed_under_the_lock(published, cached_entry, entry_complete):
    weights, cache, st, js = cached_entry
    if not entry_complete:  # the killed run never finished the conversion
        st.unlink()
        js.unlink()
    stale, kept = _leave_leftovers(cache, weights, st, js)
    model = load_pretrained(NAME, cache_dir=cache, local_files_only=True)
    _assert_reference(model, published["data"])
    assert [name for name, path in stale.items() if path.exists()] == []
    assert all(path.exists() for path in kept.values())
    # No lock file lies next to the weights: they are in .locks/.
    assert [n for n in _cache_files(cache) if n.endswith(".lock")] == []
    assert sorted(p.name for p in (cache / LOCK_DIR).iterdir()) == sorted(
        [f"{weights.cache_stem}.lock", f"{weights.filename}.lock"]
    )


def test_leftovers_of_a_process_at_work_are_left_alone(published, cached_entry):
    """While another process holds the entry's lock, its temporary files may be in use."""
    weights, cache, st, js = cached_entry
    stale, _ = _leave_leftovers(cache, weights, st, js)
    with FileLock(str(cache / LOCK_DIR / f"{weights.cache_stem}.lock")):  # "another process" converting
        _assert_reference(load_pretrained(NAME, cache_dir=cache, local_files_only=True), published["data"])
    assert stale["tmp safetensors"].exists() and stale["partial"].exists()
    load_pretrained(NAME, cache_dir=cache, local_files_only=True)  # the lock is free now
    assert not stale["tmp safetensors"].exists() and not stale["partial"].exists()
