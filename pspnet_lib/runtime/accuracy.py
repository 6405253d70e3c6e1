"""How closely an optimised model reproduces the original: error and argmax agreement."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from ..core.agreement import agreement_stats

__all__ = ["compare_models"]


@torch.no_grad()
def compare_models(
    reference: nn.Module, candidate: nn.Module, inputs: Iterable[torch.Tensor] | torch.Tensor
) -> dict[str, float]:
    """Run both models on each input batch and aggregate :func:`agreement_stats` over all of them.

    Use it to check an optimised model against its source on real images, e.g.
    ``compare_models(model.eval(), optimize_for_inference(model, torch.bfloat16), batches)``;
    the aggregate ``argmax_agreement`` is pixel-weighted and ``max_rel_err`` is the worst batch's.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    total = {"max_rel_err": 0.0, "mean_abs_err": 0.0, "argmax_agreement": 0.0, "pixels": 0}
    for x in inputs:
        stats = agreement_stats(reference(x), candidate(x))
        n = stats["pixels"]
        total["max_rel_err"] = max(total["max_rel_err"], stats["max_rel_err"])
        for key in ("mean_abs_err", "argmax_agreement"):
            total[key] = (total[key] * total["pixels"] + stats[key] * n) / (total["pixels"] + n)
        total["pixels"] += n
    if total["pixels"] == 0:
        raise ValueError("compare_models got no input batches")
    return total
