"""Fine-tune a PSPNet on your own folder of images and masks, then segment a picture with it.

    # your data: DATA/images/{train,val}/*.jpg, DATA/masks/{train,val}/*.png, DATA/classes.txt
    python examples/finetune_folder.py --data DATA --weights pspnet_r50-d8_ade20k --iters 2000 --crop 512

    # no data at hand: generated scenes, a small ResNet-18 model and a few iterations (CPU, ~1 min)
    python examples/finetune_folder.py --synthetic --backbone resnet18 --iters 40 --crop 64 --batch-size 4

Masks hold class indices (0..K-1, 255 = ignore), see docs/datasets.md. The run directory gets
checkpoints (resumable), metrics.json and ``model/`` (a ``save_pretrained`` folder that
``pspnet predict --weights`` and ``load_pretrained`` accept).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import pspnet_lib
from pspnet_lib.data import FolderDataset, eval_transforms, train_transforms, write_synthetic_dataset
from pspnet_lib.engine.trainer import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder with images/, masks/ and classes.txt")
    source.add_argument("--synthetic", action="store_true", help="generate a small dataset of synthetic scenes")
    parser.add_argument(
        "--weights", help="start from these weights (zoo name, hf-hub:, folder); default: random initialisation"
    )
    parser.add_argument("--backbone", default="resnet50", help="backbone when --weights is not given")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--crop", type=int, default=512, help="training crop size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    root = args.data
    if args.synthetic:
        root = write_synthetic_dataset(
            args.out / "data", num_images=48, size=(96, 96), splits={"train": 0.75, "val": 0.25}, overwrite=True
        )
    train_set = FolderDataset(root, split="train", transforms=train_transforms(args.crop))
    val_set = FolderDataset(root, split="val", transforms=eval_transforms(normalize=False))
    num_classes = len(train_set.classes)

    if args.weights:  # every layer but the classifiers comes from the pretrained weights
        model = pspnet_lib.load_pretrained(args.weights, num_classes=num_classes)
    else:
        model = pspnet_lib.build_pspnet(args.backbone, num_classes=num_classes)
    config = TrainConfig(
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        out_dir=str(args.out / "run"),
        device=args.device,
        num_workers=0 if args.device == "cpu" else 4,
        log_interval=max(1, args.iters // 10),
        ckpt_interval=max(1, args.iters // 2),
    )
    summary = Trainer(model, train_set, val_set, config).fit()
    logging.info("validation mIoU %.3f; model saved to %s", summary["metrics"]["mIoU"], summary["model_dir"])

    image_path = val_set.files[0][0]
    result = pspnet_lib.predict(model, image_path)
    result.overlay().save(args.out / "example_overlay.png")
    logging.info("segmented %s -> %s", image_path, args.out / "example_overlay.png")


if __name__ == "__main__":
    main()
