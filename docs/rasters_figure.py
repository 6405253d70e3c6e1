"""Draw docs/images/raster_blends.png: a scene, its mask, and the seams each blend leaves.

    python docs/rasters_figure.py

The scene is a mosaic of the library's synthetic scenes written as a GeoTIFF; the "model" is a
per-pixel colour classifier whose logits also depend on the mean colour of the window it is
given, which is how a network's context makes neighbouring windows disagree (a PSPNet's pyramid
pooling sees the whole window). The picture shows the confidence (max probability) of
``predict_raster`` with ``blend="mean"`` and ``blend="hann"``, windows 128x128, stride 96.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image, ImageDraw
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pspnet_lib import predict_raster  # noqa: E402
from pspnet_lib.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, make_scene  # noqa: E402
from pspnet_lib.inference.visualize import side_by_side  # noqa: E402

OUT = Path(__file__).resolve().parent / "images" / "raster_blends.png"


class WindowContext(torch.nn.Module):
    """Logits = a fixed colour classifier - 2 x (the window's mean colour, projected the same way)."""

    def __init__(self) -> None:
        super().__init__()
        colours = torch.tensor(SYNTHETIC_PALETTE, dtype=torch.float32) / 255.0
        mean = torch.tensor([0.485, 0.456, 0.406])
        std = torch.tensor([0.229, 0.224, 0.225])
        self.register_buffer("centres", (colours - mean) / std)  # class colours in normalised space

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = ((x[:, None] - self.centres[None, :, :, None, None]) ** 2).sum(2)
        context = distance.mean(dim=(2, 3), keepdim=True)  # what this window sees overall
        return -distance + 0.5 * context


def main() -> None:
    rng = np.random.default_rng(7)
    tiles = [[make_scene(rng, (192, 256))[0] for _ in range(3)] for _ in range(2)]
    scene = np.concatenate([np.concatenate(row, axis=1) for row in tiles], axis=0)  # 384 x 768
    model = WindowContext().eval()
    model.pretrained_cfg = {"classes": SYNTHETIC_CLASSES, "palette": [list(c) for c in SYNTHETIC_PALETTE]}
    panels = [Image.fromarray(scene)]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "scene.tif"
        profile = dict(driver="GTiff", height=scene.shape[0], width=scene.shape[1], count=3, dtype="uint8")
        with rasterio.open(source, "w", crs="EPSG:32632", transform=from_origin(0, 0, 1, 1), **profile) as dst:
            dst.write(scene.transpose(2, 0, 1))
        for blend in ("mean", "hann"):
            out = Path(folder) / f"{blend}.tif"
            result = predict_raster(model, source, out, crop=128, stride=96, blend=blend, confidence=True)
            if blend == "hann":
                with rasterio.open(out) as mask:
                    panels.insert(1, Image.fromarray(mask.read(1)).convert("P"))
                    panels[1].putpalette([v for c in SYNTHETIC_PALETTE for v in c])
            with rasterio.open(result.outputs["confidence"]) as confidence:
                panels.append(Image.fromarray(confidence.read(1)).convert("L"))
    labels = ["input", "mask (hann)", "confidence, mean blend", "confidence, hann blend"]
    drawn = []
    for panel, label in zip(panels, labels):
        panel = panel.convert("RGB").resize((panel.width // 2, panel.height // 2), Image.BILINEAR)
        ImageDraw.Draw(panel).text((4, 2), label, fill=(255, 0, 255))
        drawn.append(panel)
    top, bottom = side_by_side(drawn[:2]), side_by_side(drawn[2:])
    figure = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 4), "white")
    figure.paste(top, (0, 0))
    figure.paste(bottom, (0, top.height + 4))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(OUT, optimize=True)  # a small PNG
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
