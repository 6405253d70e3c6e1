"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3): 2.25x fewer multiplications.

Each 2x2 output tile is ``A^T [(G w G^T) . (B^T d B)] A`` for the 4x4 input tile ``d`` around it
(Lavin & Gray, 2016). Per tile position the 16 elementwise products over channels become 16
independent ``(tiles x C) @ (C x O)`` matrix products, which run at full GEMM speed, instead of
the 9 taps of a direct convolution: 16 / (4 * 9 / 4) = 1 / 2.25 of the multiply-adds. The input and
output transforms are additions only (``B`` and ``A`` hold 0 and +-1; ``G`` holds 1/2, exact in
binary), computed here with a few strided elementwise passes.

Numerically it is not bit-identical to a direct convolution, but in float32 the difference is
~1e-6 relative, and in bfloat16 the extra rounding of the transformed tiles measured no worse
end to end than direct bf16 convolutions (benchmarks/inference.py compares both with float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["winograd_weight", "winograd_conv3x3"]

# G (4x3) of F(2x2, 3x3): the filter transform.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# Index of the transformed tile element that enters every output of a tile with coefficient +1
# (A[1] = (1, 1)), where a bias can be added once instead of to four outputs.
_CENTRE = 1 * 4 + 1


def winograd_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(O, C, 3, 3) -> (16, C, O)``: ``G w G^T`` per channel pair.

    Computed as one matrix product with ``G (x) G`` (entries 0, +-1/4, +-1/2, 1: exact in binary),
    in float32 or wider: each of the 16 outputs is a sum of at most 9 exactly scaled weights, so
    the result is within ~1e-7 relative of the exact transform before rounding to ``dtype``. (A
    float64 einsum took 0.4 s of ResNet-50-D8's first call; this takes a few tens of ms.)
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_weight needs a 3x3 kernel, got {tuple(weight.shape)}")
    work = torch.promote_types(weight.dtype, torch.float32)
    g = torch.tensor(_G, dtype=work, device=weight.device)
    o, c = weight.shape[:2]
    # (16, 9) @ (9, C * O): row-major (a, b) tile elements from row-major (i, j) taps, produced
    # directly in the (16, C, O) layout the matrix products read.
    taps = weight.detach().to(work).permute(2, 3, 1, 0).reshape(9, c * o)
    return (torch.kron(g, g) @ taps).view(16, c, o).to(dtype or weight.dtype)


def winograd_conv3x3(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``act(F.conv2d(x, w, bias, padding=1) + residual)`` with ``u = winograd_weight(w)``.

    ``x`` is ``(N, C, H, W)`` of any size (odd sizes are padded to whole tiles); the result is
    channels-last. ``residual`` (same shape as the output) is added before the optional ReLU.
    """
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
        m[_CENTRE] += bias
    # Output transform A^T m A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
    mv = m.view(4, 4, n, t, s, o)
    q = (mv[0] + mv[1] + mv[2], mv[1] - mv[2] - mv[3])
    out = torch.empty((n, t, 2, s, 2, o), dtype=x.dtype, device=x.device)
    for a, qa in enumerate(q):
        torch.add(qa[0], qa[1], out=out[:, :, a, :, 0]).add_(qa[2])
        torch.sub(qa[1], qa[2], out=out[:, :, a, :, 1]).sub_(qa[3])
    y = out.view(n, 2 * t, 2 * s, o)
    if 2 * t != h or 2 * s != w:
        y = y[:, :h, :w].contiguous()
    if residual is not None:
        y.add_(residual.permute(0, 2, 3, 1))
    if relu:
        y.relu_()
    return y.permute(0, 3, 1, 2)
