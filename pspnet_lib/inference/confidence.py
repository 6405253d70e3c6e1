"""Per-pixel confidence of a segmentation, its 8-bit picture and the per-image uncertainty.

Three kinds, computed from the class probabilities ``p`` (the softmax of the logits, or, with
test-time augmentation (``flip``/``scales``), the mean of the runs' softmax probabilities, as
:func:`pspnet_lib.inference.modes.infer` returns them):

========== ====================================== ============== =================================
kind       ``Prediction.confidence`` (float32)    range          8-bit picture (``to_uint8``)
========== ====================================== ============== =================================
maxprob    ``p.max(0)``: the top class's prob.    [1/K, 1]       ``round(255 * maxprob)``
margin     top-1 minus top-2 probability          [0, 1]         ``round(255 * margin)``
entropy    ``-sum_k p_k ln p_k`` (nats)           [0, ln K]      ``round(255 * entropy / ln K)``
========== ====================================== ============== =================================

maxprob and margin are confidences (255 = certain); entropy is an uncertainty (0 = certain,
255 = every class equally likely). Margin and entropy are the usual uncertainty-sampling scores
of active learning (Settles, "Active Learning Literature Survey", 2009, section 3.1).

The *scaled* value ``v`` is the picture's value over 255 before rounding (maxprob, margin, or
entropy / ln K), in [0, 1]. A picture's **uncertainty** is ``1 - mean(v)`` for maxprob and margin
and ``mean(v)`` for entropy, so that higher always means "more worth labelling", whatever the kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["CONFIDENCE_KINDS", "check_kind", "confidence_map", "scaled", "to_uint8", "uncertainty"]

#: The kinds of confidence map (``predict(..., confidence=KIND)``, ``pspnet predict --confidence KIND``).
CONFIDENCE_KINDS = ("maxprob", "margin", "entropy")


def check_kind(kind: str | None) -> str | None:
    """``kind`` if it is None or one of :data:`CONFIDENCE_KINDS`; else a one-line ``ValueError``."""
    if kind is not None and kind not in CONFIDENCE_KINDS:
        raise ValueError(f"unknown confidence kind {kind!r}; expected one of {', '.join(CONFIDENCE_KINDS)}")
    return kind


def confidence_map(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """The confidence map of class probabilities ``probs`` ``(N, K, H, W)`` (or ``(K, H, W)``).

    Returns float32 ``(N, H, W)`` (or ``(H, W)``) in the units of the module's table: maxprob and
    margin in [0, 1], entropy in nats. A one-class model is certain: margin 1, entropy 0.
    """
    check_kind(kind)
    probs = probs.float()
    dim = probs.ndim - 3
    if kind == "maxprob":
        return probs.amax(dim=dim)
    if kind == "margin":
        if probs.shape[dim] < 2:
            return torch.ones_like(probs.select(dim, 0))
        top = probs.topk(2, dim=dim).values
        return top.select(dim, 0) - top.select(dim, 1)
    return torch.special.entr(probs).sum(dim=dim)  # entr(p) = -p ln p, 0 at p = 0


def scaled(confidence: torch.Tensor, kind: str, num_classes: int) -> torch.Tensor:
    """``confidence`` on the [0, 1] scale of the 8-bit picture: maxprob and margin as they are, entropy / ln K."""
    check_kind(kind)
    if kind != "entropy":
        return confidence
    if num_classes < 2:  # ln 1 = 0: a one-class model has no uncertainty
        return torch.zeros_like(confidence)
    return confidence / math.log(num_classes)


def to_uint8(confidence: torch.Tensor, kind: str, num_classes: int) -> np.ndarray:
    """The 8-bit picture of a confidence map ``(H, W)``: ``round(255 * scaled)`` as a ``uint8`` array."""
    value = scaled(confidence, kind, num_classes).clamp(0.0, 1.0).mul(255.0).round()
    return value.to(torch.uint8).numpy()


def uncertainty(scaled_mean: float, kind: str) -> float:
    """A picture's uncertainty in [0, 1] from the mean of its scaled map: ``1 - mean`` (maxprob, margin) or ``mean`` (entropy)."""
    check_kind(kind)
    return float(scaled_mean) if kind == "entropy" else 1.0 - float(scaled_mean)
