"""How closely two models' logits agree: error and argmax agreement.

On the bottom floor because both the int8 export (:mod:`pspnet_lib.inference.quantize`) and the
fast runtime (:mod:`pspnet_lib.runtime`, which re-exports it) measure their accuracy with it.
"""

from __future__ import annotations

import torch

__all__ = ["agreement_stats"]


def agreement_stats(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Compare two logit tensors ``(N, K, H, W)``.

    Returns a dict with ``max_rel_err`` (max absolute difference over the max absolute reference
    logit), ``mean_abs_err``, ``argmax_agreement`` (fraction of pixels whose predicted class
    agrees) and ``pixels``.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    ref, cand = reference.detach().float(), candidate.detach().float()
    diff = (ref - cand).abs()
    scale = ref.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    agree = (ref.argmax(1) == cand.argmax(1)).float()
    return {
        "max_rel_err": float(diff.max() / scale),
        "mean_abs_err": float(diff.mean()),
        "argmax_agreement": float(agree.mean()),
        "pixels": int(agree.numel()),
    }
