"""``pspnet demo``: train a small PSPNet on synthetic scenes offline and look at the result (or segment sample photos)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from .common import device_name, float_in, int_in

    p = subparsers.add_parser(
        "demo",
        help="offline demo: train a small PSPNet on synthetic scenes (one to two minutes on a CPU)",
        description="Generate labelled synthetic scenes, train a small (half-width ResNet-18) PSPNet on them with "
        "the library's Trainer, score it on held-out scenes and write pictures of its predictions next to the ground truth, "
        "a training curve, the metrics and the model. With --weights NAME, segment the bundled sample photos "
        "with zoo weights instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="pspnet-demo", metavar="DIR", help="output directory")
    p.add_argument(
        "--iters", type=int_in(1), default=400, metavar="N", help="training iterations (run time scales with it)"
    )
    p.add_argument("--image-size", type=int_in(32, 4096), default=96, metavar="N", help="side of the square scenes")
    p.add_argument("--train-images", type=int_in(1, 1_000_000), default=200, metavar="N", help="training scenes")
    p.add_argument("--val-images", type=int_in(1, 1_000_000), default=40, metavar="N", help="held-out scenes scored")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=8, metavar="N", help="scenes per training iteration")
    p.add_argument("--lr", type=float_in(0, 100, open_low=True), default=0.002, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes, augmentation and initialisation")
    p.add_argument("--num-workers", type=int_in(0, 1024), default=0, help="DataLoader workers")
    p.add_argument("--device", type=device_name, help="cpu, cuda, cuda:1 ...; None picks cuda if available, else cpu")
    p.add_argument("--weights", metavar="NAME", help="segment the bundled sample photos with these weights instead")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's results in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo, run_weights_demo

    if args.weights:
        result = run_weights_demo(args.weights, args.out, device=args.device, overwrite=args.overwrite)
        sys.stdout.write("\n".join(result["files"]) + "\n")
        return 0
    for name in ("iters", "train_images", "val_images", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    result = run_demo(
        args.out,
        iters=args.iters,
        image_size=args.image_size,
        train_images=args.train_images,
        val_images=args.val_images,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_workers=args.num_workers,
        device=args.device,
        overwrite=args.overwrite,
        progress=False if args.no_progress else None,
    )
    sys.stdout.write(
        f"held-out mIoU {100 * result['mIoU']:.1f}% (constant '{result['baseline_constant']['class']}': "
        f"{100 * result['baseline_constant']['mIoU']:.1f}%) after {result['iterations']} iterations, "
        f"{result['seconds']:.0f} s\n"
        f"look at {result['files']['predictions']} and {result['files']['training_curve']}\n"
    )
    return 0
