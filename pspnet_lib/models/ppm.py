"""The pyramid pooling module (Zhao et al., 2017, Sec. 3.2).

Usable on its own on any feature map::

    ppm = PyramidPoolingModule(2048)          # bins (1, 2, 3, 6), 512 channels per branch
    y = ppm(features)                         # (N, 2048 + 4 * 512, H, W)

Eager calls pool with ``nn.AdaptiveAvgPool2d``. While a graph is captured (``torch.compile``,
``torch.export``, both ONNX exporters, ``torch.jit.trace``) the same bins are computed with two
averaging matrix products whose shapes follow the input (:func:`pyramid_adaptive_avg_pool2d`),
which every exporter expresses with symbolic sizes, so one graph serves every input size
(docs/export.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._utils import NormLayer, is_capturing_graph, is_symbolic_tracing

__all__ = [
    "PyramidPoolingModule",
    "PoolingBranch",
    "pyramid_adaptive_avg_pool2d",
    "MatmulAdaptiveAvgPool2d",
    "adaptive_pool_matrix",
]


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    if not isinstance(sizes, Sequence) or len(sizes) != 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"output_size must be a positive int or a pair of them, got {output_size!r}")
    return int(sizes[0]), int(sizes[1])


def _bin_indicators(size, bins: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum(bins), size)`` bool matrix of the bins of ``nn.AdaptiveAvgPool2d`` over a length-``size``
    axis, for each count in ``bins`` in turn, and the int64 length of every bin.

    Bin ``i`` of ``b`` covers ``floor(i * size / b) <= j < ceil((i + 1) * size / b)`` (overlapping when
    ``size`` is not a multiple of ``b``, repeated positions when ``size < b``). ``size`` may be
    symbolic (``torch.export``/``torch.compile``) or a traced size (``torch.jit.trace``): this is
    tensor arithmetic on it, so the graph rebuilds the matrix for every input.
    """
    i = torch.tensor([i for b in bins for i in range(b)], device=device)
    b = torch.tensor([b for b in bins for _ in range(b)], device=device)
    start = torch.div(i * size, b, rounding_mode="floor")
    end = torch.div((i + 1) * size + b - 1, b, rounding_mode="floor")
    j = torch.arange(size, device=device)
    inside = (j.unsqueeze(0) >= start.unsqueeze(1)) & (j.unsqueeze(0) < end.unsqueeze(1))
    return inside, end - start


