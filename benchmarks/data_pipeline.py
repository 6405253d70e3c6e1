"""Data pipeline throughput: decoding pictures and masks, synthetic scenes, the training/eval transforms.

Prints tables of milliseconds per sample (single process, as one DataLoader worker sees it).
Compare rows within one run; absolute numbers depend on the machine and its load.

``transforms``: the "author's order" rows run the same v2 steps as ``train_transforms`` but in the
order of the author's code (float first, blur and flip on the whole image before the crop), to
show what scaling in uint8 and blurring/flipping after the crop save.

``decode``: files of the zoo datasets' kinds and sizes (VOC/ADE20K-sized JPEG pictures, Cityscapes'
2048x1024 PNG pictures and paletted/grey PNG masks) decoded by Pillow and by torchvision.io, and a
``FolderDataset`` sample (read picture + mask, then ``train_transforms``) with the reader's
default decoders against ``PSPNET_IMAGE_DECODER=pillow`` (Pillow for everything, the reader
before torchvision.io took the 8-bit pictures). The variants are interleaved round by round;
the table gives medians and the median of the per-round ratios. Results are also written to
``benchmarks/results/data_pipeline_decode.json`` with the machine.

    python benchmarks/data_pipeline.py [--sections decode,transforms] [--repeats 20] [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from pspnet_lib.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderDataset,
    RandomScale,
    SyntheticScenes,
    eval_transforms,
    train_transforms,
)


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


def _scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A picture with photo-like smooth gradients and noise, and a mask of 19 blob-shaped regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], -1)
    picture = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
    field = sum(
        np.sin(xx / rng.uniform(20, 200) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(20, 200)) for _ in range(3)
    )
    edges = np.quantile(field, np.linspace(0, 1, 20)[1:-1])
    return picture, np.digitize(field, edges).astype(np.uint8)


def _write_files(root: Path) -> dict[str, Path]:
    files = {}
    for name, (height, width) in {"voc": (375, 500), "ade": (512, 683), "cityscapes": (1024, 2048)}.items():
        picture, mask = _scene(height, width, len(name))
        suffix = ".png" if name == "cityscapes" else ".jpg"  # Cityscapes ships PNG pictures
        files[f"{name}/picture"] = root / f"{name}{suffix}"
        Image.fromarray(picture).save(files[f"{name}/picture"], quality=90)
        paletted = Image.fromarray(mask, mode="P")
        paletted.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
        files[f"{name}/mask"] = root / f"{name}_mask.png"
        paletted.save(files[f"{name}/mask"])
        files[f"{name}/grey mask"] = root / f"{name}_grey.png"
        Image.fromarray(mask).save(files[f"{name}/grey mask"])
    return files


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def _interleaved(variants: dict, rounds: int, repeats: int) -> dict[str, list[float]]:
    """ms per call of each variant, one value per round; variants alternate within each round. A
    round calls each variant at least ``repeats`` times and for at least ~50 ms (short calls are
    noisy on a shared machine)."""
    warm = max(_timed(fn) for fn in variants.values())  # warm-up, and the calls' length
    repeats = max(repeats, int(50 / max(warm, 1e-3)))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(statistics.fmean(_timed(variants[name]) for _ in range(repeats)))
    return times


def _seeded(folder: FolderDataset):
    """One sample with the same random augmentation each call: the random scale alone changes a
    call's cost several times over, which would swamp the decoders' difference."""
    torch.manual_seed(0)
    return folder[0]


def _with_decoder(decoder: str, fn):
    def call():
        previous = os.environ.get("PSPNET_IMAGE_DECODER")
        os.environ["PSPNET_IMAGE_DECODER"] = decoder
        try:
            return fn()
        finally:
            if previous is None:
                del os.environ["PSPNET_IMAGE_DECODER"]
            else:
                os.environ["PSPNET_IMAGE_DECODER"] = previous

    return call


def decode_section(rounds: int, repeats: int) -> list[dict]:
    from torchvision.io import ImageReadMode, decode_image

    from pspnet_lib.core.images import read_image, read_mask

    def tv(path: Path, mode):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in torchvision 0.29 (TorchCodec)
            return decode_image(str(path), mode=mode)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_files(Path(tmp))
        for key, path in files.items():
            dataset, what = key.split("/")
            if what == "picture":
                variants = {
                    "Pillow": lambda p=path: np.asarray(Image.open(p).convert("RGB")),
                    "torchvision.io": lambda p=path: tv(p, ImageReadMode.RGB).permute(1, 2, 0).numpy(),
                    "read_image (pspnet_lib)": lambda p=path: read_image(p),
                }
            else:
                variants = {
                    "Pillow": lambda p=path: np.asarray(Image.open(p)),
                    "torchvision.io": lambda p=path: tv(p, ImageReadMode.UNCHANGED)[0].numpy(),
                    "read_mask (pspnet_lib)": lambda p=path: read_mask(p),
                }
            times = _interleaved(variants, rounds, repeats)
            rows.append(_row(f"decode {dataset} {what} {path.suffix[1:].upper()}", times, "Pillow", "torchvision.io"))
        for dataset in ("voc", "cityscapes"):
            root = Path(tmp) / f"folder_{dataset}"
            (root / "images").mkdir(parents=True)
            (root / "masks").mkdir()
            picture = files[f"{dataset}/picture"]
            os.link(picture, root / "images" / f"a{picture.suffix}")
            os.link(files[f"{dataset}/mask"], root / "masks" / "a.png")
            crop = 512 if dataset == "voc" else 769
            folder = FolderDataset(root, classes=[f"c{i}" for i in range(19)])
            for transforms, what in ((train_transforms(crop), f"+ train_transforms({crop})"), (None, "(read only)")):
                folder.transforms = transforms
                before, after = "PSPNET_IMAGE_DECODER=pillow", "default (torchvision.io pictures)"
                times = _interleaved(
                    {
                        before: _with_decoder("pillow", lambda f=folder: _seeded(f)),
                        after: _with_decoder("auto", lambda f=folder: _seeded(f)),
                    },
                    rounds,
                    repeats,
                )
                rows.append(_row(f"FolderDataset[i] {dataset} {what}", times, before, after))
    return rows


def _row(name: str, times: dict[str, list[float]], before: str, after: str) -> dict:
    ratios = [b / a for b, a in zip(times[before], times[after])]
    return {
        "name": name,
        "median_ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "speedup": round(statistics.median(ratios), 3),
        "speedup_of": f"{before} / {after}",
    }


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def transforms_section(repeats: int) -> None:
    rows = []
    for size in (64, 96, 256):
        scenes = SyntheticScenes(10_000, size=(size, size))
        counter = iter(range(10_000))
        rows.append((f"SyntheticScenes {size}x{size}", _ms_per_call(lambda: scenes[next(counter)], repeats)))

    for (height, width), crop in (((375, 500), 512), ((512, 683), 512), ((1024, 2048), 769)):
        image = tv_tensors.Image(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        mask = tv_tensors.Mask(torch.randint(0, 19, (height, width)))
        train = train_transforms(crop)
        rows.append((f"train_transforms {height}x{width} -> {crop}", _ms_per_call(lambda: train(image, mask), repeats)))
        author = authors_order(crop)
        rows.append(
            (f"  author's order {height}x{width} -> {crop}", _ms_per_call(lambda: author(image, mask), repeats))
        )
        evaluate = eval_transforms()
        rows.append((f"eval_transforms {height}x{width}", _ms_per_call(lambda: evaluate(image, mask), repeats)))

    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  ms/sample")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="decode,transforms", help="comma-separated: decode, transforms")
    parser.add_argument("--repeats", type=int, default=20, help="calls per timing (transforms) / per round (decode: 3)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the decode section")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_pipeline_decode.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sections = {s.strip() for s in args.sections.split(",")}

    if "decode" in sections:
        machine = _machine()
        print(f"machine: {machine}, torch threads {args.threads}, {args.rounds} interleaved rounds (medians)")
        rows = decode_section(args.rounds, 3)
        width = max(len(r["name"]) for r in rows)
        print(f"{'decode step':<{width}}  {'before ms':>9}  {'after ms':>9}  speed-up  (before / after)")
        for r in rows:
            before, after = (r["median_ms"][k] for k in r["speedup_of"].split(" / "))
            print(f"{r['name']:<{width}}  {before:9.2f}  {after:9.2f}  {r['speedup']:7.2f}x  {r['speedup_of']}")
        report = {"machine": machine, "info": machine_info(torch.device("cpu"), args.threads), "rows": rows}
        write_json(report, args.out)
    if "transforms" in sections:
        transforms_section(args.repeats)


if __name__ == "__main__":
    main()
