"""Segment photos with a pretrained PSPNet and save masks, overlays and a legend.

    python examples/predict_image.py                                  # the bundled sample photos
    python examples/predict_image.py street.jpg --weights pspnet_r50-d8_cityscapes --out predictions/

Writes, per image, ``<name>_mask.png`` (paletted: pixel value = class index), ``<name>_overlay.png``
and ``<name>_panel.png`` (photo | overlay | legend of the classes found), and prints the classes
covering the most pixels. ``--weights`` takes a zoo name (downloaded once, then cached), an
``hf-hub:org/repo`` or a local folder written by ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import pspnet_lib
from pspnet_lib.inference.visualize import side_by_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path, help="image files (default: the bundled sample photos)")
    parser.add_argument("--weights", default="pspnet_r50-d8_ade20k", help="zoo name, hf-hub:org/repo or a local folder")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    parser.add_argument(
        "--size", type=int, help="short side to resize to before inference (default: the weights' protocol)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = pspnet_lib.load_pretrained(args.weights).to(args.device).eval()
    images = args.images or pspnet_lib.sample_images()
    results = pspnet_lib.predict(model, images, resize=args.size)

    args.out.mkdir(parents=True, exist_ok=True)
    for path, result in zip(images, results):
        stem = Path(path).stem
        result.colorize().save(args.out / f"{stem}_mask.png")
        overlay = result.overlay(alpha=0.6)
        overlay.save(args.out / f"{stem}_overlay.png")
        side_by_side([result.overlay(alpha=0.0), overlay, result.legend()]).save(args.out / f"{stem}_panel.png")
        counts = torch.bincount(result.mask.flatten(), minlength=len(result.palette))
        top = counts.argsort(descending=True)[:3]
        share = ", ".join(
            f"{result.class_name(int(c))} {100 * counts[c] / result.mask.numel():.0f}%" for c in top if counts[c]
        )
        logging.info("%s (%dx%d): %s", Path(path).name, result.mask.shape[1], result.mask.shape[0], share)
    logging.info("wrote masks, overlays and panels to %s", args.out)


if __name__ == "__main__":
    main()
