"""Inference protocols: whole image, sliding window, multi-scale with flip.

These follow mmsegmentation's test-time behaviour, so that evaluating a zoo checkpoint here
reproduces its published numbers:

* ``whole``: optionally resize (keeping the aspect ratio, mmsegmentation's ``Resize(scale=...,
  keep_ratio=True)``), run the model once, resize the logits back to the original size.
* ``slide``: overlapping ``crop`` windows every ``stride`` pixels cover the image; each window's
  logits are added into place and divided by how many windows covered each pixel (logits are
  averaged, as mmsegmentation's ``slide_inference``). Images smaller than the crop are run whole.
* ``scales``/``flip``: the protocol runs once per scale (relative to the resized size) and, with
  ``flip``, also on the mirrored image; the softmax *probabilities* of all runs are averaged
  (as mmsegmentation's ``aug_test`` / ``SegTTAModel``). A single run without flip returns logits.

Every function takes a normalised float batch ``(N, C, H, W)`` and returns ``(N, K, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.geometry import MODES, rescale_size
from ..core.inference_budget import check_inference_budget
from ..core.inference_protocol import InferenceProtocol, protocol_from_keywords

__all__ = [
    "infer",
    "infer_groups",
    "infer_whole",
    "infer_slide",
    "slide_spans",
    "rescale_size",
    "MODES",
    "InferenceProtocol",
]


def _align_corners(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "align_corners", False))


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def infer_whole(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run the model on the whole batch at once; logits at the input size."""
    return model(images)


