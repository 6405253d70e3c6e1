"""Folding eval-mode BatchNorm into the preceding convolution."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["can_fold_norm", "fold_conv_norm"]


def can_fold_norm(norm: nn.Module | None) -> bool:
    """True when ``norm`` is an affine map at eval time (BatchNorm with running statistics) or absent."""
    if norm is None or isinstance(norm, nn.Identity):
        return True
    return (
        isinstance(norm, nn.modules.batchnorm._BatchNorm)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
    )


@torch.no_grad()
def fold_conv_norm(
    conv: nn.Conv2d, norm: nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module | None]:
    """The weight and bias of ``norm(conv(x))`` as one convolution, computed in float64.

    Returns ``(weight, bias, leftover)`` in float64 on the conv's device. When the norm cannot be
    folded (GroupNorm, BatchNorm without running statistics, a custom module) the conv's own
    weight/bias are returned and ``leftover`` is a deep copy of the norm, to be applied after the
    conv. The input modules are never modified.
    """
    weight = conv.weight.detach().to(torch.float64).clone()
    bias = conv.bias.detach().to(torch.float64).clone() if conv.bias is not None else None
    if norm is None or isinstance(norm, nn.Identity):
        return weight, bias, None
    if not (isinstance(norm, nn.modules.batchnorm._BatchNorm) and can_fold_norm(norm)):
        return weight, bias, copy.deepcopy(norm)
    running_mean, running_var = norm.running_mean, norm.running_var
    assert running_mean is not None and running_var is not None  # can_fold_norm checked both
    mean = running_mean.detach().to(torch.float64)
    var = running_var.detach().to(torch.float64)
    scale = torch.rsqrt(var + norm.eps)
    shift = -mean * scale
    if norm.affine:
        gamma = norm.weight.detach().to(torch.float64)
        scale = scale * gamma
        shift = shift * gamma + norm.bias.detach().to(torch.float64)
    weight = weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if bias is None else bias * scale + shift
    return weight, bias, None
