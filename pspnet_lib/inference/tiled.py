"""Tiled inference with bounded memory: pictures of any size, window by window.

:func:`run_tiled` is the engine behind :func:`~pspnet_lib.inference.rasters.predict_raster`
(GeoTIFFs and large pictures, file to file) and :func:`infer_tiled` (a tensor in memory). It
reads the picture one batch of windows at a time (the next batch is read in a background thread
while the model runs), adds each window's logits into a band of rows, and hands every finished
region to a writer, so that only a band of ``crop`` rows of logits is ever held:

* the windows are those of ``slide`` inference (:func:`~pspnet_lib.inference.modes.slide_spans`:
  mmsegmentation's ``slide_inference`` grid), so the default ``blend="mean"`` (each pixel the mean
  of the logits of the windows covering it) gives the in-memory ``slide`` result;
* ``blend="hann"`` weights each window by a Hann (raised-cosine, ``sin^2``) profile along each
  axis, so a pixel's logits come mostly from the windows it lies deep inside; seams between
  windows, where one window saw context its neighbour did not, are smoothed away;
* the picture is processed in vertical strips of :func:`default_strip_width` columns (2048),
  each top to bottom; a window belongs to the strip its left edge lies in, and what it adds to
  the next strip's columns waits in a temporary file until that strip reaches the same rows. Every
  window runs once.

Memory is therefore bounded by the crop, the batch size, the number of classes and the strip
width, never by the picture's size: the band of one strip holds ``4 * K * crop * (2048 + crop)``
bytes of logits.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._progress import progress_bar
from ..core.band_spec import BandSpec
from ..core.bands import normalise
from ..core.pretrained_cfg import PretrainedCfg
from .modes import slide_spans
from .predict import model_device, model_num_classes
from .tiled_band import RegionWriter, StripBand

__all__ = [
    "BLENDS",
    "default_strip_width",
    "WindowReader",
    "RegionWriter",
    "resolve_tiling",
    "blend_profile",
    "run_tiled",
    "count_classes",
    "class_indices",
    "infer_tiled",
]

#: The blends of overlapping windows: ``mean`` (equal weights, as ``slide``), ``hann`` (smooth).
BLENDS = ("mean", "hann")
#: Strip widths are multiples of this (the output GeoTIFF's block size, so strips write whole blocks).
STRIP_ALIGN = 256

#: ``read(y1, y2, x1, x2) -> (pixels, valid)``: rows ``y1:y2``, columns ``x1:x2`` of the picture
#: as ``(C, h, w)`` pixels: a NumPy array of uint8 or float32 in [0, 1] when :func:`run_tiled` is
#: given ``mean``/``std`` (it normalises them), else the model's input as a float tensor; and a
#: bool array ``(h, w)`` that is False where there is no data (None: every pixel is valid).
#: It runs in a background thread.
WindowReader = Callable[[int, int, int, int], tuple[Any, "np.ndarray | None"]]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    items = [value, value] if isinstance(value, int) else list(value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an integer or a pair of integers (height, width), got {value!r}")
    return int(items[0]), int(items[1])


def resolve_tiling(
    model: nn.Module,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    *,
    size: tuple[int, int] | None = None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window size and step of tiled inference: the caller's, else the weights' protocol.

    ``crop``: the caller's, else the stored protocol's when it is ``slide``
    (``PretrainedCfg.of(model).protocol``), else the training crop the weights record
    (``pretrained_cfg["crop_size"]``, the zoo's ``512x512`` ...), else 512. ``stride``: the
    caller's, else the stored one when the crop is the stored one, else two thirds of the crop
    (rounded; mmsegmentation's slide protocols use 513 for 769, 320 for 480, 341 for 512).

    ``size``: the picture's ``(height, width)``, checked against the crop.

    Raises ``ValueError`` naming ``crop``/``stride`` for a stride outside ``[1, crop]`` (an overlap
    ``crop - stride`` as large as the window, or gaps between windows) or a crop larger than the
    picture.
    """
    cfg = PretrainedCfg.of(model)
    stored = cfg.protocol
    if crop is None:
        if stored.mode == "slide" and stored.crop is not None:
            crop_hw = stored.crop
            stride = stride if stride is not None else stored.stride
        else:
            recorded = cfg.extra.get("crop_size")
            crop_hw = _pair(recorded, "pretrained_cfg crop_size") if recorded is not None else (512, 512)
    else:
        crop_hw = _pair(crop, "crop")
    if min(crop_hw) < 1:
        raise ValueError(f"crop must be positive, got {crop!r}")
    stride_hw = (
        _pair(stride, "stride") if stride is not None else (round(crop_hw[0] * 2 / 3), round(crop_hw[1] * 2 / 3))
    )
    if not all(1 <= s <= c for s, c in zip(stride_hw, crop_hw)):
        raise ValueError(
            f"stride (--stride) must be between 1 and the crop {crop_hw[0]}x{crop_hw[1]} (windows overlap by crop - "
            f"stride pixels, which must be less than the window), got {stride_hw[0]}x{stride_hw[1]}; e.g. --stride "
            f"{round(crop_hw[0] * 2 / 3)}"
        )
    if size is not None and (crop_hw[0] > size[0] or crop_hw[1] > size[1]):
        raise ValueError(
            f"crop (--crop) {crop_hw[0]}x{crop_hw[1]} is larger than the picture ({size[0]}x{size[1]} pixels); pass a "
            "crop of at most the picture's size, or segment a picture this small with predict()"
        )
    return crop_hw, stride_hw


