"""Issue 19: batch prediction that survives real jobs: manifest, fail-soft, resume after SIGKILL,
shards (--shard I/N), output names that keep relative paths, confidence pictures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import predict, predict_files
from pspnet_lib.cli import main
from pspnet_lib.inference.batch import default_device
from pspnet_lib.inference.inputs import Shard, list_inputs, shard_from_environment
from pspnet_lib.inference.jobs import InputRunner
from pspnet_lib.inference.manifest import read_manifest

from .infer_utils import save_model_dir, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = tiny_model(num_classes=3)
    model.pretrained_cfg = {"inference": {"mode": "whole"}}
    return save_model_dir(model, tmp_path_factory.mktemp("weights") / "tiny"), model


def _pictures(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` random pictures of two sizes, some in a sub-folder, with a shared stem across folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        folder = root / ("sub" if i % 3 == 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = (40, 48) if i % 2 else (48, 40)
        path = folder / f"p{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def _records(out: Path) -> list[dict]:
    return read_manifest(out)


def test_two_broken_files_are_recorded_and_the_run_goes_on(weights, tmp_path, capsys):
    weights_dir, model = weights
    photos = tmp_path / "photos"
    good = _pictures(photos, 3)
    (photos / "truncated.png").write_bytes(good[0].read_bytes()[:60])
    (photos / "zero.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["predict", str(photos), "-r", "--weights", str(weights_dir), "--out", str(out), "--num-workers", "1"])
    assert code == 1
    summary = capsys.readouterr().out.strip()
    assert "\n" not in summary and "segmented 3 of 5" in summary and "2 failed" in summary
    assert sorted(_outputs(out)) == ["p00.png", "p01.png", "sub/p02.png"]
    records = {Path(r["input"]).name: r for r in _records(out)}
    assert sorted(records) == ["p00.png", "p01.png", "p02.png", "truncated.png", "zero.jpg"]
    assert records["zero.jpg"]["status"] == "failed" and "empty (0 bytes)" in records["zero.jpg"]["error"]
    assert records["truncated.png"]["status"] == "failed" and "truncated.png" in records["truncated.png"]["error"]
    assert all("\n" not in r.get("error", "") for r in records.values())
    done = records["p02.png"]
    assert done["status"] == "done" and done["outputs"] == {"mask": "sub/p02.png"}
    assert (done["height"], done["width"]) == (48, 40) and done["seconds"] > 0
    mask = np.asarray(Image.open(out / "sub" / "p02.png"))
    assert np.array_equal(mask, predict(model, good[2]).mask.numpy())
    # --fail-fast stops at the first failure, recorded, with a non-zero exit status
    out2 = tmp_path / "out2"
    args = ["predict", str(photos / "zero.jpg"), *map(str, good), "--weights", str(weights_dir), "--out", str(out2)]
    assert main([*args, "--fail-fast", "--num-workers", "0"]) == 1
    assert "stopped at the first failure" in capsys.readouterr().out
    assert [r["status"] for r in _records(out2)] == ["failed"] and not _outputs(out2)


def test_a_picture_of_the_wrong_channel_count_is_recorded(weights, tmp_path):
    _, model = weights
    paths = _pictures(tmp_path / "photos", 1)
    np.save(tmp_path / "photos" / "bands.npy", np.zeros((8, 8, 5), np.uint8))  # 5 bands, the model takes 3
    summary = predict_files(model, [tmp_path / "photos"], tmp_path / "out", num_workers=0)
    assert not summary.ok and summary.done == 1 and [Path(p).name for p, _ in summary.failed] == ["bands.npy"]
    reason = summary.failed[0][1]
    assert "5 channels" in reason and "takes 3" in reason and "\n" not in reason
    assert paths[0].with_suffix("").name + ".png" in _outputs(tmp_path / "out")


def test_mixed_sizes_batch_and_equal_predict(weights, tmp_path):
    """Pictures of two sizes in batches of 4, decoded by 2 workers: each mask is predict()'s."""
    _, model = weights
    paths = _pictures(tmp_path / "photos", 6)
    summary = predict_files(model, [tmp_path / "photos"], tmp_path / "out", recursive=True, batch_size=4, num_workers=2)
    assert summary.ok and summary.done == 6
    for path in paths:
        key = path.relative_to(tmp_path / "photos").with_suffix(".png")
        expected = predict(model, path).mask.numpy()
        assert (np.asarray(Image.open(tmp_path / "out" / key)) == expected).mean() > 0.999  # batched float sums


