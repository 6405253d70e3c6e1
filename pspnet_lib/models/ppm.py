"""The pyramid pooling module (Zhao et al., 2017, Sec. 3.2).

Usable on its own on any feature map::

    ppm = PyramidPoolingModule(2048)          # bins (1, 2, 3, 6), 512 channels per branch
    y = ppm(features)                         # (N, 2048 + 4 * 512, H, W)

For export (ONNX, ``torch.export``) the adaptive pooling can be swapped for
:class:`MatmulAdaptiveAvgPool2d`, which computes the same bins with two averaging matrix
products whose shapes follow the input, so one exported graph serves every input size::

    ppm.set_exportable(True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._utils import NormLayer, is_symbolic_tracing

__all__ = ["PyramidPoolingModule", "PoolingBranch", "MatmulAdaptiveAvgPool2d", "adaptive_pool_matrix"]


def adaptive_pool_matrix(size: int, bins: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(bins, size)`` matrix that averages a length-``size`` axis into ``bins`` bins.

    Row ``i`` averages positions ``floor(i * size / bins) <= j < ceil((i + 1) * size / bins)``,
    the bins of :class:`torch.nn.AdaptiveAvgPool2d` (overlapping when ``size`` is not a
    multiple of ``bins``; repeated positions when ``size < bins``). ``size`` may be a symbolic
    size during tracing/export: everything here is tensor arithmetic on it, so exported graphs
    rebuild the matrix for each input.
    """
    i = torch.arange(bins, device=device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + (bins - 1), bins, rounding_mode="floor")
    j = torch.arange(size, device=device)
    inside = (j.unsqueeze(0) >= start.unsqueeze(1)) & (j.unsqueeze(0) < end.unsqueeze(1))
    return inside.to(dtype) / (end - start).to(dtype).unsqueeze(1)


def _matmul_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    rows = adaptive_pool_matrix(x.shape[-2], bins, dtype=x.dtype, device=x.device)
    cols = adaptive_pool_matrix(x.shape[-1], bins, dtype=x.dtype, device=x.device)
    # Columns first: x is contiguous, so torch.export folds (N, C, H, W) @ (W, b) without
    # guarding on the feature size (rows first made it specialise on width != 1).
    return torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1)))


class MatmulAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as ``rows @ x @ cols.T`` with input-sized averaging matrices.

    Equal to ``nn.AdaptiveAvgPool2d(output_size)`` up to float rounding, for every input size,
    but made only of ``arange``/comparisons/``matmul``, which ONNX and ``torch.export`` express
    with dynamic height and width (ONNX's own pooling has no adaptive form for dynamic sizes).
    The cost is ``bins`` multiply-adds per input element instead of one; negligible next to the
    backbone.

    Args:
        output_size: ``bins`` or ``(bins_h, bins_w)``.
    """

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)
        if len(self.output_size) != 2 or any(s < 1 for s in self.output_size):
            raise ValueError(f"output_size must be a positive int or a pair of them, got {output_size!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_size[0] == self.output_size[1]:
            return _matmul_pool(x, self.output_size[0])
        rows = adaptive_pool_matrix(x.shape[-2], self.output_size[0], dtype=x.dtype, device=x.device)
        cols = adaptive_pool_matrix(x.shape[-1], self.output_size[1], dtype=x.dtype, device=x.device)
        return torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1)))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class PoolingBranch(nn.Module):
    """Adaptive average pool to ``bin x bin`` -> 1x1 conv (no bias) -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bin_size: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.bin_size = bin_size
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(bin_size)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and isinstance(self.pool, nn.AdaptiveAvgPool2d):
            # Inductor lowers adaptive pooling with windows computed from the input size and guards
            # on it ((H - 1) // 8 == 12, ...): one compilation per feature-map size. The matrix form
            # is the same average with shapes that stay symbolic, so torch.compile(dynamic=True)
            # serves every size with one graph (docs/performance.md).
            pooled = _matmul_pool(x, self.bin_size)
        else:
            pooled = self.pool(x)
        # (shapes are symbolic under torch.fx tracing: the check is for eager calls)
        if self.training and isinstance(self.norm, nn.BatchNorm2d) and self.norm.training and not is_symbolic_tracing():
            if pooled.shape[0] * pooled.shape[2] * pooled.shape[3] == 1:
                raise ValueError(
                    f"the {self.bin_size}x{self.bin_size} pyramid pooling branch has one value per channel "
                    "with batch size 1, so BatchNorm cannot compute batch statistics in training mode. "
                    "Use a batch size of at least 2, call model.eval() (or freeze the norm layers, "
                    "norm='frozenbatch') for inference or fine-tuning with frozen statistics, "
                    "or build the model with norm='group'."
                )
        return self.act(self.norm(self.conv(pooled)))

    def set_exportable(self, enable: bool = True) -> None:
        """Pool with :class:`MatmulAdaptiveAvgPool2d` (``True``) or ``nn.AdaptiveAvgPool2d`` (``False``).

        Both give the same numbers; the matrix form exports with dynamic input sizes. No
        parameters change, so state dicts are unaffected.
        """
        self.pool = MatmulAdaptiveAvgPool2d(self.bin_size) if enable else nn.AdaptiveAvgPool2d(self.bin_size)


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

    def set_exportable(self, enable: bool = True) -> None:
        """Switch every branch to export-friendly pooling (see :meth:`PoolingBranch.set_exportable`)."""
        for branch in self.branches:
            cast(PoolingBranch, branch).set_exportable(enable)  # nn.ModuleList is not generic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        # Keep a channels-last input's layout: torch.cat returns NCHW as soon as one input is, and
        # the 1x1 bin upsamples to NCHW (a 1x1 map has no distinct channels-last layout), which
        # made the bottleneck convolution re-layout the whole concatenation, forward and backward.
        channels_last = (
            not is_symbolic_tracing() and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        )
        outs = [x]
        for branch in self.branches:
            up = F.interpolate(branch(x), size=size, mode="bilinear", align_corners=self.align_corners)
            outs.append(up.contiguous(memory_format=torch.channels_last) if channels_last else up)
        return torch.cat(outs, dim=1)
