"""What one inference costs, estimated from sizes alone, and the check against the budget.

Whole-image inference holds the picture, the model's activations at the size it runs at and the
logits at the picture's size (``K x H x W`` floats); a sliding window runs the model once per
window. :func:`check_inference_budget` is the one place these are checked (against the
``whole_image_pixels``, ``slide_windows`` and ``memory`` limits of :mod:`pspnet_lib.core.limits`),
before a picture is decoded where its size is known from its header, and before the model runs;
the refusal points at tiled inference, which processes a large raster window by window and does
not go through this check for the whole raster.

The activation estimate is deliberately coarse (the largest maps of a dilated ResNet + pyramid
head held at once, no allocator overhead): it is for refusing what cannot fit, not for planning.
"""

from __future__ import annotations

import math
from typing import Any

from .geometry import rescale_size
from .inference_protocol import InferenceProtocol
from .limits import check_limit, format_amount

__all__ = ["TILED_ADVICE", "activation_bytes", "check_inference_budget", "protocol_run_size", "slide_windows"]

#: Where a refusal sends the user.
TILED_ADVICE = (
    "for large pictures use tiled inference (`pspnet predict` on large inputs / docs/rasters.md), or a smaller "
    "size (a resize protocol, --size) or the slide mode"
)


def slide_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> int:
    """Windows :func:`~pspnet_lib.inference.modes.infer_slide` runs on an ``height x width`` image."""
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    return rows * cols


def protocol_run_size(height: int, width: int, protocol: InferenceProtocol) -> tuple[int, int]:
    """The largest ``(h, w)`` the protocol runs the model at on an ``height x width`` picture (whole
    mode: the resized size at the largest scale; slide: that size, cut into windows)."""
    base_h, base_w = rescale_size(height, width, protocol.resize)
    scale = max(protocol.scales)
    return max(1, int(base_h * scale + 0.5)), max(1, int(base_w * scale + 0.5))


def activation_bytes(config: Any, height: int, width: int, batch: int = 1) -> int:
    """Coarse float32 activation memory of one forward pass of a PSPNet ``config`` at ``height x width``.

    ``config`` is a :class:`~pspnet_lib.PSPNetConfig` or anything with its attributes (missing
    ones take R50-D8's values).
    """
    stem = int(getattr(config, "stem_channels", 64) or 64)
    widths = list(getattr(config, "backbone_channels", [256, 512, 1024, 2048]))
    stride = int(getattr(config, "output_stride", 8) or 8)
    bins = len(getattr(config, "bins", [1, 2, 3, 6]) or [1])
    ppm = int(getattr(config, "ppm_channels", None) or widths[-1] // bins)
    head = int(getattr(config, "head_channels", None) or 512)
    classes = int(getattr(config, "num_classes", 21) or 1)
    pixels = height * width
    feature = math.ceil(height / stride) * math.ceil(width / stride)
    elements = (
        2 * pixels // 4 * stem  # the stem at 1/2 (and its pooled output)
        + 3 * pixels // 16 * widths[0]  # layer1 at 1/4: a block's input, middle and output
        + feature * (3 * widths[-1] + 2 * (widths[-1] + bins * ppm) + head + classes)  # layer4, PPM, head
    )
    return 4 * batch * elements


def check_inference_budget(
    height: int,
    width: int,
    protocol: InferenceProtocol,
    *,
    config: Any = None,
    channels: int = 3,
    batch: int = 1,
    what: str = "the picture",
) -> None:
    """Refuse, before any work, an inference of an ``height x width`` picture that exceeds the budget.

    Checks, in order: the picture and the largest whole-image run against ``whole_image_pixels``
    (whole mode; in slide mode only the picture, whose logits are held at full size), the window
    count against ``slide_windows`` (slide mode), and the estimated memory (the picture, the
    activations of the largest run, the logits at the picture's size; ``config`` gives the widths
    and class count; ``batch`` pictures at once) against ``memory``.

    Raises:
        ResourceLimitError: (a ``ValueError``) one line naming ``what``, its size, the limit and the
            environment variable that raises it, and pointing at tiled inference.
    """
    run_h, run_w = protocol_run_size(height, width, protocol)
    size = f"{what} ({width}x{height} pixels{f', {batch} at once' if batch > 1 else ''}"
    if protocol.mode == "whole":
        pixels = max(height * width, run_h * run_w)
        check_limit("whole_image_pixels", pixels, f"{size}, run at {run_w}x{run_h})", TILED_ADVICE)
    else:
        assert protocol.crop is not None and protocol.stride is not None  # checked by InferenceProtocol
        check_limit("whole_image_pixels", height * width, f"{size})", TILED_ADVICE)
        windows = slide_windows(run_h, run_w, protocol.crop, protocol.stride)
        crop, stride = "x".join(map(str, protocol.crop)), "x".join(map(str, protocol.stride))
        check_limit(
            "slide_windows",
            windows,
            f"{size}, slide inference with {crop} windows every {stride} pixels at {run_w}x{run_h})",
            "choose a larger crop and stride (--crop, --stride)",
        )
        run_h, run_w = min(run_h, protocol.crop[0]), min(run_w, protocol.crop[1])
    if config is None:
        return
    classes = int(getattr(config, "num_classes", 21) or 1)
    runs = len(protocol.scales) * (2 if protocol.flip else 1)
    picture = 4 * batch * height * width * (channels + classes * (2 if runs > 1 else 1))
    needed = picture + activation_bytes(config, run_h, run_w, batch)
    check_limit(
        "memory",
        needed,
        f"{size}; {format_amount(picture, 'bytes')} for the picture and its {classes}-class scores, "
        f"{format_amount(needed - picture, 'bytes')} for the network at {run_w}x{run_h})",
        TILED_ADVICE,
    )
