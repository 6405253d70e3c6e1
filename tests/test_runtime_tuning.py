"""The fast path's timing decisions persist across processes, safely."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from pspnet_lib import build_pspnet
from pspnet_lib._testing import randomize_batchnorm_, smooth_image
from pspnet_lib.runtime import (
    agreement_stats,
    blocks,
    conv,
    optimize_for_inference,
    tuning,
)
from pspnet_lib.runtime.tuning import TuningCache, clear_tuning_cache, default_tuning_path, tuning_cache


@pytest.fixture(scope="module")
def model():
    net = build_pspnet("resnet18", 5, head_channels=32, aux_channels=16, ppm_channels=8)
    return randomize_batchnorm_(net).eval()


@pytest.fixture(scope="module")
def image_and_ref(model):
    x = smooth_image(1, 41, 37, seed=3)
    with torch.no_grad():
        return x, model(x)


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    """Each test starts like a new process: no decisions in memory."""
    monkeypatch.setattr(tuning, "_CACHES", {})


def _new_process(monkeypatch) -> list[str]:
    """Forget in-memory decisions and record every timing the fast path would do."""
    monkeypatch.setattr(tuning, "_CACHES", {})
    timed: list[str] = []

    def record(fns, **kw):
        timed.append("timing")
        return [1.0] * len(fns)

    monkeypatch.setattr(conv, "time_candidates", record)
    monkeypatch.setattr(blocks, "time_candidates", record)
    return timed


def _rel_err(ref, out) -> float:
    return agreement_stats(ref, out)["max_rel_err"]


def test_decisions_are_saved_and_reused_by_a_new_process(model, image_and_ref, tmp_path, monkeypatch):
    x, ref = image_and_ref
    path = tmp_path / "tuning.json"
    fast = optimize_for_inference(model, tuning_cache=path)
    assert _rel_err(ref, fast(x)) <= 1e-4
    data = json.loads(path.read_text())
    kinds = {name.split("|")[2] for name in data["sections"]}
    assert kinds == {"winograd_tile", "space_to_batch"}  # both kinds of "auto" decision were stored
    stored = fast.tuning.sections()

    timed = _new_process(monkeypatch)
    again = optimize_for_inference(model, tuning_cache=path)
    assert _rel_err(ref, again(x)) <= 1e-4
    assert timed == []  # nothing was timed: every decision came from the file
    assert again.tuning.sections() == stored
    assert again.space_to_batch_plans() == fast.space_to_batch_plans()


def test_new_shape_or_thread_count_is_calibrated(model, image_and_ref, tmp_path, monkeypatch):
    x, ref = image_and_ref
    path = tmp_path / "tuning.json"
    optimize_for_inference(model, tuning_cache=path)(x)
    timed = _new_process(monkeypatch)
    fast = optimize_for_inference(model, tuning_cache=path)
    fast(smooth_image(1, 30, 33, seed=1))  # a shape never seen
    assert timed
    timed.clear()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)  # timings on another thread count differ
        assert _rel_err(ref, optimize_for_inference(model, tuning_cache=path)(x)) <= 1e-4
    finally:
        torch.set_num_threads(threads)
    assert timed


def test_damaged_file_is_ignored_and_rewritten(model, image_and_ref, tmp_path, caplog):
    x, ref = image_and_ref
    path = tmp_path / "tuning.json"
    path.write_text('{"version": 1, "sections": {"cpu')  # e.g. a write cut short by another tool
    with caplog.at_level(logging.WARNING, logger="pspnet_lib.runtime.tuning"):
        fast = optimize_for_inference(model, tuning_cache=path)
        assert _rel_err(ref, fast(x)) <= 1e-4
    assert "ignoring the fast path's tuning cache" in caplog.text
    assert json.loads(path.read_text())["version"] == 1  # replaced by a valid file


def test_implausible_stored_decisions_are_not_trusted(model, image_and_ref, tmp_path, monkeypatch):
    x, ref = image_and_ref
    path = tmp_path / "tuning.json"
    optimize_for_inference(model, tuning_cache=path)(x)
    data = json.loads(path.read_text())
    for name, shapes in data["sections"].items():
        for shape in shapes:
            # A split factor that does not divide the dilation would give wrong outputs; a
            # string is not a decision.
            shapes[shape] = [3] * len(shapes[shape]) if "space_to_batch" in name else "yes"
    path.write_text(json.dumps(data))
    timed = _new_process(monkeypatch)
    fast = optimize_for_inference(model, tuning_cache=path)
    assert _rel_err(ref, fast(x)) <= 1e-4
    assert timed  # recalibrated instead
    for plans in fast.space_to_batch_plans():
        assert all(set(plan) <= {1, 2, 4} for plan in plans.values())


def test_unwritable_location_only_costs_persistence(model, image_and_ref, tmp_path, caplog):
    x, ref = image_and_ref
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="pspnet_lib.runtime.tuning"):
        fast = optimize_for_inference(model, tuning_cache=blocker / "tuning.json")
        assert _rel_err(ref, fast(x)) <= 1e-4
        fast(x)
    assert caplog.text.count("could not save the fast path's tuning decisions") == 1
    assert blocker.read_text() == ""


def test_processes_sharing_a_file_keep_each_others_entries(tmp_path):
    path = tmp_path / "tuning.json"
    first, second = TuningCache(path), TuningCache(path)
    first.section("a")  # both read the (missing) file before either writes
    second.section("b")
    first.put("a", "1x64x8x8", True)
    second.put("b", "1x64x8x8", False)
    first.flush()
    second.flush()
    assert TuningCache(path).sections() == {"a": {"1x64x8x8": True}, "b": {"1x64x8x8": False}}
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, no leftovers


def test_environment_variable_and_opt_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPNET_TUNING_CACHE", str(tmp_path / "t.json"))
    assert default_tuning_path() == tmp_path / "t.json"
    assert tuning_cache(True).path == tmp_path / "t.json"
    monkeypatch.setenv("PSPNET_TUNING_CACHE", "off")
    assert default_tuning_path() is None
    assert tuning_cache(True).path is None
    monkeypatch.delenv("PSPNET_TUNING_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert default_tuning_path() == tmp_path / "torch" / "hub" / "pspnet_lib" / "tuning.json"


def test_memory_only_cache_writes_nothing(model, image_and_ref, tmp_path, monkeypatch):
    x, _ = image_and_ref
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("PSPNET_TUNING_CACHE")
    optimize_for_inference(model, tuning_cache=False)(x)
    assert not list(tmp_path.rglob("*.json"))


def test_clear_tuning_cache(model, image_and_ref, tmp_path, monkeypatch):
    x, _ = image_and_ref
    path = tmp_path / "tuning.json"
    optimize_for_inference(model, tuning_cache=path)(x)
    assert path.exists()
    clear_tuning_cache(path)
    assert not path.exists()
    timed = _new_process(monkeypatch)
    optimize_for_inference(model, tuning_cache=path)(x)
    assert timed


def test_rejects_a_bad_tuning_cache_argument(model):
    with pytest.raises(TypeError, match="tuning_cache"):
        optimize_for_inference(model, tuning_cache=1)
