"""Export a PSPNet to ONNX once and run it with ONNX Runtime on images of different sizes.

    pip install "pspnet-lib[onnx]"
    python examples/export_onnx.py --weights pspnet_r50-d8_ade20k --out pspnet.onnx

The exported graph takes a uint8 RGB batch ``(N, 3, H, W)`` of any size (normalisation is inside)
and returns class labels ``(N, H, W)``. The script runs it on the bundled sample photos (three
different sizes), writes colour masks, and reports how often ONNX Runtime agrees with PyTorch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

import pspnet_lib
from pspnet_lib.inference.export import export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="pspnet_r50-d8_ade20k", help="zoo name, hf-hub:org/repo or a local folder")
    parser.add_argument("--out", type=Path, default=Path("pspnet.onnx"), help="the .onnx file to write")
    parser.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"))
    parser.add_argument("--height", type=int, default=512, help="height of the example input used for tracing")
    parser.add_argument("--width", type=int, default=512, help="width of the example input used for tracing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    model = pspnet_lib.load_pretrained(args.weights).eval()
    export_onnx(
        model, args.out, preprocess=True, output="labels", exporter=args.exporter, height=args.height, width=args.width
    )
    logging.info("exported %s (%.1f MiB)", args.out, args.out.stat().st_size / 2**20)

    # --- what a deployment needs: onnxruntime, numpy and PIL; no torch, no pspnet_lib -------------
    import onnxruntime as ort

    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    for path in pspnet_lib.sample_images():
        image = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
        (labels,) = session.run(None, {"images": image.transpose(2, 0, 1)[None]})
        mask = labels[0]  # (H, W) int64 class indices
        # ------------------------------------------------------------------------------------------
        reference = pspnet_lib.predict(model, image, resize=False)  # PyTorch, same input size
        agreement = float((mask == reference.mask.numpy()).mean())
        out = args.out.with_name(f"{args.out.stem}_{path.stem}.png")
        pspnet_lib.colorize(mask, reference.palette).save(out)
        logging.info(
            "%s %dx%d: ONNX Runtime agrees with PyTorch on %.4f%% of pixels -> %s",
            path.name,
            image.shape[1],
            image.shape[0],
            100 * agreement,
            out,
        )


if __name__ == "__main__":
    main()
