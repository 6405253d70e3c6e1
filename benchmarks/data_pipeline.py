"""Data pipeline throughput: synthetic scene generation and the training/eval transforms.

Prints a table of milliseconds per sample (single process, as one DataLoader worker sees it).
Compare rows within one run; absolute numbers depend on the machine and its load. The
"author's order" rows run the same v2 steps as ``train_transforms`` but in the order of the
author's code (float first, blur and flip on the whole image before the crop), to show what
scaling in uint8 and blurring/flipping after the crop save.

    python benchmarks/data_pipeline.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pspnet_lib.data import IMAGENET_MEAN, IMAGENET_STD, RandomScale, SyntheticScenes, eval_transforms, train_transforms


def authors_order(crop: int) -> v2.Compose:
    fill = {tv_tensors.Image: list(IMAGENET_MEAN), tv_tensors.Mask: 255}
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            RandomScale((0.5, 2.0)),
            v2.RandomApply([v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR, fill=fill)], p=0.5),
            v2.RandomApply([v2.GaussianBlur(5, sigma=1.1)], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.RandomCrop(crop, pad_if_needed=True, fill=fill),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )


def _ms_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for size in (64, 96, 256):
        scenes = SyntheticScenes(10_000, size=(size, size))
        counter = iter(range(10_000))
        rows.append((f"SyntheticScenes {size}x{size}", _ms_per_call(lambda: scenes[next(counter)], args.repeats)))

    for (height, width), crop in (((375, 500), 512), ((512, 683), 512), ((1024, 2048), 769)):
        image = tv_tensors.Image(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        mask = tv_tensors.Mask(torch.randint(0, 19, (height, width)))
        train = train_transforms(crop)
        rows.append(
            (f"train_transforms {height}x{width} -> {crop}", _ms_per_call(lambda: train(image, mask), args.repeats))
        )
        author = authors_order(crop)
        rows.append(
            (f"  author's order {height}x{width} -> {crop}", _ms_per_call(lambda: author(image, mask), args.repeats))
        )
        evaluate = eval_transforms()
        rows.append((f"eval_transforms {height}x{width}", _ms_per_call(lambda: evaluate(image, mask), args.repeats)))

    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  ms/sample")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:9.2f}")


if __name__ == "__main__":
    main()
