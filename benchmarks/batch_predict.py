"""Batch prediction throughput: the whole ``predict_files`` pipeline vs the model alone vs decoding alone.

A folder of a few hundred JPEG pictures of mixed sizes (six camera-like sizes, as a real photo
folder has) is segmented by ``pspnet_lib.predict_files`` (decode in DataLoader workers, batch the
pictures the protocol resizes to one size, forward, write mask PNGs atomically, manifest) with 0,
1 and 2 decoding workers. The same batches are timed through the model alone (pictures decoded
beforehand) and the pictures are decoded alone, so the pipeline's overhead is a ratio. Variants
are interleaved round by round; the table gives medians. It also checks why pictures of
different sizes are grouped rather than padded: pad-and-crop changes PSPNet's masks (pyramid
pooling averages over the padding).

    python benchmarks/batch_predict.py [--pictures 240] [--rounds 3] [--threads 2] [--backbone resnet18]

Prints a Markdown table for docs/performance.md and writes benchmarks/results/batch_predict.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine_info, write_json  # (also puts the checkout on sys.path)
from PIL import Image

from pspnet_lib import build_pspnet, predict, predict_files
from pspnet_lib._testing import randomize_batchnorm_, smooth_image
from pspnet_lib.core.geometry import rescale_size
from pspnet_lib.core.images import to_image_tensor

#: (width, height) of the pictures, cycled: 4:3 and 3:4 photos, 16:9 video frames, squares.
SIZES = [(640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720), (512, 512)]


def make_pictures(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        field = smooth_image(1, height, width, seed=int(rng.integers(1 << 30)))[0]  # roughly standardised
        picture = ((field * 0.25 + 0.5).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(picture).save(path, quality=90)
        paths.append(path)
    return paths


def decode_alone(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        to_image_tensor(path, 3)
    return time.perf_counter() - start


def model_alone(model: torch.nn.Module, tensors: list[torch.Tensor], size: tuple[int, int], batch_size: int) -> float:
    """predict() on the batches the pipeline forms (same network input size, ``batch_size`` at most)."""
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(rescale_size(tensor.shape[-2], tensor.shape[-1], size), []).append(tensor)
    start = time.perf_counter()
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            predict(model, group[i : i + batch_size], size=size, batch_size=batch_size)
    return time.perf_counter() - start


def pipeline(model: torch.nn.Module, folder: Path, out: Path, size, batch_size: int, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = predict_files(model, [folder], out, size=size, batch_size=batch_size, num_workers=workers, progress=False)
    seconds = time.perf_counter() - start
    assert summary.ok and summary.done == summary.total, summary.line()
    return seconds


def padding_agreement(model: torch.nn.Module, tensors: list[torch.Tensor], size) -> float:
    """Pixels whose class is unchanged when a picture, resized as the protocol does, is padded by 25% (as
    if batched with a larger one) and the result cropped back."""
    agree = total = 0
    for tensor in tensors[:6]:
        height, width = rescale_size(tensor.shape[-2], tensor.shape[-1], size)
        seen = F.interpolate(tensor[None].float() / 255, size=(height, width), mode="bilinear", align_corners=False)[0]
        exact = predict(model, seen, resize=False).mask
        padded = F.pad(seen, (0, width // 4, 0, height // 4))
        cropped = predict(model, padded, resize=False).mask[:height, :width]
        agree += int((cropped == exact).sum())
        total += exact.numel()
    return agree / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--short-side", type=int, default=128, help="protocol resize: (4 x short, short)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_pspnet(args.backbone, num_classes=21).eval()  # speed does not depend on the weights' values
    randomize_batchnorm_(model)  # but outputs that depend on the input make the padding check meaningful
    size = (4 * args.short_side, args.short_side)
    info = machine_info(torch.device("cpu"), args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "pictures", Path(tmp) / "out"
        folder.mkdir()
        paths = make_pictures(folder, args.pictures)
        tensors = [to_image_tensor(p, 3) for p in paths]
        agreement = padding_agreement(model, tensors, size)
        pipeline(model, folder, out, size, args.batch_size, 0)  # warm-up (first-call costs)
        variants = {
            "decode alone (1 process)": lambda: decode_alone(paths),
            "model alone (same batches)": lambda: model_alone(model, tensors, size, args.batch_size),
            **{
                f"pipeline, {w} worker{'s' if w != 1 else ''}": (
                    lambda w=w: pipeline(model, folder, out, size, args.batch_size, w)
                )
                for w in (0, 1, 2)
            },
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name, run in variants.items():
                times[name].append(run())
                print(f"round {round_ + 1}/{args.rounds}: {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)

    n = args.pictures
    median = {name: statistics.median(values) for name, values in times.items()}
    model_rate = n / median["model alone (same batches)"]
    print(f"\n{info['cpu']}, {args.threads} threads, torch {info['torch']}, load average {info['load_average']}")
    print(
        f"{n} JPEG pictures of {len(SIZES)} sizes (640x480 ... 1280x720), PSPNet {args.backbone}-D8 (21 classes), "
        f"resized to fit {size[0]}x{size[1]}, batch size {args.batch_size}; median of {args.rounds} rounds\n"
    )
    print("| | pictures/s | ms/picture | vs model alone |")
    print("|---|---:|---:|---:|")
    for name, seconds in median.items():
        rate = n / seconds
        print(f"| {name} | {rate:.1f} | {1000 * seconds / n:.1f} | {rate / model_rate:.2f}x |")
    print(f"\npad-and-crop instead of grouping by size: {100 * agreement:.2f}% of pixels keep their class")
    write_json(
        {
            "machine": info,
            "settings": vars(args),
            "seconds": times,
            "median_pictures_per_second": {name: n / seconds for name, seconds in median.items()},
            "padding_agreement": agreement,
        },
        Path(__file__).resolve().parent / "results" / "batch_predict.json",
    )


if __name__ == "__main__":
    main()
