"""What the checked checkpoint reader and the Trainer's content digest cost (issue 22).

    python benchmarks/checkpoint_read.py                 # R50-D8, 150 classes (about 200 MB), 5 rounds
    python benchmarks/checkpoint_read.py --backbone resnet101 --rounds 3

A state dict of that architecture (random weights) is saved with ``torch.save`` in the zip layout
and in the legacy one; these are timed, interleaved round by round (the files stay in the page
cache: the warm case):

* ``torch.load(weights_only=True)``: torch's own reader (the baseline: no checks of its own beyond
  the allow-list, no CRC check, no budget);
* ``read_checkpoint``: this library's reader (archive read once and checked, CRC-32 of every
  record, the pickle scanned and bounded, then torch's weights-only unpickler on those bytes);
* ``content_digest``: the sha256 a Trainer checkpoint records, over model + SGD momentum (the
  size of a real checkpoint's tensors), paid once per save and once per ``--resume``.

Medians over rounds and each reader's ratio to ``torch.load`` are printed and written to
``benchmarks/results/checkpoint_read.json``.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "checkpoint_read.json")
    args = parser.parse_args()

    import torch

    from pspnet_lib import build_pspnet
    from pspnet_lib.core.digest import content_digest
    from pspnet_lib.hub.serialization import read_checkpoint

    torch.set_num_threads(args.threads)
    state = build_pspnet(args.backbone, num_classes=args.num_classes, aux=True).state_dict()
    trainer_like = {
        "model": state,
        "optimizer": {"state": {i: {"momentum_buffer": v} for i, v in enumerate(state.values())}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        zipped, legacy = Path(tmp) / "zip.pth", Path(tmp) / "legacy.pth"
        torch.save({"meta": {"iter": 80000}, "state_dict": state}, zipped)
        torch.save({"meta": {"iter": 80000}, "state_dict": state}, legacy, _use_new_zipfile_serialization=False)
        size_mb = zipped.stat().st_size / 1e6
        variants = {
            "torch.load, zip": lambda: torch.load(zipped, weights_only=True),
            "read_checkpoint, zip": lambda: read_checkpoint(zipped),
            "torch.load, legacy": lambda: torch.load(legacy, weights_only=True),
            "read_checkpoint, legacy": lambda: read_checkpoint(legacy),
            "content_digest (model + momentum)": lambda: content_digest(trainer_like),
        }
        for fn in variants.values():  # warm-up: page cache, allocator, imports
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for key, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)

    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        layout: medians[f"read_checkpoint, {layout}"] / medians[f"torch.load, {layout}"] for layout in ("zip", "legacy")
    }
    info = machine_info(torch.device("cpu"), args.threads)
    print(
        f"{args.backbone}, {args.num_classes} classes: checkpoint {size_mb:.0f} MB; {info['cpu']}; threads "
        f"{args.threads}; load average {info['load_average']}; median of {args.rounds} rounds"
    )
    width = max(len(k) for k in medians)
    for key, value in medians.items():
        print(f"  {key.ljust(width)}  {value * 1000:8.1f} ms")
    for layout, ratio in ratios.items():
        print(f"  read_checkpoint / torch.load ({layout}): {ratio:.2f}x")
    write_json(
        {
            "machine": info,
            "backbone": args.backbone,
            "num_classes": args.num_classes,
            "checkpoint_mb": round(size_mb, 1),
            "rounds": args.rounds,
            "median_s": {k: round(v, 4) for k, v in medians.items()},
            "read_checkpoint_over_torch_load": {k: round(v, 2) for k, v in ratios.items()},
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
