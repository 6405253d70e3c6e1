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
* the picture is cut into vertical strips of at most ``strip_width`` pixels (default: what keeps
  the band of logits under :data:`BAND_BUDGET` bytes); a strip runs every window that overlaps its
  columns, so windows on a strip boundary run once per strip, and every pixel still gets the
  same windows as ``slide``. A picture narrower than one strip runs each window once.

Memory is therefore bounded by the crop, the batch size, the number of classes and the strip
width, never by the picture's height or (beyond one strip) its width.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._progress import progress_bar
from ..core.pretrained_cfg import PretrainedCfg
from .modes import slide_spans
from .predict import model_device, model_num_classes

__all__ = [
    "BLENDS",
    "BAND_BUDGET",
    "WindowReader",
    "RegionWriter",
    "resolve_tiling",
    "blend_profile",
    "run_tiled",
    "infer_tiled",
]

#: The blends of overlapping windows: ``mean`` (equal weights, as ``slide``), ``hann`` (smooth).
BLENDS = ("mean", "hann")
#: Bytes of logits the band of one strip may hold by default (float32, classes x crop rows x width).
BAND_BUDGET = 256 * 1024**2
#: Strip widths are multiples of this (the output GeoTIFF's block size, so strips write whole blocks).
STRIP_ALIGN = 256

#: ``read(y1, y2, x1, x2) -> (pixels, valid)``: the model's input for rows ``y1:y2``, columns
#: ``x1:x2`` as a float32 tensor ``(C, h, w)`` (normalised), and a bool array ``(h, w)`` that is
#: False where there is no data (None: every pixel is valid).
WindowReader = Callable[[int, int, int, int], tuple[torch.Tensor, "np.ndarray | None"]]
#: ``write(y1, y2, x1, x2, logits, valid)``: a finished region; logits ``(K, h, w)`` float32 on
#: the CPU (undefined where ``valid`` is False), ``valid`` as given by the reader (None: all).
RegionWriter = Callable[[int, int, int, int, torch.Tensor, "np.ndarray | None"], None]


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
            f"stride must be between 1 and the crop {crop_hw[0]}x{crop_hw[1]} (windows overlap by crop - stride "
            f"pixels, which must be less than the window), got stride {stride_hw[0]}x{stride_hw[1]}; "
            f"e.g. stride={round(crop_hw[0] * 2 / 3)}"
        )
    if size is not None and (crop_hw[0] > size[0] or crop_hw[1] > size[1]):
        raise ValueError(
            f"crop {crop_hw[0]}x{crop_hw[1]} is larger than the picture ({size[0]}x{size[1]} pixels); pass a crop of at "
            "most the picture's size, or segment a picture this small with predict()"
        )
    return crop_hw, stride_hw


def blend_profile(blend: str, height: int, width: int) -> torch.Tensor | None:
    """The ``(height, width)`` float32 weight of each pixel of a window; None for ``mean`` (all 1).

    ``hann``: ``sin^2(pi * (i + 0.5) / n)`` along each axis, multiplied (the Hann window sampled at
    pixel centres): 1 in the middle, falling smoothly to ``~(pi / 2n)^2`` at the borders, never 0,
    so a pixel that one window alone covers (at the picture's border) keeps that window's logits.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if blend == "mean":
        return None

    def axis(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return (axis(height)[:, None] * axis(width)[None, :]).float()


def _strips(width: int, strip_width: int) -> list[tuple[int, int]]:
    bounds = list(range(0, width, strip_width)) + [width]
    return list(zip(bounds, bounds[1:]))


def default_strip_width(num_classes: int, crop: tuple[int, int]) -> int:
    """Widest strip (a multiple of 256 px, at least 4 windows) whose band of logits fits :data:`BAND_BUDGET`."""
    fitting = BAND_BUDGET // (4 * (num_classes + 1) * crop[0])
    return max(4 * crop[1], fitting) // STRIP_ALIGN * STRIP_ALIGN or STRIP_ALIGN


def run_tiled(
    model: nn.Module,
    height: int,
    width: int,
    read: WindowReader,
    write: RegionWriter,
    *,
    crop: tuple[int, int],
    stride: tuple[int, int],
    blend: str = "mean",
    batch_size: int = 4,
    strip_width: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    desc: str = "tiled inference",
) -> int:
    """Segment a ``height x width`` picture window by window; every finished region goes to ``write``.

    Args:
        model: maps a normalised ``(N, C, h, w)`` batch to logits ``(N, K, h, w)`` (a PSPNet, an
            :func:`~pspnet_lib.optimize_for_inference` or int8 model); run in eval mode, no grad.
        read, write: see :data:`WindowReader` / :data:`RegionWriter`. Regions arrive strip by
            strip, top to bottom, as bands of whole rows of the strip; they tile the picture.
        crop, stride: window size and step ``(h, w)`` in pixels (:func:`resolve_tiling`).
        blend: ``"mean"`` or ``"hann"`` (see the module's docstring).
        batch_size: windows per forward pass.
        strip_width: columns per strip (a multiple of 256 keeps GeoTIFF writes block-aligned);
            default :func:`default_strip_width`.
        amp_dtype: run the model under ``torch.autocast`` with this dtype.
        progress: a bar counting windows (None: on terminals only, see :mod:`pspnet_lib._progress`).

    Returns the number of windows the model ran (windows without any valid pixel are skipped).
    Raises ``ValueError`` for a bad blend, batch size or strip width.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    profile = blend_profile(blend, min(crop[0], height), min(crop[1], width))
    rows = slide_spans(height, crop[0], stride[0])
    columns = slide_spans(width, crop[1], stride[1])
    device = model_device(model)
    if strip_width is None:
        classes = model_num_classes(model) or 256  # unknown: assume many, i.e. narrower strips
        strip_width = default_strip_width(classes, crop)
    elif isinstance(strip_width, bool) or not isinstance(strip_width, int) or strip_width < 1:
        raise ValueError(f"strip_width must be a positive integer, got {strip_width!r}")
    plan = []
    for start, end in _strips(width, strip_width):
        plan.append((start, end, [span for span in columns if span[0] < end and span[1] > start]))
    total = sum(len(rows) * len(spans) for _, _, spans in plan)
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    weights = profile.to(device) if profile is not None else None
    ran = 0
    was_training = model.training
    model.eval()
    try:
        with (
            ThreadPoolExecutor(max_workers=1) as pool,
            progress_bar(total=total, progress=progress, unit="window", desc=desc) as bar,
        ):
            for start, end, spans in plan:
                band = _Band(rows, spans, start, end, height, weights, write)
                windows = [(r, y1, y2, x1, x2) for r, (y1, y2) in enumerate(rows) for x1, x2 in spans]
                batches = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]

                def load(batch: list[tuple[int, int, int, int, int]]) -> list[tuple[torch.Tensor, Any]]:
                    return [read(y1, y2, x1, x2) for _, y1, y2, x1, x2 in batch]

                pending: Future | None = pool.submit(load, batches[0])
                for index, batch in enumerate(batches):
                    assert pending is not None
                    loaded = pending.result()
                    pending = pool.submit(load, batches[index + 1]) if index + 1 < len(batches) else None
                    keep = [i for i, (_, valid) in enumerate(loaded) if valid is None or valid.any()]
                    outputs: list[torch.Tensor | None] = [None] * len(batch)
                    if keep:
                        x = torch.stack([loaded[i][0] for i in keep]).to(device)
                        with torch.no_grad(), autocast:
                            logits = model(x)
                        for j, i in enumerate(keep):
                            outputs[i] = logits[j].float()
                        ran += len(keep)
                    for window, (_, valid), out in zip(batch, loaded, outputs):
                        band.add(window, out, valid)
                    bar.update(len(batch))
                band.finish()
    finally:
        model.train(was_training)
    return ran


