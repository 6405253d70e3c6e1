"""Keep-ratio geometry and the names of the inference modes, shared by data, hub and inference.

The test-time protocol itself (whole, slide, multi-scale + flip) is in
:mod:`pspnet_lib.inference.modes`; what the transforms, the weights' validation and the
preprocessing need of it (the resize rule and the mode names) lives here, below all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MODES", "rescale_size"]

#: The inference modes (:func:`pspnet_lib.inference.modes.infer`).
MODES = ("whole", "slide")


def rescale_size(height: int, width: int, scale: Sequence[float] | None) -> tuple[int, int]:
    """Size after a keep-ratio resize into ``scale = (long_edge_max, short_edge_max)``.

    ``(2048, 512)`` (ADE20K, VOC) scales an image so its long side is at most 2048 and its
    short side at most 512, with the largest factor that satisfies both (mmcv's ``rescale``).
    ``None`` keeps the size.
    """
    if scale is None:
        return height, width
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))
