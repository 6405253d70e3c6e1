"""The PSP head without the concatenation and without full-resolution pyramid branches.

The bottleneck is a 3x3 convolution over ``cat([x, up(b_1), ..., up(b_K)])``. Convolution is
linear in its input channels, so it equals ``conv(x, W_x) + sum_k conv(up(b_k), W_k)``. Each
``up(b_k)`` is a bilinear upsampling of a tiny ``s x s`` map, i.e. ``A_k @ b_k @ B_k^T`` with
fixed interpolation matrices ``A_k`` (h x s) and ``B_k`` (w x s). A 3x3 convolution with zero
padding of such a map reads it at row offsets -1, 0, +1 (zero outside the map), which only
shifts the rows of ``A_k``/``B_k`` (a shifted-out row becomes zero). Hence

    conv(up(b_k), W_k)[o, i, j] = sum_{di, dj, p, q} A_k[i + di - 1, p] B_k[j + dj - 1, q] Z_k[o, di, dj, p, q],
    Z_k[o, di, dj, p, q]        = sum_c W_k[o, c, di, dj] b_k[c, p, q],

which costs a few small matrix products instead of a ``4 * 512``-channel 3x3 convolution at full
resolution. The interpolation matrices come from ``F.interpolate`` itself (applied to an identity),
so any ``align_corners`` and any size (including maps smaller than a bin) match it exactly.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.heads import PSPHead
from ..models.ppm import PoolingBranch
from .conv import FusedConv
from .fold import fold_conv_norm
from .tuning import TuningCache

__all__ = ["FastPSPHead", "interpolation_matrix"]


def interpolation_matrix(in_size: int, out_size: int, align_corners: bool, device=None) -> torch.Tensor:
    """The ``(out_size, in_size)`` matrix of 1-D bilinear resizing exactly as ``F.interpolate`` does it."""
    eye = torch.eye(in_size, dtype=torch.float64, device=device).reshape(1, in_size, in_size, 1)
    resized = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=align_corners)
    return resized[0, :, :, 0].T.contiguous()


class FastPSPHead(nn.Module):
    """PSP head (pyramid pooling, 3x3 bottleneck, classifier) for inference, logits at input size.

    Pooling and the bottleneck's main convolution run in the compute dtype; the pyramid branches,
    the pyramid terms of the bottleneck, its bias/ReLU and the classifier run in float32 (they are
    tiny), which keeps reduced-precision logits close to float32 ones.

    Args:
        head: the source :class:`~pspnet_lib.models.heads.PSPHead` (not modified).
        align_corners: ``align_corners`` of the final logit upsampling (the model's).
    """

    # Buffers (register_buffer), declared for type checkers.
    bottleneck_bias: torch.Tensor
    classifier_weight: torch.Tensor
    classifier_bias: torch.Tensor

    def __init__(
        self,
        head: PSPHead,
        align_corners: bool,
        *,
        dtype: torch.dtype,
        backend: str,
        channels_last: bool = True,
        winograd: bool | int | str = False,
        tuning: TuningCache | None = None,
    ) -> None:
        super().__init__()
        ppm = head.ppm
        self.bins = tuple(ppm.bins)
        self.ppm_align_corners = bool(ppm.align_corners)
        self.align_corners = bool(align_corners)
        in_ch = ppm.in_channels
        bottleneck = head.bottleneck
        weight, bias, leftover = fold_conv_norm(bottleneck.conv, bottleneck.norm)
        if (
            bottleneck.conv.kernel_size != (3, 3)
            or bottleneck.conv.padding != (1, 1)
            or bottleneck.conv.stride != (1, 1)
            or bottleneck.conv.dilation != (1, 1)
        ):
            raise ValueError(f"expected a 3x3, padding 1 bottleneck convolution, got {bottleneck.conv}")
        out_ch = weight.shape[0]
        # The main part acting on x, as a plain convolution in the compute dtype (no bias/ReLU:
        # those come after the pyramid terms are added).
        main = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False, device=weight.device, dtype=torch.float64)
        with torch.no_grad():
            main.weight.copy_(weight[:, :in_ch])
        self.main = FusedConv(
            main,
            None,
            relu=False,
            dtype=dtype,
            backend=backend,
            channels_last=channels_last,
            winograd=winograd,
            tuning=tuning,
        )
        # Per-branch: folded 1x1 conv (float32) and the bottleneck slice as (C_b, 3, 3, O).
        branch_w: list[torch.Tensor] = []
        branch_b: list[torch.Tensor] = []
        slices: list[torch.Tensor] = []
        self.branch_norms = nn.ModuleList()
        offset = in_ch
        for module in ppm.branches:
            branch = cast(PoolingBranch, module)  # nn.ModuleList is not generic
            w, b, left = fold_conv_norm(branch.conv, branch.norm)
            branch_w.append(w.reshape(w.shape[0], -1).float())
            branch_b.append(
                b.float() if b is not None else torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
            )
            self.branch_norms.append(left.float() if left is not None else nn.Identity())
            cb = w.shape[0]
            # (C_b, 3 * 3 * O), columns ordered (di, dj, o): one matmul per branch gives Z_k.
            slices.append(weight[:, offset : offset + cb].permute(1, 2, 3, 0).reshape(cb, -1).float().contiguous())
            offset += cb
        if offset != weight.shape[1]:
            raise ValueError(f"bottleneck input channels {weight.shape[1]} != pyramid output channels {offset}")
        for i, (w, b, s) in enumerate(zip(branch_w, branch_b, slices)):
            self.register_buffer(f"branch_weight{i}", w, persistent=False)
            self.register_buffer(f"branch_bias{i}", b, persistent=False)
            self.register_buffer(f"pyramid_weight{i}", s, persistent=False)
        self.register_buffer(
            "bottleneck_bias",
            bias.float() if bias is not None else torch.zeros(out_ch, device=weight.device),
            persistent=False,
        )
        self.bottleneck_norm = leftover.float() if leftover is not None else None
        cls = head.classifier
        if not isinstance(cls, nn.Conv2d):
            raise ValueError(
                f"optimize_for_inference needs a model with a classifier (num_classes >= 1), got {type(cls).__name__}"
            )
        self.register_buffer(
            "classifier_weight", cls.weight.detach().reshape(cls.out_channels, -1).float().clone(), persistent=False
        )
        self.register_buffer(
            "classifier_bias",
            cls.bias.detach().float().clone()
            if cls.bias is not None
            else torch.zeros(cls.out_channels, device=weight.device),
            persistent=False,
        )
        self._matrices: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.compiler.disable  # a per-size cache: mutating it inside a compiled graph forces recompiles
    def _shifted_matrices(self, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, R)`` and ``(w, R)``: every bin's interpolation matrix at row offsets -1, 0, +1."""
        key = (h, w)
        if key not in self._matrices:
            mats = []
            for size in (h, w):
                blocks = []
                for s in self.bins:
                    m = interpolation_matrix(s, size, self.ppm_align_corners, device)
                    padded = F.pad(m, (0, 0, 1, 1))  # zero rows = the conv's zero padding
                    blocks += [padded[di : di + size] for di in range(3)]
                mats.append(torch.cat(blocks, dim=1).float())
            self._matrices[key] = (mats[0], mats[1])
        return self._matrices[key]

    def pyramid_term(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_k conv(up(branch_k(x)), W_k)`` plus the bottleneck bias, ``(N, h, w, O)`` float32."""
        n, _, h, w = x.shape
        rows, cols = self._shifted_matrices(h, w, x.device)
        r = rows.shape[1]
        out_ch = self.bottleneck_bias.shape[0]
        z = x.new_zeros((n, r, r, out_ch), dtype=torch.float32)
        offset = 0
        for i, s in enumerate(self.bins):
            pooled = F.adaptive_avg_pool2d(x, s).float()  # (N, C, s, s)
            b = torch.einsum("oc,ncpq->nopq", getattr(self, f"branch_weight{i}"), pooled)
            b = b + getattr(self, f"branch_bias{i}").reshape(1, -1, 1, 1)
            b = self.branch_norms[i](b).relu_()
            zk = torch.matmul(b.permute(0, 2, 3, 1).reshape(n * s * s, -1), getattr(self, f"pyramid_weight{i}"))
            zk = zk.reshape(n, s, s, 3, 3, out_ch).permute(0, 3, 1, 4, 2, 5)  # (N, di, p, dj, q, O)
            z[:, offset : offset + 3 * s, offset : offset + 3 * s].view(n, 3, s, 3, s, out_ch).copy_(zk)
            offset += 3 * s
        t = torch.matmul(rows, z.reshape(n, r, r * out_ch)).reshape(n, h, r, out_ch)
        out = torch.matmul(cols, t)  # (N, h, w, O)
        return out.add_(self.bottleneck_bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits ``(N, num_classes, *size)`` float32 from the last backbone stage ``x``."""
        feat = self.pyramid_term(x)
        feat.add_(self.main(x).permute(0, 2, 3, 1))
        if self.bottleneck_norm is not None:
            feat = self.bottleneck_norm(feat.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        feat.relu_()
        n, h, w, c = feat.shape
        logits = torch.addmm(self.classifier_bias, feat.reshape(-1, c), self.classifier_weight.T)
        # Few classes: making the low-resolution logits NCHW is cheap and gives a contiguous output.
        logits = logits.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
