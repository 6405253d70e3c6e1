"""How big a feature model's maps are, measured with shape-only forward passes (no memory, no arithmetic).

The parameters and buffers are swapped for meta tensors for the call (``torch.func.functional_call``),
so a model of any size is "run" on a meta input in milliseconds; a model that cannot run on the
meta device is run for real on a small input in eval mode (no state changes either way).
"""

from __future__ import annotations

from itertools import chain

import torch
import torch.nn as nn
from torch.func import functional_call

__all__ = ["PROBE_SIZE", "meta_forward", "deepest_side", "measure_strides", "returns_nhwc"]

#: Side of the (meta-device) probe input whose feature sizes give each stage's stride: a multiple
#: of 32, and not the 224 most models were trained at, so that an encoder that only runs at its
#: training size is caught here (PSPNet takes any input size).
PROBE_SIZE = 256


def returns_nhwc(model: nn.Module) -> bool:
    """Whether the feature model returns channels-last maps (timm's ``output_fmt``: Swin, ...)."""
    fmt = getattr(model, "output_fmt", "NCHW")
    return str(getattr(fmt, "value", fmt)) == "NHWC"


def meta_forward(model: nn.Module, in_channels: int, side: int) -> list[torch.Tensor]:
    """``model`` on a ``(1, in_channels, side, side)`` meta tensor, parameters swapped for meta ones (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            meta = {
                key: torch.empty_like(value, device="meta")
                for key, value in chain(model.named_parameters(), model.named_buffers())
            }
            probe = torch.empty(1, in_channels, side, side, device="meta")
            return list(functional_call(model, meta, (probe,), strict=False, tie_weights=True))
    finally:
        model.train(was_training)


def deepest_side(model: nn.Module, in_channels: int, side: int) -> int:
    """Height of the deepest feature map for a ``side`` x ``side`` input (meta device)."""
    last = meta_forward(model, in_channels, side)[-1]
    return int(last.shape[1] if returns_nhwc(model) else last.shape[2])


def _forward_any(model: nn.Module, in_channels: int, side: int) -> list[torch.Tensor]:
    """:func:`meta_forward`, or (for a model that cannot run on the meta device) a real eval-mode pass."""
    try:
        return meta_forward(model, in_channels, side)
    except Exception:
        device = next(chain(model.parameters(), model.buffers())).device
        if device.type == "meta":
            raise
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return list(model(torch.zeros(1, in_channels, side, side, device=device)))
        finally:
            model.train(was_training)


def measure_strides(model: nn.Module, in_channels: int) -> list[tuple[int, int]]:
    """``(channels, reduction)`` of every returned stage, from shape-only forward passes.

    The stride is how much a stage's map grows when the input grows: inputs of ``PROBE_SIZE`` and
    ``2 * PROBE_SIZE`` give maps of ``h1`` and ``h2`` rows, and the stride is
    ``PROBE_SIZE / (h2 - h1)``, also for families whose unpadded convolutions lose a border
    (Inception: 6 and 14 rows, stride 32), where ``PROBE_SIZE / h1`` would not be. The parameters
    are swapped for meta tensors (nothing computed or allocated); a model that cannot run on the
    meta device is measured with real eval-mode passes (no state changes either way).
    """
    nhwc = returns_nhwc(model)
    small, large = (_forward_any(model, in_channels, side) for side in (PROBE_SIZE, 2 * PROBE_SIZE))
    shapes = []
    for a, b in zip(small, large):
        channels, h1, h2 = (a.shape[3], a.shape[1], b.shape[1]) if nhwc else (a.shape[1], a.shape[2], b.shape[2])
        if int(h2) <= int(h1):
            raise ValueError(
                f"its feature maps do not grow with the input ({int(h1)} rows at {PROBE_SIZE}, {int(h2)} at twice that)"
            )
        shapes.append((int(channels), max(1, round(PROBE_SIZE / (int(h2) - int(h1))))))
    return shapes