def blend_profile(blend: str, length: int) -> torch.Tensor:
    """The float64 weight of each pixel along one window axis of ``length`` pixels.

    ``mean``: all 1. ``hann``: ``sin^2(pi * (i + 0.5) / length)`` (the Hann window sampled at
    pixel centres): 1 in the middle, falling smoothly to ``~(pi / 2 length)^2`` at the borders,
    never 0, so a pixel that one window alone covers (at the picture's border) keeps that
    window's logits. A window's weight is the product of its two axes' profiles.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if blend == "mean":
        return torch.ones(length, dtype=torch.float64)
    return torch.sin(math.pi * (torch.arange(length, dtype=torch.float64) + 0.5) / length) ** 2


def class_indices(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=0)`` for ``(K, h, w)`` logits (the first maximum on ties, as argmax).

    ``max(dim=0).indices``: torch's CPU argmax over a leading dimension is ~10x slower for few classes.
    """
    return logits.max(dim=0).indices


def _coverage(length: int, spans: list[tuple[int, int]], profile: torch.Tensor) -> torch.Tensor:
    """Sum over the windows of one axis of their profile: with the grid being a product of the two
    axes' windows, a pixel's total weight is ``coverage_y[y] * coverage_x[x]`` (window counts for
    ``mean``, as ``slide`` divides by)."""
    total = torch.zeros(length, dtype=torch.float64)
    for start, end in spans:
        total[start:end] += profile
    return total.float()


