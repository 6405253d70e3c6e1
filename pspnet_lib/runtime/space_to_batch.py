"""Dilated convolutions as ordinary convolutions on interleaved sub-grids ("space-to-batch").

A convolution with dilation ``d`` only ever combines pixels whose coordinates agree modulo ``d``.
Splitting an ``H x W`` map into the ``d x d`` sub-grids ``x[..., a::d, b::d]`` and stacking them
along the batch dimension turns it into an undilated convolution (dilation ``d / f`` when split
``f``-ways with ``f`` dividing ``d``). Zero padding stays exact: a neighbour outside the map is
either outside the sub-grid (the convolution's own zero padding) or one of the cells added to
round ``H``/``W`` up to a multiple of ``f``, which must hold zeros when a convolution reads them
(:func:`zero_subgrid_padding`).

Layout of a split tensor: batch index ``n * f * f + a * f + b`` holds ``x[n, :, a::f, b::f]``,
padded at the bottom/right to ``ceil(H / f) x ceil(W / f)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["to_subgrids", "from_subgrids", "zero_subgrid_padding", "space_to_batch_conv2d"]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def to_subgrids(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N * f * f, C, ceil(H / f), ceil(W / f))``, padding cells zero.

    The result keeps ``x``'s memory format (channels-last stays channels-last).
    """
    if factor == 1:
        return x
    n, c, h, w = x.shape
    f = factor
    hs, ws = -(-h // f), -(-w // f)
    if hs * f != h or ws * f != w:
        x = F.pad(x, (0, ws * f - w, 0, hs * f - h))
    fmt = _memory_format(x)
    out = torch.empty((n * f * f, c, hs, ws), dtype=x.dtype, device=x.device, memory_format=fmt)
    # (N, C, hs, f, ws, f) -> (N, f, f, C, hs, ws); one strided copy.
    out.view(n, f, f, c, hs, ws).copy_(x.view(n, c, hs, f, ws, f).permute(0, 3, 5, 1, 2, 4))
    return out


def from_subgrids(xs: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_subgrids`: ``(N * f * f, C, hs, ws) -> (N, C, height, width)``."""
    if factor == 1:
        return xs
    f = factor
    nff, c, hs, ws = xs.shape
    if nff % (f * f):
        raise ValueError(f"batch {nff} of a sub-grid tensor is not a multiple of factor**2 = {f * f}")
    n = nff // (f * f)
    fmt = _memory_format(xs)
    out = torch.empty((n, c, hs * f, ws * f), dtype=xs.dtype, device=xs.device, memory_format=fmt)
    out.view(n, c, hs, f, ws, f).copy_(xs.view(n, f, f, c, hs, ws).permute(0, 3, 4, 1, 5, 2))
    if hs * f != height or ws * f != width:
        out = out[:, :, :height, :width].contiguous(memory_format=fmt)
    return out


def zero_subgrid_padding(xs: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """Zero, in place, the cells of a split tensor that lie outside the original ``height x width`` map.

    Needed before a spatial convolution reads a split tensor that an earlier layer (with a bias)
    has written. Only the last row/column of some sub-grids are padding, so this is cheap.
    """
    if factor == 1:
        return xs
    f = factor
    nff, c, hs, ws = xs.shape
    view = xs.view(nff // (f * f), f, f, c, hs, ws)
    # Sub-grid row a has a real last row iff a + f * (hs - 1) < height.
    first_padded_row = height - f * (hs - 1)
    if first_padded_row < f:
        view[:, first_padded_row:, :, :, hs - 1, :] = 0
    first_padded_col = width - f * (ws - 1)
    if first_padded_col < f:
        view[:, :, first_padded_col:, :, :, ws - 1] = 0
    return xs


def space_to_batch_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 2,
    factor: int | None = None,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=dilation * (k // 2), dilation=dilation)`` via sub-grids.

    Args:
        x: input ``(N, C, H, W)``; any ``H, W`` (not necessarily multiples of ``factor``).
        weight: ``(O, C, k, k)`` with odd ``k`` ("same" convolution, stride 1).
        bias: optional ``(O,)``.
        dilation: the dilation of the convolution being replaced.
        factor: how many ways to split each axis; must divide ``dilation`` (default: ``dilation``,
            giving an undilated convolution).
    """
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"space_to_batch_conv2d needs a square odd kernel, got {tuple(weight.shape[-2:])}")
    factor = dilation if factor is None else factor
    if factor < 1 or dilation % factor:
        raise ValueError(f"factor {factor} must divide the dilation {dilation}")
    h, w = x.shape[-2:]
    inner = dilation // factor
    y = F.conv2d(to_subgrids(x, factor), weight, bias, padding=inner * (k // 2), dilation=inner)
    return from_subgrids(y, factor, h, w)
