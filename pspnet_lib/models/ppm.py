"""The pyramid pooling module (Zhao et al., 2017, Sec. 3.2).

Usable on its own on any feature map::

    ppm = PyramidPoolingModule(2048)          # bins (1, 2, 3, 6), 512 channels per branch
    y = ppm(features)                         # (N, 2048 + 4 * 512, H, W)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._utils import NormLayer

__all__ = ["PyramidPoolingModule", "PoolingBranch"]


class PoolingBranch(nn.Module):
    """Adaptive average pool to ``bin x bin`` -> 1x1 conv (no bias) -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bin_size: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.bin_size = bin_size
        self.pool = nn.AdaptiveAvgPool2d(bin_size)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)
        if self.training and isinstance(self.norm, nn.BatchNorm2d) and self.norm.training:
            if pooled.shape[0] * pooled.shape[2] * pooled.shape[3] == 1:
                raise ValueError(
                    f"the {self.bin_size}x{self.bin_size} pyramid pooling branch has one value per channel "
                    "with batch size 1, so BatchNorm cannot compute batch statistics in training mode. "
                    "Use a batch size of at least 2, call model.eval() (or freeze the norm layers, "
                    "norm='frozenbatch') for inference or fine-tuning with frozen statistics, "
                    "or build the model with norm='group'."
                )
        return self.act(self.norm(self.conv(pooled)))


class PyramidPoolingModule(nn.Module):
    """Pools a feature map at several grid sizes and concatenates the upsampled results.

    Args:
        in_channels: channels of the input feature map.
        bins: grid sizes of the branches, in concatenation order.
        branch_channels: output channels of each branch; ``in_channels // len(bins)`` if None.
        norm_layer: factory ``channels -> nn.Module`` for the branch norms.
        align_corners: ``align_corners`` of the bilinear upsampling of each branch
            (False in mmsegmentation, True in the author's code).

    The output is ``cat([x, branch(bins[0]), branch(bins[1]), ...], dim=1)`` with
    ``in_channels + len(bins) * branch_channels`` channels at the input's size. Inputs
    smaller than the largest bin are fine (adaptive pooling then repeats values).
    """

    def __init__(
        self,
        in_channels: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        branch_channels: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        bins = tuple(int(b) for b in bins)
        if not bins or any(b < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty sequence of positive integers, got {bins!r}")
        if branch_channels is None:
            branch_channels = in_channels // len(bins)
        self.in_channels = in_channels
        self.bins = bins
        self.branch_channels = branch_channels
        self.align_corners = align_corners
        self.branches = nn.ModuleList(PoolingBranch(in_channels, branch_channels, b, norm_layer) for b in bins)

    @property
    def out_channels(self) -> int:
        return self.in_channels + len(self.bins) * self.branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for branch in self.branches:
            outs.append(F.interpolate(branch(x), size=size, mode="bilinear", align_corners=self.align_corners))
        return torch.cat(outs, dim=1)