def default_strip_width(crop_width: int) -> int:
    """Columns per strip: 2048, or two windows where the crop is wider than 1024 (a multiple of 256)."""
    return -(-max(2048, 2 * crop_width) // STRIP_ALIGN) * STRIP_ALIGN


def run_tiled(
    model: nn.Module,
    height: int,
    width: int,
    read: WindowReader,
    write: RegionWriter,
    *,
    crop: tuple[int, int],
    stride: tuple[int, int],
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    band_spec: BandSpec | None = None,
    blend: str = "mean",
    batch_size: int = 4,
    strip_width: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    desc: str = "tiled inference",
    scratch_dir: str | os.PathLike | None = None,
) -> int:
    """Segment a ``height x width`` picture window by window; every finished region goes to ``write``.

    Args:
        model: maps a normalised ``(N, C, h, w)`` batch to logits ``(N, K, h, w)`` (a PSPNet, an
            :func:`~pspnet_lib.optimize_for_inference` or int8 model); run in eval mode, no grad.
        read, write: see :data:`WindowReader` / :data:`RegionWriter`. Regions arrive strip by
            strip (left to right), top to bottom, as bands of whole rows of the strip; they tile
            the picture.
        crop, stride: window size and step ``(h, w)`` in pixels (:func:`resolve_tiling`); a side
            longer than the picture's is cut to it (one window along that axis, as ``slide``).
        num_classes: K (default: the model's config, else one window is run to find it).
        mean, std: per-channel normalisation on the 0..1 scale (``PretrainedCfg.mean``/``std``),
            applied to the pixels ``read`` returns; nodata pixels become 0 (the mean colour). The
            batch is built here, in the calling thread, so that the reading thread allocates
            only the decoded pixels (memory freed across threads made glibc's heaps grow with
            the picture's size). With ``band_spec`` the pixels are stored values and mean/std are in
            its units (:func:`pspnet_lib.core.bands.normalise`, what ``predict`` computes).
        blend: ``"mean"`` or ``"hann"`` (see the module's docstring).
        batch_size: windows per forward pass.
        strip_width: columns per strip, at least the crop's width (default
            :func:`default_strip_width`; a multiple of 256 keeps GeoTIFF writes block-aligned).
        amp_dtype: run the model under ``torch.autocast`` with this dtype.
        progress: a bar counting windows (None: on terminals only, see :mod:`pspnet_lib._progress`).
        scratch_dir: where the sums that cross a strip boundary wait for the next strip (a
            temporary file of ``4 * K * height * (crop - stride)`` bytes at most; default: the
            system's temporary folder).

    Returns the number of windows the model ran (windows without any valid pixel are skipped).
    Raises ``ValueError`` for a bad blend, batch size or strip width.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    crop = (min(crop[0], height), min(crop[1], width))
    stride = (min(stride[0], crop[0]), min(stride[1], crop[1]))
    rows = slide_spans(height, crop[0], stride[0])
    columns = slide_spans(width, crop[1], stride[1])
    profile_y, profile_x = blend_profile(blend, crop[0]), blend_profile(blend, crop[1])
    coverage_y, coverage_x = _coverage(height, rows, profile_y), _coverage(width, columns, profile_x)
    if strip_width is None:
        strip_width = default_strip_width(crop[1])
    elif isinstance(strip_width, bool) or not isinstance(strip_width, int) or strip_width < crop[1]:
        raise ValueError(f"strip_width must be an integer of at least the crop width {crop[1]}, got {strip_width!r}")
    # Each window belongs to the strip its left edge lies in; it may reach into the next strip.
    plan = [
        (start, min(start + strip_width, width), [c for c in columns if start <= c[0] < start + strip_width])
        for start in range(0, width, strip_width)
    ]
    device = model_device(model)
    weights = None if blend == "mean" else (profile_y[:, None] * profile_x[None, :]).float().to(device)
    stats = _stats(mean, std, band_spec)
    if num_classes is None:
        num_classes = count_classes(model, read, crop, mean=mean, std=std, band_spec=band_spec)
    total = len(rows) * len(columns)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    ran = 0
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            bar = stack.enter_context(progress_bar(total=total, progress=progress, unit="window", desc=desc))
            carries = [
                stack.enter_context(tempfile.TemporaryFile(dir=None if scratch_dir is None else os.fspath(scratch_dir)))
                for _ in range(2)
            ]
            overhang = 0  # columns of the previous strip's windows that reach into this one
            for index, (start, end, spans) in enumerate(plan):
                carry_in, carry_out = carries[index % 2], carries[(index + 1) % 2]
                carry_in.seek(0)
                carry_out.seek(0)
                reach = max([end, *(x2 for _, x2 in spans)])
                band = StripBand(
                    rows, (start, end, reach), overhang, num_classes, device, weights, write, carry_in, carry_out
                )
                band.coverage = (coverage_y, coverage_x[start:end].to(device))
                windows = [(r, y1, y2, x1, x2) for r, (y1, y2) in enumerate(rows) for x1, x2 in spans]
                batches = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]

                def load(batch: list[tuple[int, int, int, int, int]]) -> list[tuple[Any, Any]]:
                    return [read(y1, y2, x1, x2) for _, y1, y2, x1, x2 in batch]

                pending: Future | None = pool.submit(load, batches[0]) if batches else None
                for number, batch in enumerate(batches):
                    assert pending is not None
                    loaded = pending.result()
                    pending = pool.submit(load, batches[number + 1]) if number + 1 < len(batches) else None
                    keep = [i for i, (_, valid) in enumerate(loaded) if valid is None or valid.any()]
                    outputs: list[torch.Tensor | None] = [None] * len(batch)
                    if keep:
                        x = _prepare([loaded[i] for i in keep], stats).to(device)
                        with torch.no_grad(), autocast:
                            logits = model(x)
                        for j, i in enumerate(keep):
                            outputs[i] = logits[j].float()
                        ran += len(keep)
                    for window, (_, valid), out in zip(batch, loaded, outputs):
                        band.add(window, out, valid)
                    bar.update(len(batch))
                band.finish()
                overhang = reach - end
    finally:
        model.train(was_training)
    return ran


def _prepare(loaded: list[tuple[Any, np.ndarray | None]], cfg: PretrainedCfg | None) -> torch.Tensor:
    """The model's input batch from the windows' pixels (in the main thread: see run_tiled), by
    :func:`pspnet_lib.core.bands.normalise` (the photo rules, or the band spec of ``cfg``)."""
    if cfg is None:
        return torch.stack([pixels for pixels, _ in loaded])
    x = normalise(np.stack([pixels for pixels, _ in loaded]), cfg, what="the window")
    for image, (_, valid) in zip(x, loaded):
        if valid is not None:
            image[:, torch.from_numpy(~valid)] = 0  # nodata enters the network as the mean colour
    return x


def _stats(
    mean: Sequence[float] | None, std: Sequence[float] | None, band_spec: BandSpec | None = None
) -> PretrainedCfg | None:
    """The normalisation of the pixels ``read`` returns (None: they are the model's input already)."""
    if mean is None or std is None:
        return None
    return PretrainedCfg(in_channels=len(mean), mean=tuple(mean), std=tuple(std), bands=band_spec)


def count_classes(
    model: nn.Module,
    read: WindowReader,
    crop: tuple[int, int],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    band_spec: BandSpec | None = None,
) -> int:
    """K: the model's ``config.num_classes``, else the channels of the logits of the top-left window."""
    known = model_num_classes(model)
    if known:
        return int(known)
    x = _prepare([read(0, crop[0], 0, crop[1])], _stats(mean, std, band_spec))[0]
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(model(x[None].to(device)).shape[1])
    finally:
        model.train(was_training)


@torch.no_grad()
def infer_tiled(
    model: nn.Module,
    images: torch.Tensor,
    crop: int | Sequence[int],
    stride: int | Sequence[int],
    *,
    blend: str = "mean",
    batch_size: int = 4,
    strip_width: int | None = None,
) -> torch.Tensor:
    """Tiled logits of a normalised batch ``(N, C, H, W)`` held in memory: ``(N, K, H, W)`` float32.

    The in-memory twin of :func:`~pspnet_lib.inference.modes.infer_slide`: with ``blend="mean"``
    the same windows and the same sums (equal to float rounding, whatever ``strip_width``); with
    ``"hann"`` the smooth blend. For pictures that do not fit in memory, use
    :func:`~pspnet_lib.inference.rasters.predict_raster`, which reads and writes files window by
    window. Raises ``ValueError`` as :func:`run_tiled` and :func:`resolve_tiling`.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    crop_hw, stride_hw = _pair(crop, "crop"), _pair(stride, "stride")
    if not all(0 < s <= c for s, c in zip(stride_hw, crop_hw)):
        raise ValueError(f"tiled inference needs 0 < stride <= crop, got crop={crop!r}, stride={stride!r}")
    results = []
    for image in images:
        parts: list[tuple[int, int, int, int, torch.Tensor]] = []

        def read(y1: int, y2: int, x1: int, x2: int, image: torch.Tensor = image) -> tuple[torch.Tensor, None]:
            return image[:, y1:y2, x1:x2], None

        def write(y1: int, y2: int, x1: int, x2: int, logits: torch.Tensor, valid: Any) -> None:
            parts.append((y1, y2, x1, x2, logits))

        run_tiled(
            model,
            height,
            width,
            read,
            write,
            crop=crop_hw,
            stride=stride_hw,
            blend=blend,
            batch_size=batch_size,
            strip_width=strip_width,
            progress=False,
        )
        classes = parts[0][4].shape[0]
        full = torch.empty((classes, height, width))
        for y1, y2, x1, x2, logits in parts:
            full[:, y1:y2, x1:x2] = logits
        results.append(full)
    return torch.stack(results)