def slide_spans(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` pixel ranges of sliding windows along one axis of ``length`` pixels.

    Windows start every ``stride`` pixels; the last one is shifted back to end at the border (so
    every window is ``crop`` long), and an axis shorter than the crop gets one window covering it
    all. This is mmsegmentation's ``slide_inference`` grid, shared by :func:`infer_slide` and the
    tiled inference of :mod:`pspnet_lib.inference.tiled` so that both run the same windows.

    Raises ``ValueError`` unless ``0 < stride <= crop``.
    """
    if not 0 < stride <= crop:
        raise ValueError(f"slide inference needs 0 < stride <= crop, got crop={crop!r}, stride={stride!r}")
    count = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans


def infer_slide(
    model: nn.Module, images: torch.Tensor, crop: int | Sequence[int], stride: int | Sequence[int]
) -> torch.Tensor:
    """Sliding-window logits: every pixel covered, overlapping windows averaged.

    Args:
        crop: window size ``(h, w)`` (or one int for square windows).
        stride: step between windows ``(h, w)``; at most the crop, so that no pixel is skipped.

    The windows are those of :func:`slide_spans` along each axis, run in row-major order.
    """
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else tuple(crop)
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if not (0 < stride_h <= crop_h and 0 < stride_w <= crop_w):
        raise ValueError(f"slide inference needs 0 < stride <= crop, got crop={crop!r}, stride={stride!r}")
    n, _, height, width = images.shape
    logits: torch.Tensor | None = None
    count = images.new_zeros((1, 1, height, width))
    for y1, y2 in slide_spans(height, crop_h, stride_h):
        for x1, x2 in slide_spans(width, crop_w, stride_w):
            window = model(images[:, :, y1:y2, x1:x2])
            if logits is None:
                logits = window.new_zeros((n, window.shape[1], height, width))
            logits[:, :, y1:y2, x1:x2] += window
            count[:, :, y1:y2, x1:x2] += 1
    assert logits is not None  # at least one window per axis ran
    return logits / count


@torch.no_grad()
def infer(
    model: nn.Module,
    images: torch.Tensor,
    *,
    protocol: InferenceProtocol | None = None,
    mode: str | None = None,
    resize: Sequence[int] | None = None,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
) -> torch.Tensor:
    """Segment a normalised batch with a test protocol; scores at the input's size.

    Args:
        model: a module mapping ``(N, C, h, w)`` to logits ``(N, K, h, w)`` (a PSPNet, or one
            from :func:`~pspnet_lib.optimize_for_inference`).
        images: normalised float batch ``(N, C, H, W)``.
        protocol: the test protocol (e.g. ``PretrainedCfg.of(model).protocol``,
            ``InferenceProtocol(mode="slide", crop=769, stride=513)``); None: the whole image at
            its own size.
        mode, resize, crop, stride, scales, flip: deprecated (0.3; removed in the next release):
            the protocol's fields as keywords, same meaning as :class:`InferenceProtocol`'s.

    Returns logits for a single run, and the mean of softmax probabilities when several runs
    (scales or flip) are combined. Either way ``argmax(dim=1)`` is the prediction.

    Raises ``ValueError`` for an invalid protocol (see :class:`InferenceProtocol`), both
    ``protocol`` and keyword arguments, or ``images`` that are not 4-D; a
    :class:`~pspnet_lib.core.limits.ResourceLimitError` (a ``ValueError``) before the model runs when
    the images, the run or its memory exceed the budget of
    :func:`~pspnet_lib.core.inference_budget.check_inference_budget` (tiled inference processes
    large rasters window by window instead).
    """
    if protocol is None:  # the deprecated keyword form keeps its own messages
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "slide" and (crop is None or stride is None):
            raise ValueError("mode='slide' needs crop and stride (e.g. crop=769, stride=513)")
        if scales is not None and any(not math.isfinite(float(s)) or float(s) <= 0 for s in scales):
            raise ValueError(f"scales must be positive numbers, got {tuple(scales)!r}")
    protocol = protocol_from_keywords(
        protocol,
        {"mode": mode, "resize": resize, "crop": crop, "stride": stride, "scales": scales, "flip": flip},
        where="infer",
    )
    if images.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
    return infer_groups(model, [images], protocol=protocol)[0]


@torch.no_grad()
def infer_groups(
    model: nn.Module, groups: Sequence[torch.Tensor], *, protocol: InferenceProtocol
) -> list[torch.Tensor]:
    """:func:`infer` on batches of different sizes that the protocol resizes to one size, in one batch.

    ``groups`` are normalised batches ``(N_i, C, H_i, W_i)`` (sizes may differ) for which
    ``rescale_size(H_i, W_i, protocol.resize)`` is the same: e.g. photos of 4000x3000 and
    4032x3024 pixels both become 683x512 under the ADE20K protocol. Each run (scale, flip)
    resizes every batch to the run's size on its own (the same operation :func:`infer` does),
    runs the network once on them all together and maps each batch's scores back to its own size.
    Returns the scores ``(N_i, K, H_i, W_i)`` of each batch, as :func:`infer` would (logits for a
    single run, the mean of the runs' probabilities otherwise). Raises ``ValueError`` when the
    batches do not share one resized size.
    """
    mode, resize, crop, stride, scales, flip = (
        protocol.mode,
        protocol.resize,
        protocol.crop,
        protocol.stride,
        protocol.scales,
        protocol.flip,
    )
    sizes = [(int(g.shape[-2]), int(g.shape[-1])) for g in groups]
    bases = {rescale_size(h, w, resize) for h, w in sizes}
    if len(bases) != 1:
        raise ValueError(f"infer_groups needs batches that resize to one size; {sizes} resize to {sorted(bases)}")
    base_h, base_w = bases.pop()
    align_corners = _align_corners(model)
    counts = [int(g.shape[0]) for g in groups]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    check_inference_budget(
        height,
        width,
        protocol,
        config=getattr(model, "config", None),
        channels=int(groups[0].shape[1]),
        batch=sum(counts),
        what="the image" if sum(counts) == 1 else "each image of the batch",
    )
    runs = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    totals: list[torch.Tensor | None] = [None] * len(groups)
    for scale, mirrored in runs:
        size = (max(1, int(base_h * scale + 0.5)), max(1, int(base_w * scale + 0.5)))
        resized = [_resize(g, size, align_corners=False) for g in groups]  # as cv2/PIL bilinear resizing
        x = resized[0] if len(resized) == 1 else torch.cat(resized)
        if mirrored:
            x = x.flip(-1)
        if mode == "whole":
            out = infer_whole(model, x)
        else:
            assert crop is not None and stride is not None  # checked by InferenceProtocol
            out = infer_slide(model, x, crop, stride)
        if mirrored:
            out = out.flip(-1)
        for i, (part, own) in enumerate(zip(out.split(counts), sizes)):
            part = _resize(part.float(), own, align_corners)
            if len(runs) == 1:
                totals[i] = part
                continue
            probs = part.softmax(dim=1)
            previous = totals[i]
            totals[i] = probs if previous is None else previous + probs
    results = [t for t in totals if t is not None]
    assert len(results) == len(groups)  # at least one run
    return results if len(runs) == 1 else [t / len(runs) for t in results]