def test_protocol_resize_batches_different_sizes_together(weights):
    """Sizes 60x80 and 63x84 both become 48x64 under resize=48: one forward pass, results as one by one."""
    _, model = weights
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((60, 80, 3), (63, 84, 3), (60, 80, 3))]
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape)))
    try:
        together = predict(model, pictures, resize=48, batch_size=3, confidence="maxprob")
        calls_together = list(calls)
        alone = [predict(model, p, resize=48, confidence="maxprob") for p in pictures]
    finally:
        handle.remove()
    assert calls_together == [(3, 3, 48, 64)]
    for a, b in zip(together, alone):
        assert a.mask.shape == b.mask.shape and (a.mask == b.mask).float().mean() > 0.999
        assert torch.allclose(a.confidence, b.confidence, atol=1e-5)


def test_resume_keeps_done_records_and_never_trusts_temporaries(weights, tmp_path, capsys, caplog):
    weights_dir, _ = weights
    _pictures(tmp_path / "photos", 4)
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "photos"), "--weights", str(weights_dir), "--out", str(out), "--num-workers", "0"]
    assert main(args) == 0
    first = _records(out)
    complete = _outputs(out)
    # A killed run's leftovers: a half-written temporary of p01's mask, p01's mask gone.
    (out / "p01.png").unlink()
    (out / ".p01.png.abcd1234.tmp.png").write_bytes(b"half a PNG")
    assert main(args) == 1  # without --skip-existing, existing outputs are refused
    assert "already exist" in caplog.records[-1].getMessage() and "--skip-existing" in caplog.records[-1].getMessage()
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "segmented 1 of 3 image(s)" in line and "2 already done" in line
    assert _outputs(out) == complete and not list(out.glob(".*tmp*"))
    records = _records(out)
    assert sorted(r["input"] for r in records) == sorted(r["input"] for r in first)
    assert all(r["status"] == "done" for r in records)
    kept = [r for r in first if not r["input"].endswith("p01.png")]
    assert all(r in records for r in kept)  # earlier records carried over as they were
    # outputs present without a record (another run's): "skipped"
    (out / "manifest.jsonl").unlink()
    assert main([*args, "--skip-existing"]) == 0
    assert {r["status"] for r in _records(out)} == {"skipped"}
    assert "segmented 0 of 3 image(s)" in capsys.readouterr().out.splitlines()[-1]


def test_skip_existing_and_overwrite_contradict(weights, tmp_path):
    weights_dir, _ = weights
    _pictures(tmp_path / "photos", 1)
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        main(["predict", str(tmp_path / "photos"), "--weights", str(weights_dir), "--out", str(tmp_path / "o"),
              "--skip-existing", "--overwrite"])  # fmt: skip
    with pytest.raises(ValueError, match="pass one of them"):
        predict_files(weights[1], [tmp_path / "photos"], tmp_path / "o", skip_existing=True, overwrite=True)


