"""Export a full-size PSPNet (ResNet-50-D8, 150 classes, random weights) with dynamic shapes and
compare every exported form with eager PyTorch at several sizes; also time the pyramid pooling
rewrite against nn.AdaptiveAvgPool2d on a ResNet-50 feature map.

    python benchmarks/export_dynamic.py [--backbone resnet50] [--example 256] [--out /tmp/pspnet_export]

Prints a table: format, exporter, export seconds, file MiB, max relative error per size.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import torch.nn as nn

from pspnet_lib import build_pspnet
from pspnet_lib.inference.export import export_onnx, export_program, export_torchscript, save_program
from pspnet_lib.models.ppm import MatmulAdaptiveAvgPool2d


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--example", type=int, default=256)
    parser.add_argument("--sizes", default="256x256,321x479,200x333")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pspnet_export"))
    parser.add_argument("--formats", default="onnx-dynamo,onnx-torchscript,exported-program,torchscript")
    args = parser.parse_args()
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    torch.manual_seed(0)
    model = build_pspnet(args.backbone, num_classes=150).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    inputs = {s: torch.randn(1, 3, *s) for s in sizes}
    with torch.no_grad():
        expected = {s: model(x) for s, x in inputs.items()}

    # Pooling rewrite vs AdaptiveAvgPool2d on a layer4-sized map (2048 channels, 64x64 = 512 px input).
    feat = torch.randn(1, 2048, 64, 64)
    for bins in (1, 2, 3, 6):
        ref, new = nn.AdaptiveAvgPool2d(bins), MatmulAdaptiveAvgPool2d(bins)
        for f in (ref, new):
            f(feat)
        t0 = time.perf_counter()
        for _ in range(20):
            ref(feat)
        t1 = time.perf_counter()
        for _ in range(20):
            new(feat)
        t2 = time.perf_counter()
        print(
            f"pool bins={bins}: AdaptiveAvgPool2d {1e3 * (t1 - t0) / 20:.2f} ms, matmul {1e3 * (t2 - t1) / 20:.2f} ms, "
            f"max rel diff {rel(new(feat), ref(feat)):.1e}"
        )

    rows = []
    e = args.example
    for fmt in args.formats.split(","):
        t = time.perf_counter()
        if fmt.startswith("onnx"):
            import onnxruntime as ort

            path = export_onnx(model, args.out / f"{fmt}.onnx", height=e, width=e, exporter=fmt.split("-")[1])
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            run = lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        elif fmt == "exported-program":
            path = save_program(export_program(model, height=e, width=e), args.out / "model.pt2")
            module = torch.export.load(str(path)).module()
            run = lambda x: module(x)
        else:
            path = export_torchscript(model, args.out / "model.pt", height=e, width=e)
            module = torch.jit.load(str(path))
            run = lambda x: module(x)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            errors = [rel(run(inputs[s]), expected[s]) for s in sizes]
        rows.append((fmt, seconds, path.stat().st_size / 2**20, errors))

    print(f"\n{args.backbone}, 150 classes, example {e}x{e}; errors = max|export - eager| / max|eager|")
    print(f"{'format':<18}{'export s':>9}{'MiB':>8}  " + "  ".join(f"{h}x{w:<9}" for h, w in sizes))
    for fmt, seconds, mib, errors in rows:
        print(f"{fmt:<18}{seconds:>9.1f}{mib:>8.1f}  " + "  ".join(f"{err:<11.1e}" for err in errors))


if __name__ == "__main__":
    main()