class _Band:
    """The logits of one strip's current band of ``crop`` rows, finished row block by row block."""

    def __init__(
        self,
        rows: list[tuple[int, int]],
        spans: list[tuple[int, int]],
        start: int,
        end: int,
        height: int,
        weights: torch.Tensor | None,
        write: RegionWriter,
    ) -> None:
        self.rows, self.start, self.end, self.write, self.weights = rows, start, end, write, weights
        self.x0 = spans[0][0]
        self.width = spans[-1][1] - self.x0
        self.height = rows[0][1] - rows[0][0]  # every window row is this tall (slide_spans)
        self.picture_height = height
        self.row = 0
        self.logits: torch.Tensor | None = None
        self.total: torch.Tensor | None = None  # sum of weights (window counts for "mean")
        self.valid: np.ndarray | None = None

    def add(self, window: tuple[int, int, int, int, int], logits: torch.Tensor | None, valid: Any) -> None:
        row, y1, y2, x1, x2 = window
        while row > self.row:
            self._emit()
        top = self.rows[self.row][0]
        ys, xs = slice(y1 - top, y2 - top), slice(x1 - self.x0, x2 - self.x0)
        if valid is not None:
            if self.valid is None:
                self.valid = np.ones((self.height, self.width), dtype=bool)
            self.valid[ys, xs] = valid
        if logits is None:
            return
        if self.logits is None:
            self.logits = logits.new_zeros((logits.shape[0], self.height, self.width))
            self.total = logits.new_zeros((self.height, self.width))
        assert self.total is not None
        if self.weights is None:  # as infer_slide: sum, count, divide
            self.logits[:, ys, xs] += logits
            self.total[ys, xs] += 1
        else:
            self.logits[:, ys, xs] += logits * self.weights
            self.total[ys, xs] += self.weights

    def _emit(self) -> None:
        top = self.rows[self.row][0]
        bottom = self.rows[self.row + 1][0] if self.row + 1 < len(self.rows) else self.picture_height
        count = bottom - top
        cols = slice(self.start - self.x0, self.end - self.x0)
        valid = None if self.valid is None else self.valid[:count, cols].copy()
        if self.logits is None or self.total is None:  # nothing valid so far: every pixel is nodata
            region = torch.zeros((1, count, self.end - self.start))
        else:
            total = self.total[:count, cols]
            region = (self.logits[:, :count, cols] / torch.where(total > 0, total, 1)).cpu()
        self.write(top, bottom, self.start, self.end, region, valid)
        for array in (self.logits, self.total):
            if array is not None:  # shift the band down: keep its rows below the finished block
                array[..., : self.height - count, :] = array[..., count:, :].clone()
                array[..., self.height - count :, :] = 0
        if self.valid is not None:
            self.valid[: self.height - count] = self.valid[count:].copy()
            self.valid[self.height - count :] = True
        self.row += 1

    def finish(self) -> None:
        while self.row < len(self.rows):
            self._emit()


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
    crop_hw = (min(crop_hw[0], height), min(crop_hw[1], width))  # as slide: a small picture runs whole
    stride_hw = (min(stride_hw[0], crop_hw[0]), min(stride_hw[1], crop_hw[1]))
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