@pytest.mark.slow  # a CLI subprocess (~5 s of start-up on 2 cores)
def test_sigkill_half_way_then_resume_gives_the_uninterrupted_outputs(weights, tmp_path):
    weights_dir, _ = weights
    _pictures(tmp_path / "photos", 12)
    common = ["--weights", str(weights_dir), "--num-workers", "0", "-r"]
    reference = tmp_path / "reference"
    assert main(["predict", str(tmp_path / "photos"), "--out", str(reference), *common]) == 0
    expected = _outputs(reference)

    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pspnet_lib",
        "-q",
        "predict",
        str(tmp_path / "photos"),
        "--out",
        str(out),
        *common,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list(out.rglob("p*.png"))) < 3:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    partial = _outputs(out)
    assert 3 <= len(partial) < len(expected)  # killed half-way
    assert all(expected[name] == data for name, data in partial.items())  # a present output is complete

    assert main(["predict", str(tmp_path / "photos"), "--out", str(out), *common, "--skip-existing"]) == 0
    assert _outputs(out) == expected  # byte for byte, every output once
    records = _records(out)
    assert sorted(r["input"] for r in records) == sorted(r["input"] for r in _records(reference))
    assert len({r["input"] for r in records}) == len(records) == 12
    assert {r["status"] for r in records} == {"done"}
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_shards_cover_every_input_once(weights, tmp_path):
    weights_dir, _ = weights
    _pictures(tmp_path / "photos", 9)
    common = [str(tmp_path / "photos"), "-r", "--weights", str(weights_dir), "--num-workers", "0"]
    assert main(["predict", *common, "--out", str(tmp_path / "single")]) == 0
    out = tmp_path / "sharded"
    for index in range(2):
        assert main(["predict", *common, "--out", str(out), "--shard", f"{index}/2"]) == 0
    assert _outputs(out) == _outputs(tmp_path / "single")
    parts = [read_manifest(out / f"manifest-{i:05d}-of-00002.jsonl") for i in range(2)]
    done = [{r["input"] for r in part} for part in parts]
    assert done[0] and done[1] and not done[0] & done[1]
    assert done[0] | done[1] == {r["input"] for r in read_manifest(tmp_path / "single")}
    # the split is deterministic, and combining --shard with torchrun's ranks nests the shares
    files = list_inputs([tmp_path / "photos"], recursive=True)
    assert Shard(1, 2).select(files) == Shard(1, 2).select(list(reversed(files)))[::-1]
    inner = [Shard(r, 2).within(Shard(1, 3)) for r in range(2)]
    assert inner == [Shard(2, 6), Shard(3, 6)]
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="I/N"):
            Shard.parse(bad)


def test_torchrun_environment_gives_the_shard_and_the_gpu(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert shard_from_environment() == Shard(3, 4)
    assert (
        default_device("cuda") == "cuda:1" and default_device("cpu") == "cpu" and default_device("cuda:0") == "cuda:0"
    )
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK"):
        shard_from_environment()


def test_globs_lists_and_same_stems(weights, tmp_path):
    weights_dir, _ = weights
    for folder in ("a", "b"):
        _pictures(tmp_path / "data" / folder, 2, seed=len(folder))
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# inputs\n{tmp_path / 'data/a/p00.png'}\n\n{tmp_path / 'data/b/p00.png'}\n{tmp_path / 'data/gone.png'}\n"
    )
    out = tmp_path / "out"
    code = main(["predict", "--files-from", str(listing), "--weights", str(weights_dir), "--out", str(out)])
    assert code == 1  # the vanished file is recorded, the others done
    assert sorted(_outputs(out)) == ["a/p00.png", "b/p00.png"]
    gone = [r for r in _records(out) if r["status"] == "failed"]
    assert len(gone) == 1 and "gone.png" in gone[0]["error"] and "not found" in gone[0]["error"]
    pattern = str(tmp_path / "data" / "*" / "p01.png")
    assert main(["predict", pattern, "--weights", str(weights_dir), "--out", str(tmp_path / "globbed")]) == 0
    assert sorted(_outputs(tmp_path / "globbed")) == ["a/p01.png", "b/p01.png"]


def test_output_folder_inside_an_input_folder_is_refused(weights, tmp_path, caplog):
    weights_dir, _ = weights
    _pictures(tmp_path / "photos", 1)
    out = tmp_path / "photos" / "masks"
    assert main(["predict", str(tmp_path / "photos"), "--weights", str(weights_dir), "--out", str(out)]) == 1
    message = caplog.records[-1].getMessage()
    assert "inside the input folder" in message and "--out" in message and "\n" not in message
    assert not out.exists()


