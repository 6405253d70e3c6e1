"""3x3 convolutions by Winograd's minimal filtering: F(2x2, 3x3) and F(4x4, 3x3).

Each ``m x m`` output tile is ``A^T [(G w G^T) . (B^T d B)] A`` for the ``(m + 2) x (m + 2)``
input tile ``d`` around it (Lavin & Gray, 2016). Per tile position the elementwise products over
channels become independent ``(tiles x C) @ (C x O)`` matrix products, which run at full GEMM
speed, instead of the 9 taps of a direct convolution:

* F(2x2, 3x3): 16 products per 4 outputs, 2.25x fewer multiply-adds. ``B`` and ``A`` hold 0 and
  +-1 and ``G`` 1/2, so the transforms are a few strided additions and exact in binary.
* F(4x4, 3x3): 36 products per 16 outputs, 4x fewer. The transforms are small dense matrices
  (applied as matrix products with ``B (x) B`` and ``A (x) A``). The interpolation points are
  0, 1, -1, 1/2, -2 (and infinity) rather than the usual 0, +-1, +-2: with bfloat16 tiles one
  512->512 layer measured 2.4e-2 max / 1.3e-2 mean relative error instead of 6.4e-2 / 1.7e-2
  (direct bf16: 3.6e-3 / 2.8e-3), which is why ``optimize_for_inference`` uses it only where a
  layer's error does not reach the logits undamped (see :mod:`pspnet_lib.runtime.head`).

In float32 both match a direct convolution to ~1e-6 relative (F(4x4) ~5e-6).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["winograd_weight", "winograd_conv3x3", "winograd_tile"]

# Filter (G), input (B^T) and output (A^T) transforms, as exact fractions.
_G2 = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_G4 = (
    (1.0, 0.0, 0.0),
    (1 / 3, 1 / 3, 1 / 3),
    (-1 / 3, 1 / 3, -1 / 3),
    (-16 / 15, -8 / 15, -4 / 15),
    (1 / 15, -2 / 15, 4 / 15),
    (0.0, 0.0, 1.0),
)
_BT4 = (
    (1.0, -1.5, -2.0, 1.5, 1.0, 0.0),
    (0.0, -1.0, 0.5, 2.5, 1.0, 0.0),
    (0.0, 1.0, -2.5, 0.5, 1.0, 0.0),
    (0.0, -2.0, -1.0, 2.0, 1.0, 0.0),
    (0.0, 0.5, -1.0, -0.5, 1.0, 0.0),
    (0.0, 1.0, -1.5, -2.0, 1.5, 1.0),
)
_AT4 = (
    (1.0, 1.0, 1.0, 1.0, 1.0, 0.0),
    (0.0, 1.0, -1.0, 0.5, -2.0, 0.0),
    (0.0, 1.0, 1.0, 0.25, 4.0, 0.0),
    (0.0, 1.0, -1.0, 0.125, -8.0, 1.0),
)
_G_BY_TILE = {2: _G2, 4: _G4}
# In both, the second interpolation point is 1: A^T's column 1 is all ones, so transformed element
# (1, 1) enters every output of its tile with coefficient 1 and a bias is added there once.
_CENTRE = {2: 1 * 4 + 1, 4: 1 * 6 + 1}


def winograd_tile(u: torch.Tensor) -> int:
    """The output tile size ``m`` of a transformed weight ``u`` (``(m + 2)^2`` rows)."""
    return {16: 2, 36: 4}[u.shape[0]]


def winograd_weight(weight: torch.Tensor, dtype: torch.dtype | None = None, tile: int = 2) -> torch.Tensor:
    """``(O, C, 3, 3) -> ((tile + 2)^2, C, O)``: ``G w G^T`` per channel pair, for F(tile x tile, 3x3).

    Computed as one matrix product with ``G (x) G`` in float32 (or the weight's wider dtype), in
    the layout the tile products read: each output sums at most 9 scaled weights, ~1e-7 relative
    from the exact transform (F(4x4)'s thirds and fifteenths included) before rounding to
    ``dtype``. (A float64 einsum took 0.4 s of ResNet-50-D8's first call; this a few tens of ms.)
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_weight needs a 3x3 kernel, got {tuple(weight.shape)}")
    if tile not in _G_BY_TILE:
        raise ValueError(f"tile must be 2 or 4 (F(2x2, 3x3) or F(4x4, 3x3)), got {tile}")
    work = torch.promote_types(weight.dtype, torch.float32)
    g = torch.tensor(_G_BY_TILE[tile], dtype=work, device=weight.device)
    o, c = weight.shape[:2]
    a = tile + 2
    # (a*a, 9) @ (9, C * O): row-major (p, q) tile elements from row-major (i, j) taps.
    taps = weight.detach().to(work).permute(2, 3, 1, 0).reshape(9, c * o)
    return (torch.kron(g, g) @ taps).view(a * a, c, o).to(dtype or weight.dtype)


@functools.cache
def _f4_transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    bt = torch.tensor(_BT4, dtype=torch.float64)
    at = torch.tensor(_AT4, dtype=torch.float64)
    # Entries are multiples of 1/8 up to 64 in magnitude: exact in bfloat16 and float16.
    return torch.kron(bt, bt).to(dtype=dtype, device=device), torch.kron(at, at).to(dtype=dtype, device=device)


def winograd_conv3x3(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``act(F.conv2d(x, w, bias, padding=1) + residual)`` with ``u = winograd_weight(w, tile=m)``.

    ``x`` is ``(N, C, H, W)`` of any size (padded to whole tiles); the result is channels-last.
    ``residual`` (same shape as the output) is added before the optional ReLU. The tile size
    follows from ``u``.
    """
    if winograd_tile(u) == 4:
        return _winograd_f4(x, u, bias, residual, relu)
    n, c, h, w = x.shape
    o = u.shape[2]
    t, s = (h + 1) // 2, (w + 1) // 2
    # NHWC view of x, zero-padded by the convolution's 1 pixel (plus one row/column for odd sizes).
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + 2 * s - w, 1, 1 + 2 * t - h))
    # Input transform B^T d B: first along rows (tiles start every 2nd row), then along columns.
    d = [xp[:, k : k + 2 * t : 2] for k in range(4)]
    rows = (d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])
    v = torch.empty((16, n * t * s, c), dtype=x.dtype, device=x.device)
    vv = v.view(4, 4, n, t, s, c)
    for a, r in enumerate(rows):
        e = [r[:, :, k : k + 2 * s : 2] for k in range(4)]
        torch.sub(e[0], e[2], out=vv[a, 0])
        torch.add(e[1], e[2], out=vv[a, 1])
        torch.sub(e[2], e[1], out=vv[a, 2])
        torch.sub(e[1], e[3], out=vv[a, 3])
    m = torch.bmm(v, u)  # (16, tiles, O): the 16 matrix products
    if bias is not None:
        m[_CENTRE[2]] += bias
    # Output transform A^T m A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
    mv = m.view(4, 4, n, t, s, o)
    q = (mv[0] + mv[1] + mv[2], mv[1] - mv[2] - mv[3])
    out = torch.empty((n, t, 2, s, 2, o), dtype=x.dtype, device=x.device)
    for a, qa in enumerate(q):
        torch.add(qa[0], qa[1], out=out[:, :, a, :, 0]).add_(qa[2])
        torch.sub(qa[1], qa[2], out=out[:, :, a, :, 1]).sub_(qa[3])
    return _epilogue(out.view(n, 2 * t, 2 * s, o), h, w, residual, relu)


def _winograd_f4(
    x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    n, c, h, w = x.shape
    o = u.shape[2]
    t, s = -(-h // 4), -(-w // 4)
    bb, aa = _f4_transforms(x.dtype, x.device)
    # NHWC, zero-padded by the convolution's 1 pixel and up to whole 4x4 output tiles.
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + 4 * s - w, 1, 1 + 4 * t - h)).contiguous()
    sn, sh, sw, sc = xp.stride()
    # (6, 6, N, t, s, C): the overlapping 6x6 input tiles, gathered once.
    tiles = xp.as_strided((6, 6, n, t, s, c), (sh, sw, sn, 4 * sh, 4 * sw, sc)).reshape(36, -1)
    v = torch.mm(bb, tiles).view(36, n * t * s, c)  # input transform: one product, fp32 accumulation
    m = torch.bmm(v, u)  # (36, tiles, O): the 36 matrix products
    if bias is not None:
        m[_CENTRE[4]] += bias
    y = torch.mm(aa, m.view(36, -1)).view(4, 4, n, t, s, o)  # output transform
    return _epilogue(y.permute(2, 3, 0, 4, 1, 5).reshape(n, 4 * t, 4 * s, o), h, w, residual, relu)


def _epilogue(y: torch.Tensor, h: int, w: int, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """Whole-tile NHWC output ``y`` -> ``act(y[:h, :w] + residual)`` as a channels-last NCHW view."""
    if y.shape[1] != h or y.shape[2] != w:
        y = y[:, :h, :w].contiguous()
    if residual is not None:
        y.add_(residual.permute(0, 2, 3, 1))
    if relu:
        y.relu_()
    return y.permute(0, 3, 1, 2)
