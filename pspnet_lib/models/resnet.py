"""Dilated ResNet backbones for dense prediction.

One implementation covers the three layouts that released PSPNet weights use:

* torchvision / mmsegmentation ``ResNet`` (``stem="standard"``: 7x7 conv, keys ``conv1``/``bn1``),
* mmsegmentation ``ResNetV1c`` (``stem="deep"``, ``stem_channels=64``: 3x3 convs 32-32-64),
* the author's "deep base" ResNet from hszhao/semseg (``stem="deep"``, ``stem_channels=128``:
  3x3 convs 64-64-128, every block of layer3/layer4 dilated: ``contract_dilation=False``).

Instead of striding, layer3/layer4 are dilated to reach ``output_stride`` 8 or 16, so the
network sees the same receptive field at a higher resolution (the paper's "dilated network").
torchvision's own ResNet cannot do this for BasicBlock depths, hence this module.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ._utils import NormLayer, checkpoint_module

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_DEPTHS", "resnet_stage_plan"]


class BasicBlock(nn.Module):
    """Two 3x3 convs. When dilated, only the first conv is (as mmsegmentation's R-18-D8)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, dilated) -> 1x1, i.e. ResNet "v1.5" / mmsegmentation ``style='pytorch'``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

OUTPUT_STRIDES = (8, 16, 32)


def resnet_stage_plan(
    output_stride: int, dilations: Sequence[int] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-stage (layer1..layer4) strides and dilations for an output stride.

    ``output_stride`` 8 gives strides (1, 2, 1, 1) and dilations (1, 1, 2, 4); 16 gives
    (1, 2, 2, 1) / (1, 1, 1, 2); 32 gives (1, 2, 2, 2) / (1, 1, 1, 1). ``dilations`` overrides
    the dilations alone (mmsegmentation's "D32" checkpoints stride *and* dilate layer3/4:
    ``output_stride=32, dilations=(1, 1, 2, 4)``).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    strides = {8: (1, 2, 1, 1), 16: (1, 2, 2, 1), 32: (1, 2, 2, 2)}[output_stride]
    default_dilations = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}[output_stride]
    if dilations is None:
        return strides, default_dilations
    dilations = tuple(int(d) for d in dilations)
    if len(dilations) != 4 or any(d < 1 for d in dilations):
        raise ValueError(f"dilations must be four positive integers (layer1..layer4), got {dilations!r}")
    return strides, dilations


class ResNet(nn.Module):
    """A ResNet trunk returning the features of its four stages.

    Args:
        depth: 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
        in_channels: channels of the input image (3 for RGB; 4 for RGB-D, ...).
        stem: ``"standard"`` (7x7 conv, BN, ReLU, max-pool) or ``"deep"`` (three 3x3 convs of
            widths ``stem_channels/2, stem_channels/2, stem_channels``, each with BN+ReLU,
            then max-pool).
        stem_channels: output channels of the stem; 64 (torchvision, mmsegmentation V1c) or
            128 (the author's deep base, whose layer1 then takes 128 inputs).
        base_channels: width of layer1; layer2..4 double it (mmsegmentation's ``base_channels``).
            64 in every published ResNet; 32 gives a "half-width" backbone with about a
            quarter of the multiply-adds (the offline demo's).
        output_stride: 8, 16 or 32: total downsampling of the last stage.
        contract_dilation: if True, the first block of a dilated stage uses half the stage's
            dilation (torchvision, mmsegmentation); if False, every block of the stage uses it
            (the author's code).
        dilations: explicit per-stage dilations (see :func:`resnet_stage_plan`).
        norm_layer: factory ``channels -> nn.Module`` for every normalisation layer.

    ``forward`` returns a list of four tensors (layer1..layer4); ``feature_info`` describes them.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        in_channels: int = 3,
        stem: str = "deep",
        stem_channels: int = 64,
        base_channels: int = 64,
        output_stride: int = 8,
        contract_dilation: bool = True,
        dilations: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r}; expected one of {sorted(RESNET_DEPTHS)}")
        if stem not in ("standard", "deep"):
            raise ValueError(f"unknown stem {stem!r}; expected 'standard' or 'deep'")
        for name, value in (("stem_channels", stem_channels), ("base_channels", base_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        block, layers = RESNET_DEPTHS[depth]
        strides, stage_dilations = resnet_stage_plan(output_stride, dilations)
        self.depth = depth
        self.stem_type = stem
        self.grad_checkpointing = False

        if stem == "standard":
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
            self.bn1 = norm_layer(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        else:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, 2, 1, bias=False),
                norm_layer(half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False),
                norm_layer(half),
                nn.ReLU(inplace=True),
                nn.Conv2d(half, stem_channels, 3, 1, 1, bias=False),
                norm_layer(stem_channels),
                nn.ReLU(inplace=True),
            )
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        self.feature_info: list[dict] = []
        inplanes, reduction = stem_channels, 4
        for i, (blocks, stride, dilation) in enumerate(zip(layers, strides, stage_dilations)):
            planes = base_channels * 2**i
            layer = self._make_layer(block, inplanes, planes, blocks, stride, dilation, contract_dilation, norm_layer)
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * block.expansion
            reduction *= stride
            self.feature_info.append(
                {"num_chs": inplanes, "reduction": reduction, "dilation": dilation, "module": f"layer{i + 1}"}
            )

    @staticmethod
    def _make_layer(
        block: type[BasicBlock | Bottleneck],
        inplanes: int,
        planes: int,
        blocks: int,
        stride: int,
        dilation: int,
        contract_dilation: bool,
        norm_layer: NormLayer,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
        modules = [block(inplanes, planes, stride, first_dilation, downsample, norm_layer)]
        inplanes = planes * block.expansion
        modules += [block(inplanes, planes, 1, dilation, None, norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four returned stages."""
        return [info["num_chs"] for info in self.feature_info]

    def group_matcher(self, coarse: bool = False, prefix: str = "") -> dict[str, Any]:
        """timm's parameter groups (as timm's own ResNet): the stem, then each stage (coarse) or block.

        ``prefix`` is put before every name (``"backbone."`` inside a PSPNet).
        """
        p = re.escape(prefix)
        stages = rf"^{p}layer(\d+)\." if coarse else rf"^{p}layer(\d+)\.(\d+)\."
        return {"stem": rf"^{p}(?:stem|conv1|bn1)\.", "blocks": [(stages, None)]}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the stem's and each stage's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_type == "standard":
            x = self.relu(self.bn1(self.conv1(x)))
        else:
            x = self.stem(x)
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        checkpointing = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        # The stem works at 1/2 resolution: checkpointing it too cut the peak memory of a bf16
        # checkpointed step by 11% (ResNet-50, batch 2 x 473^2: 628 -> 557 MiB) for ~1% of the FLOPs.
        x = checkpoint_module(self, x, fn=self.forward_stem) if checkpointing else self.forward_stem(x)
        features = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            stage = getattr(self, name)
            if checkpointing:
                x = checkpoint_module(stage, x)
            else:
                x = stage(x)
            features.append(x)
        return features
