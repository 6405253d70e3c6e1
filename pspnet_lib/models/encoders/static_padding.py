"""Constant "SAME" padding where timm computes it from the input size although it cannot depend on it.

timm's ``Conv2dSame`` / ``AvgPool2dSame`` / ``MaxPool2dSame`` pad TensorFlow-style ("SAME",
possibly asymmetric) with amounts computed from the input's size at every call. With stride 1
the amount is ``(kernel - 1) * dilation`` whatever the size, but ``torch.export`` cannot prove
that from the formula (``max(ceil(x / 1) - 1 + ... - x, 0)``) and refuses dynamic heights and
widths; dilated ConvNeXt stages at output stride 8 have such a convolution. These modules are
given the same padding as constants (same parameters, same state-dict keys, same results).
Strided ones keep timm's computation: there the amount does depend on the size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["make_same_padding_static"]


def _same_pad(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of stride-1 "SAME" padding, as timm's ``pad_same``."""
    pad_h, pad_w = ((k - 1) * d for k, d in zip(kernel, dilation))
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class StaticSameConv2d(nn.Conv2d):
    """``Conv2d`` with constant (possibly asymmetric) stride-1 "SAME" padding; timm's ``Conv2dSame`` otherwise."""

    same_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.same_pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class StaticSameAvgPool2d(nn.AvgPool2d):
    """``AvgPool2d`` with constant stride-1 "SAME" zero padding (counted in the average, as timm's)."""

    same_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            F.pad(x, self.same_pad), self.kernel_size, self.stride, 0, self.ceil_mode, self.count_include_pad
        )


class StaticSameMaxPool2d(nn.MaxPool2d):
    """``MaxPool2d`` with constant stride-1 "SAME" padding by ``-inf``, as timm's."""

    same_pad: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, self.same_pad, value=-float("inf"))
        return F.max_pool2d(padded, self.kernel_size, self.stride, 0, self.dilation, self.ceil_mode)


def make_same_padding_static(model: nn.Module) -> int:
    """Give every stride-1 timm "SAME" conv/pool of ``model`` constant padding, in place; returns how many."""
    from timm.layers import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    count = 0
    for module in model.modules():
        if isinstance(module, (StaticSameConv2d, StaticSameAvgPool2d, StaticSameMaxPool2d)):
            continue
        if not isinstance(module, (Conv2dSame, AvgPool2dSame, MaxPool2dSame)) or _pair(module.stride) != (1, 1):
            continue
        dilation = (1, 1) if isinstance(module, AvgPool2dSame) else _pair(module.dilation)
        static = {Conv2dSame: StaticSameConv2d, AvgPool2dSame: StaticSameAvgPool2d, MaxPool2dSame: StaticSameMaxPool2d}
        # The same parameters and state-dict keys: only forward changes (a class swap, no copy).
        setattr(module, "__class__", next(v for k, v in static.items() if isinstance(module, k)))  # noqa: B010
        setattr(module, "same_pad", _same_pad(_pair(module.kernel_size), dilation))  # noqa: B010
        count += 1
    return count
