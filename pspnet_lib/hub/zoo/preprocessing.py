"""The input preprocessing of released weights, as torchvision.transforms.v2 pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors

from ...core.constants import IMAGENET_MEAN, IMAGENET_STD
from ...core.geometry import rescale_size

__all__ = ["KeepRatioResize", "build_transforms"]


class KeepRatioResize(v2.Transform):
    """Resize keeping the aspect ratio so the image fits ``scale = (long_max, short_max)``.

    This is mmsegmentation's test ``Resize(scale=..., keep_ratio=True)``: the largest factor for
    which the long side is at most ``max(scale)`` and the short side at most ``min(scale)``
    (e.g. ``(2048, 512)`` brings ADE20K images to a short side of 512). Images and boxes are
    resized bilinearly, ``tv_tensors.Mask`` with nearest neighbour.
    """

    def __init__(self, scale: Sequence[int], antialias: bool = False) -> None:
        super().__init__()
        scale = [int(s) for s in scale]
        if len(scale) != 2 or min(scale) < 1:
            raise ValueError(f"scale must be two positive integers (long, short), got {scale!r}")
        self.scale = scale
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"size": list(rescale_size(height, width, self.scale))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        return self._call_kernel(TF.resize, inpt, params["size"], antialias=self.antialias)


def build_transforms(
    *,
    resize: Sequence[int] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    antialias: bool = False,
) -> v2.Compose:
    """PIL image / ``uint8`` tensor -> normalised float tensor, optionally resized first.

    Args:
        resize: keep-ratio resize limits ``(long, short)`` (see :class:`KeepRatioResize`), or None.
        mean, std: per-channel statistics on the 0..1 scale.
        antialias: antialias when downscaling (mmsegmentation does not).
    """
    steps: list[v2.Transform] = [v2.ToImage()]
    if resize is not None:
        steps.append(KeepRatioResize(resize, antialias=antialias))
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]
    return v2.Compose(steps)