def adaptive_pool_matrix(size: int, bins: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``(bins, size)`` matrix that averages a length-``size`` axis into ``bins`` bins.

    Row ``i`` averages positions ``floor(i * size / bins) <= j < ceil((i + 1) * size / bins)``,
    the bins of :class:`torch.nn.AdaptiveAvgPool2d` (overlapping when ``size`` is not a
    multiple of ``bins``; repeated positions when ``size < bins``). ``size`` may be a symbolic
    size during tracing/export: everything here is tensor arithmetic on it, so exported graphs
    rebuild the matrix for each input.
    """
    inside, count = _bin_indicators(size, [bins], device)
    return inside.to(dtype) / count.to(dtype).unsqueeze(1)


def pyramid_adaptive_avg_pool2d(x: torch.Tensor, output_sizes: Sequence[int | Sequence[int]]) -> list[torch.Tensor]:
    """``[F.adaptive_avg_pool2d(x, s) for s in output_sizes]`` as two matrix products, for any input size.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating-point tensor, any ``H, W >= 1``.
        output_sizes: each ``bins`` or ``(bins_h, bins_w)``; ``ValueError`` otherwise.

    Returns one ``(..., bins_h, bins_w)`` tensor per size, in ``x.dtype``. The 0/1 matrices ``R``
    (``sum(bins_h) x H``) and ``C`` (``sum(bins_w) x W``) of every size's bins are stacked, so
    ``R @ x @ C.T`` sums every bin of every size at once (the sizes' blocks lie on its diagonal);
    dividing by the bin areas gives the means. The matrices are built from the input's shape with
    ``arange``, comparisons and an integer division, and the products contract the height of the
    ``(N * C, H, W)`` map first (one pass over it; a BLAS product, faster than one adaptive pool
    per size), so ``torch.export`` keeps every size symbolic without guards of its own, ONNX
    expresses it (``MatMul``) and ``torch.jit.trace`` records it as a function of the input size.
    Equal to ``nn.AdaptiveAvgPool2d`` up to float rounding (tested for every size 1-20 and more;
    16-bit inputs: the sums are rounded once to the input's dtype, the means computed in float32).
    """
    sizes = [_pair(s) for s in output_sizes]
    rows, row_count = _bin_indicators(x.shape[-2], [h for h, _ in sizes], x.device)
    cols, col_count = _bin_indicators(x.shape[-1], [w for _, w in sizes], x.device)
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    # (N * C, H, W) -> (N * C, sum_h, W): merging the leading dims keeps the symbolic height and
    # width out of every reshape (PyTorch's broadcasting matmul of the 4-D map guarded on them).
    flat = x.flatten(0, -3) if x.dim() > 3 else x
    summed_rows = torch.matmul(rows.to(x.dtype), flat).to(acc)
    sums = torch.matmul(summed_rows, cols.to(acc).transpose(0, 1))  # (N * C, sum_h, sum_w)
    grid = (sums / (row_count.unsqueeze(1) * col_count.unsqueeze(0)).to(acc)).to(x.dtype)
    if x.dim() > 3:
        grid = grid.unflatten(0, x.shape[:-2])
    pooled, top, left = [], 0, 0
    for h, w in sizes:
        pooled.append(grid[..., top : top + h, left : left + w])
        top, left = top + h, left + w
    return pooled


class MatmulAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` computed as :func:`pyramid_adaptive_avg_pool2d` (two matrix products), for any input size.

    A drop-in module for your own models (``PoolingBranch`` needs none: it switches by itself
    while a graph is captured). Equal to ``nn.AdaptiveAvgPool2d(output_size)`` up to float
    rounding for every input size; ONNX and ``torch.export`` express it with dynamic height and
    width (ONNX's own pooling has no adaptive form for dynamic sizes).

    Args:
        output_size: ``bins`` or ``(bins_h, bins_w)``; ``ValueError`` otherwise.
    """

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pyramid_adaptive_avg_pool2d(x, [self.output_size])[0]

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class PoolingBranch(nn.Module):
    """Adaptive average pool to ``bin x bin`` -> 1x1 conv (no bias) -> norm -> ReLU.

    ``pool`` is ``nn.AdaptiveAvgPool2d`` (eager calls use it; captured graphs use
    :func:`pyramid_adaptive_avg_pool2d`, the same bins with symbolic sizes: ``nn.AdaptiveAvgPool2d``
    itself makes ``torch.onnx.export`` fail or bake in the example's bins, and Inductor guard and
    recompile per feature-map size) or :class:`MatmulAdaptiveAvgPool2d` after
    :meth:`set_exportable`.
    """

    def __init__(self, in_channels: int, out_channels: int, bin_size: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.bin_size = bin_size
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(bin_size)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = nn.ReLU(inplace=True)

    def pools_with_matrices(self) -> bool:
        """Whether this call pools with :func:`pyramid_adaptive_avg_pool2d` (captured graphs, or after :meth:`set_exportable`)."""
        return isinstance(self.pool, MatmulAdaptiveAvgPool2d) or (
            isinstance(self.pool, nn.AdaptiveAvgPool2d) and is_capturing_graph()
        )

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` -> ``(N, out_channels, bin, bin)``; ``pooled``: ``x`` already pooled
        to ``bin x bin`` (:class:`PyramidPoolingModule` pools for all its branches in one pass)."""
        if pooled is None:
            pooled = pyramid_adaptive_avg_pool2d(x, [self.bin_size])[0] if self.pools_with_matrices() else self.pool(x)
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
        """Pool with :class:`MatmulAdaptiveAvgPool2d` also in eager calls (``True``) or not (``False``).

        Both give the same numbers up to float rounding, and every exporter captures the matrix
        form either way; ``True`` makes eager calls compute exactly what an exported graph computes.
        No parameters change, so state dicts are unaffected.
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
        branches = [cast(PoolingBranch, b) for b in self.branches]  # nn.ModuleList is not generic
        # Matrix pooling (captured graphs): one pair of products serves every branch.
        pooled: list[torch.Tensor | None] = [None] * len(branches)
        if all(b.pools_with_matrices() for b in branches):
            pooled = list(pyramid_adaptive_avg_pool2d(x, [b.bin_size for b in branches]))
        outs = [x]
        for branch, branch_pooled in zip(branches, pooled):
            up = F.interpolate(branch(x, branch_pooled), size=size, mode="bilinear", align_corners=self.align_corners)
            outs.append(up.contiguous(memory_format=torch.channels_last) if channels_last else up)
        return torch.cat(outs, dim=1)