def test_confidence_pictures_and_manifest_means(weights, tmp_path):
    _, model = weights
    paths = _pictures(tmp_path / "photos", 2)
    summary = predict_files(model, paths, tmp_path / "out", confidence="maxprob", overlay=True, num_workers=0)
    assert summary.ok
    assert sorted(_outputs(tmp_path / "out")) == [
        "p00.png", "p00_maxprob.png", "p00_overlay.png", "p01.png", "p01_maxprob.png", "p01_overlay.png"
    ]  # fmt: skip
    picture = np.asarray(Image.open(tmp_path / "out" / "p00_maxprob.png"))
    probs = predict(model, paths[0], return_probs=True).probs
    assert picture.dtype == np.uint8 and np.array_equal(picture, (probs.max(0).values * 255).round().byte().numpy())
    record = next(r for r in _records(tmp_path / "out") if r["input"] == str(paths[0]))
    assert record["confidence_kind"] == "maxprob"
    assert record["confidence_mean"] == pytest.approx(float(probs.max(0).values.double().mean()), abs=1e-6)
    assert record["uncertainty"] == pytest.approx(1 - record["confidence_mean"])


def test_a_name_that_collides_with_an_overlay_is_refused(weights, tmp_path, caplog):
    weights_dir, _ = weights
    paths = _pictures(tmp_path / "photos", 1)
    paths[0].with_name("p00_overlay.jpg").write_bytes(paths[0].read_bytes())
    args = ["predict", str(tmp_path / "photos"), "--weights", str(weights_dir), "--out", str(tmp_path / "o")]
    assert main([*args, "--overlay"]) == 1
    assert "p00_overlay.png" in caplog.records[-1].getMessage()
    assert main(args) == 0  # without overlays there is no clash
    assert json.loads((tmp_path / "o" / "manifest.jsonl").read_text().splitlines()[0])["status"] == "done"


class _WholeFileRunner(InputRunner):
    """An unbatched runner, as a tiled raster writer would be: it reads and segments its input itself."""

    batched = False

    def suffixes(self):
        return {"mask": ".png", "summary": ".txt"}

    def run(self, model, source, staged, context):
        if "bad" in source:
            raise OSError(f"cannot open {source} as a raster")
        result = predict(model, source, protocol=context.protocol)
        result.colorize().save(staged["mask"], format="PNG")
        staged["summary"].write_text(f"classes {result.present} of {context.num_classes}\n")
        return {"height": int(result.mask.shape[0]), "width": int(result.mask.shape[1]), "runner": "whole-file"}


def test_a_routed_runner_shares_the_manifest_resume_and_exit_status(weights, tmp_path):
    _, model = weights
    paths = _pictures(tmp_path / "photos", 3)
    (tmp_path / "photos" / "bad_big.png").write_bytes(paths[0].read_bytes())
    runner = _WholeFileRunner()

    def route(item):
        return runner if item.path.endswith(("p01.png", "bad_big.png")) else None

    out = tmp_path / "out"
    summary = predict_files(model, [tmp_path / "photos"], out, route=route, num_workers=0)
    assert summary.done == 2 and [Path(p).name for p, _ in summary.failed] == ["bad_big.png"]  # p00 batched, p01 routed
    records = {Path(r["input"]).name: r for r in _records(out)}
    assert records["p01.png"]["runner"] == "whole-file" and records["p01.png"]["outputs"] == {
        "mask": "p01.png", "summary": "p01.txt"
    }  # fmt: skip
    assert records["bad_big.png"]["status"] == "failed" and "as a raster" in records["bad_big.png"]["error"]
    assert not (out / "bad_big.png").exists() and not list(out.glob(".*tmp*"))  # nothing half-written
    assert np.array_equal(np.asarray(Image.open(out / "p01.png")), predict(model, paths[1]).mask.numpy())
    assert (out / "p01.txt").read_text().startswith("classes")
    again = predict_files(model, [tmp_path / "photos"], out, route=route, skip_existing=True, num_workers=0)
    assert (again.done, again.already_done, len(again.failed)) == (0, 2, 1)  # only the failed one ran again
