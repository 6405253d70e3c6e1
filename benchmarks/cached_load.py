"""Load times before and after the lean loads of issue 23, measured in one run.

    python benchmarks/cached_load.py                    # R50-D8, 150 classes (~200 MB), 5 rounds
    python benchmarks/cached_load.py --rounds 3 --before 2f79f8e

"Before" is the library as of ``--before`` (a commit; default: main just before the change),
unpacked with ``git archive`` into a temporary folder; "after" is this checkout. Each variant
runs in fresh worker processes (``sys.path`` puts its code first), interleaved round by round:
per round and variant, one worker converts the zoo entry into an empty cache from the original
``.pth`` placed there (cold: read, check, convert, write the cache entry, build the model) and
one loads each cached or local source (warm, the OS page cache holding the files: what repeated
loads cost), twice per round after a first load that is not counted. The sources: the zoo entry's
converted cache, a URL download in the cache (served on 127.0.0.1), a ``.safetensors`` file, a
``save_pretrained`` folder and a Trainer checkpoint. Each variant loads caches it wrote itself.

A second table times, in the "after" code, the work the lean path skips: building the model with
its random initialisation (against building it on the meta device), hashing the cached
safetensors and scanning its values for NaN/Inf. Medians over rounds; ratios are before / after.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)

REPO = Path(__file__).resolve().parent.parent
#: main before the lean loads (issue 23): the merge of timm25 (issues 20, 22, 24, 25 in)
BEFORE = "2f79f8e"
NAME = "bench_lean_load"
WARM = (
    "zoo entry, cached",
    "URL download, cached",
    ".safetensors file",
    "save_pretrained folder",
    "Trainer checkpoint",
)


def _register(spec: dict) -> None:
    from pspnet_lib.hub import Weights, register_weights

    meta = {"task": "semantic-segmentation", "num_classes": spec["config"]["num_classes"]}
    weights = Weights(NAME, spec["url"] + "/" + spec["original"], spec["sha8"], "pspnet_lib", spec["config"], meta)
    register_weights(weights, overwrite=True)


def _sources(spec: dict, cache: Path) -> dict:
    from pspnet_lib import load_pretrained

    files = Path(spec["files"])
    return {
        "zoo entry, cached": lambda: load_pretrained(NAME, cache_dir=cache / "zoo", local_files_only=True),
        "URL download, cached": lambda: load_pretrained(
            f"{spec['url']}/folder/model.safetensors", cache_dir=cache / "url"
        ),
        ".safetensors file": lambda: load_pretrained(files / "folder" / "model.safetensors"),
        "save_pretrained folder": lambda: load_pretrained(files / "folder"),
        "Trainer checkpoint": lambda: load_pretrained(files / "run.pt"),
    }


def worker(args: argparse.Namespace) -> None:
    """Runs in a fresh process with one variant's code first on sys.path; prints its timings as JSON."""
    sys.path.insert(0, args.code)
    import torch

    import pspnet_lib

    assert Path(pspnet_lib.__file__).resolve().is_relative_to(Path(args.code).resolve()), pspnet_lib.__file__
    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.spec).read_text())
    _register(spec)
    cache = Path(args.cache)
    out: dict[str, list[float]] = {}
    if args.task == "cold":
        zoo = Path(tempfile.mkdtemp(dir=cache))
        shutil.copyfile(Path(spec["files"]) / spec["original"], zoo / spec["original"])
        start = time.perf_counter()
        pspnet_lib.load_pretrained(NAME, cache_dir=zoo, local_files_only=True)
        out["zoo entry, cold (convert into the cache)"] = [time.perf_counter() - start]
        shutil.rmtree(zoo)
    else:
        if args.task == "prepare":  # the original into this variant's zoo cache, converted once
            (cache / "zoo").mkdir(parents=True)
            shutil.copyfile(Path(spec["files"]) / spec["original"], cache / "zoo" / spec["original"])
        for key, load in _sources(spec, cache).items():
            load()  # not counted: the first load in this process (and the preparation's download)
            out[key] = []
            for _ in range(args.repeats if args.task == "warm" else 0):
                start = time.perf_counter()
                load()
                out[key].append(time.perf_counter() - start)
    print(json.dumps(out))


