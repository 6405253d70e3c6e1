"""What verifying a converted cache entry in full costs (sha256 of the safetensors + json checks).

    python benchmarks/cache_verify.py                 # R50-D8, 150 classes (about 200 MB), 5 rounds
    python benchmarks/cache_verify.py --backbone resnet101 --rounds 3

A load pays this once per entry (when it enters the cache, or when its stamp changed) and
``pspnet download`` on every call; other loads compare the file's stamp instead
(``benchmarks/cached_load.py`` times whole loads). A zoo entry of that architecture (random
weights) is written into a temporary cache with ``save_cached``, then these are timed, interleaved round by round (the file stays in the page
cache: the warm case of repeated loads; a cold cache adds the disk read to every column alike):

* ``sha256 of the safetensors``: the hash alone;
* ``verify_cached(full=True)``: what ``pspnet download`` pays per cached entry (hash, json
  digests, safetensors header);
* ``load_cached(full=True)``: verification plus reading the tensors;
* ``read_safetensors``: what pspnet_lib 0.1 did (no verification);
* ``load_pretrained``: the whole cached load a user calls (the stamp, not a hash).

The table gives medians over rounds and the hash's time against a whole cached ``load_pretrained``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cache_verify.json")
    args = parser.parse_args()

    import torch

    from pspnet_lib import build_pspnet, load_pretrained
    from pspnet_lib.hub import Weights, register_weights, unregister_weights
    from pspnet_lib.hub.download import cached_paths, load_cached, save_cached, sha256_file, verify_cached
    from pspnet_lib.hub.serialization import read_safetensors

    torch.set_num_threads(args.threads)
    config = {"backbone": args.backbone, "num_classes": args.num_classes, "aux": True}
    model = build_pspnet(args.backbone, num_classes=args.num_classes, aux=True)
    name = "bench_cache_verify"
    weights = register_weights(
        Weights(
            name,
            "https://example.invalid/bench-00000000.pth",
            "00000000",
            "mmseg",
            config,
            {"task": "semantic-segmentation"},
        ),
        overwrite=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        save_cached(
            weights, cache, model.state_dict(), model.config.to_dict(), {"mean": [0, 0, 0], "std": [1, 1, 1]}, "0" * 64
        )
        st, _ = cached_paths(weights, cache)
        size_mb = st.stat().st_size / 1e6
        variants = {
            "sha256 of the safetensors": lambda: sha256_file(st),
            "verify_cached(full=True)": lambda: verify_cached(weights, cache, full=True),
            "load_cached(full=True)": lambda: load_cached(weights, cache, full=True),
            "read_safetensors (0.1, unverified)": lambda: read_safetensors(st),
            "load_pretrained (cached)": lambda: load_pretrained(name, cache_dir=cache, local_files_only=True),
        }
        assert verify_cached(weights, cache) is None
        for fn in variants.values():  # warm-up: page cache, allocator, imports
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for key, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    unregister_weights(name)

    medians = {k: statistics.median(v) for k, v in times.items()}
    total = medians["load_pretrained (cached)"]
    sha = medians["sha256 of the safetensors"]
    # Raw hashlib speed on this machine, for reference.
    blob = bytes(64 << 20)
    t0 = time.perf_counter()
    hashlib.sha256(blob).hexdigest()
    hashlib_mb_s = len(blob) / 1e6 / (time.perf_counter() - t0)

    info = machine_info(torch.device("cpu"), args.threads)
    print(
        f"{args.backbone}, {args.num_classes} classes: safetensors {size_mb:.0f} MB; {info['cpu']}; threads {args.threads}; "
        f"load average {info['load_average']}; median of {args.rounds} rounds"
    )
    width = max(len(k) for k in medians)
    for key, value in medians.items():
        print(f"  {key.ljust(width)}  {value * 1000:8.1f} ms")
    print(
        f"  hashing: {size_mb / sha:.0f} MB/s through the file ({hashlib_mb_s:.0f} MB/s hashlib in memory); "
        f"{sha / total:.0%} of the time of a whole cached load_pretrained (which compares the stamp instead)"
    )
    write_json(
        {
            "machine": info,
            "backbone": args.backbone,
            "num_classes": args.num_classes,
            "safetensors_mb": round(size_mb, 1),
            "rounds": args.rounds,
            "median_s": {k: round(v, 4) for k, v in medians.items()},
            "sha256_vs_cached_load_pretrained": round(sha / total, 3),
            "hashlib_mb_per_s": round(hashlib_mb_s),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
