"""Test tooling: reproducible inputs and non-trivial BatchNorm statistics for accuracy checks.

Private (not part of the public API): used by the test suite and by ``benchmarks/``, where a
freshly built model and white noise would make an accuracy comparison prove nothing.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["randomize_batchnorm_", "smooth_image"]


@torch.no_grad()
def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, in place.

    A freshly built model's BatchNorms are identities in eval mode (mean 0, variance 1, weight 1,
    bias 0), so an accuracy check of BatchNorm folding on it would prove nothing. The values follow
    the reference recipe of tests/data/reference: mean ~ N(0, 0.1), variance ~ U(0.5, 1.5),
    weight ~ N(1, 0.1), bias ~ N(0, 0.1). Returns ``model``.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None:
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            if m.affine:
                m.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


def smooth_image(
    batch: int, height: int, width: int, *, channels: int = 3, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A reproducible image-like input: smooth regions with edges, roughly ImageNet-normalised.

    Random weights make logits of white noise nearly tied, which exaggerates argmax flips; real
    images are piecewise smooth. This sums bicubically upsampled random fields at a few scales
    (coarse blobs plus finer texture) and adds a few hard-edged rectangles, then standardises
    each channel, so it is a fair stand-in for a normalised photograph in accuracy checks.
    """
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(batch, channels, height, width)
    for cells, weight in ((4, 1.0), (16, 0.5), (64, 0.15)):
        coarse = torch.randn(batch, channels, cells, cells, generator=g)
        img += weight * F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    for _ in range(6):  # hard edges: objects
        y0, x0 = (torch.rand(2, generator=g) * torch.tensor([height, width])).long().tolist()
        h = max(1, int(height * (0.1 + 0.3 * torch.rand(1, generator=g).item())))
        w = max(1, int(width * (0.1 + 0.3 * torch.rand(1, generator=g).item())))
        img[:, :, y0 : y0 + h, x0 : x0 + w] = torch.randn(batch, channels, 1, 1, generator=g)
    mean = img.mean(dim=(2, 3), keepdim=True)
    std = img.std(dim=(2, 3), keepdim=True).clamp_min(1e-6) if height * width > 1 else torch.ones_like(mean)
    return ((img - mean) / std).to(device)
