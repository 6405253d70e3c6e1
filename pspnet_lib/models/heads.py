"""Segmentation heads: the PSP head (main) and the FCN head (auxiliary, on layer3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._utils import ConvNormAct, NormLayer, checkpoint_module
from .ppm import PyramidPoolingModule

__all__ = ["PSPHead", "FCNHead", "make_classifier"]


def make_classifier(channels: int, num_classes: int) -> nn.Module:
    """The 1x1 classifier conv (with bias), or ``nn.Identity`` for ``num_classes=0`` (features out)."""
    return nn.Conv2d(channels, num_classes, 1) if num_classes > 0 else nn.Identity()


class PSPHead(nn.Module):
    """Pyramid pooling -> 3x3 conv -> norm -> ReLU -> Dropout2d -> 1x1 classifier (with bias).

    Args:
        in_channels: channels of the backbone's last stage (2048 for ResNet-50).
        num_classes: number of output classes.
        channels: width of the 3x3 bottleneck (512; mmsegmentation's R-18 models use 128).
        bins: pyramid grid sizes.
        branch_channels: channels per pyramid branch (``in_channels // len(bins)`` if None).
        dropout: Dropout2d probability before the classifier.
        norm_layer: factory for the norm layers.
        align_corners: used when upsampling the pyramid branches.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 512,
        bins: Sequence[int] = (1, 2, 3, 6),
        branch_channels: int | None = None,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.ppm = PyramidPoolingModule(in_channels, bins, branch_channels, norm_layer, align_corners)
        self.bottleneck = ConvNormAct(self.ppm.out_channels, channels, 3, norm_layer, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.channels = channels
        self.classifier = make_classifier(channels, num_classes)
        self.grad_checkpointing = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features before dropout and the classifier, ``(N, channels, h, w)``."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_module(self, x, fn=self._pooled_bottleneck)
        return self._pooled_bottleneck(x)

    def _pooled_bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.ppm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


class FCNHead(nn.Module):
    """``num_convs`` x (3x3 conv -> norm -> ReLU) -> Dropout2d -> 1x1 classifier (with bias)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 1,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(
                ConvNormAct(in_channels if i == 0 else channels, channels, 3, norm_layer, padding=1)
                for i in range(num_convs)
            )
        )
        self.dropout = nn.Dropout2d(dropout)
        self.channels = channels
        self.classifier = make_classifier(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(x)))