def skipped_work(spec: dict, cache: Path, threads: int) -> dict[str, float]:
    """The work the lean path skips, each timed alone in the after code (medians of 3)."""
    import torch

    from pspnet_lib.hub.download import cached_paths, sha256_file
    from pspnet_lib.hub.registry import get_weight
    from pspnet_lib.hub.serialization import read_safetensors
    from pspnet_lib.hub.validation import check_tensors
    from pspnet_lib.models.pspnet import PSPNet, PSPNetConfig

    torch.set_num_threads(threads)
    _register(spec)
    st, _ = cached_paths(get_weight(NAME), cache / "zoo")
    tensors, _ = read_safetensors(st)
    config = PSPNetConfig.from_dict(spec["config"])

    def on_meta() -> None:
        with torch.device("meta"):
            PSPNet(config)

    steps = {
        "build the model, randomly initialised": lambda: PSPNet(config),
        "build the model on the meta device": on_meta,
        "sha256 of the cached safetensors": lambda: sha256_file(st),
        "NaN/Inf scan of its values": lambda: check_tensors(tensors, "bench"),
        "read the safetensors into memory of its own": lambda: read_safetensors(st),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(3):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _write_files(root: Path, backbone: str, num_classes: int) -> dict:
    """The reference weights as every source kind (written by this checkout's code)."""
    import hashlib

    import torch

    from pspnet_lib import build_pspnet
    from pspnet_lib._testing import randomize_batchnorm_
    from pspnet_lib.core.digest import DIGEST_KEY, content_digest

    model = randomize_batchnorm_(build_pspnet(backbone, num_classes=num_classes, aux=True))
    model.save_pretrained(root / "folder")
    state = model.state_dict()
    checkpoint = {
        "format": "pspnet_lib.train_checkpoint",
        "model": state,
        "model_config": model.config.to_dict(),
        "pretrained_cfg": {},
    }
    checkpoint[DIGEST_KEY] = content_digest(checkpoint)
    torch.save(checkpoint, root / "run.pt")
    torch.save({"state_dict": state}, root / "original.pth")
    sha = hashlib.sha256((root / "original.pth").read_bytes()).hexdigest()
    original = f"bench_lean_load-{sha[:8]}.pth"
    (root / "original.pth").rename(root / original)
    return {"files": str(root), "original": original, "sha8": sha[:8], "config": model.config.to_dict()}


def _run(python_args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, *python_args], capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    )
    if done.returncode:
        raise SystemExit(f"worker {python_args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"the commit timed as 'before' (default {BEFORE})")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="timed warm loads per source, round and variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cached_load.json")
    parser.add_argument("--worker", choices=("prepare", "warm", "cold"), help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.task = args.worker
        worker(args)
        return 0

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "pspnet_lib"], capture_output=True)
        if archive.returncode:
            raise SystemExit(f"cannot unpack --before {args.before}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp_path / "before", filter="data")
        codes = {"before": str(tmp_path / "before"), "after": str(REPO)}
        (tmp_path / "files").mkdir()
        spec = _write_files(tmp_path / "files", args.backbone, args.num_classes)
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=spec["files"]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        spec["url"] = f"http://127.0.0.1:{server.server_address[1]}"
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps(spec))
        common = ["--spec", str(spec_path), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        caches = {}
        for variant, code in codes.items():
            caches[variant] = tmp_path / f"cache-{variant}"
            _run(["--worker", "prepare", "--code", code, "--cache", str(caches[variant]), *common])
        times: dict[str, dict[str, list[float]]] = {v: {} for v in codes}
        for round_ in range(args.rounds):
            for variant, code in codes.items():
                for task in ("cold", "warm"):
                    got = _run(["--worker", task, "--code", code, "--cache", str(caches[variant]), *common])
                    for key, values in got.items():
                        times[variant].setdefault(key, []).extend(values)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        skipped = skipped_work(spec, caches["after"], args.threads)
        server.shutdown()
        size_mb = (Path(spec["files"]) / "folder" / "model.safetensors").stat().st_size / 1e6

    medians = {v: {k: statistics.median(t) for k, t in kinds.items()} for v, kinds in times.items()}
    info = machine_info(torch.device("cpu"), args.threads)
    print(
        f"{args.backbone}, {args.num_classes} classes ({size_mb:.0f} MB of weights); {info['cpu']}; threads "
        f"{args.threads}; torch {info['torch']}; load average {info['load_average']}; before = {args.before}; "
        f"medians of {args.rounds} rounds"
    )
    width = max(len(k) for k in medians["after"])
    print(f"  {'load'.ljust(width)}  before (s)  after (s)  before/after")
    for key in medians["after"]:
        before, after = medians["before"][key], medians["after"][key]
        print(f"  {key.ljust(width)}  {before:10.3f}  {after:9.3f}  {before / after:11.1f}x")
    print("  the work the lean path skips (after code, each step alone):")
    for key, value in skipped.items():
        print(f"    {key}: {value:.3f} s")
    write_json(
        {
            "machine": info,
            "backbone": args.backbone,
            "num_classes": args.num_classes,
            "weights_mb": round(size_mb, 1),
            "before": args.before,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "median_s": {v: {k: round(t, 4) for k, t in kinds.items()} for v, kinds in medians.items()},
            "ratio_before_after": {k: round(medians["before"][k] / medians["after"][k], 2) for k in medians["after"]},
            "skipped_work_s": {k: round(v, 4) for k, v in skipped.items()},
        },
        args.out,
    )
    return 0


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the tables readable
        pass


if __name__ == "__main__":
    raise SystemExit(main())
