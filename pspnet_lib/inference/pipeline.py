"""Streaming prediction over picture files: DataLoader workers decode while the model runs.

:func:`iter_predictions` is the engine under ``pspnet predict`` (through
:func:`~pspnet_lib.inference.batch.predict_files`) and ``pspnet rank``: worker processes read
and decode pictures (:func:`~pspnet_lib.core.images.to_image_tensor`, the reading rules of
:func:`~pspnet_lib.predict`); the main process collects them into batches of pictures that reach
the network at one size (see :func:`~pspnet_lib.predict`'s ``batch_size``) and runs
:func:`~pspnet_lib.predict` on each batch, so every result equals ``predict(model, path)``'s.

Pictures of different sizes are grouped, not padded: PSPNet's pyramid pooling averages over the
whole feature map, so padding would change every pixel's context and the result (measured in
``benchmarks/batch_predict.py``). A picture that cannot be read, or whose batch fails, is
yielded with its one-line error instead of a prediction; the stream goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..core.band_spec import BandSpec
from ..core.geometry import rescale_size
from ..core.images import to_image_tensor
from ..core.inference_protocol import InferenceProtocol
from ..core.pretrained_cfg import PretrainedCfg
from .predict import Prediction, predict

__all__ = ["Outcome", "iter_predictions", "one_line"]

logger = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for a log or manifest: its message (the type name when that says more), newlines folded."""
    text = " ".join(str(exc).split())
    generic = isinstance(exc, (ValueError, FileNotFoundError)) and text
    return text if generic else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Outcome:
    """One input's result: ``prediction`` or ``error`` (one line), and the seconds spent on it."""

    index: int
    prediction: Prediction | None
    error: str | None
    seconds: float


class _Decoded(Dataset):
    """Item ``i``: ``(i, (C, H, W) tensor or None, error or None, seconds)``; never raises, so one bad
    file does not stop the DataLoader."""

    def __init__(self, sources: Sequence[str], channels: int, band_spec: BandSpec | None = None) -> None:
        self.sources = sources
        self.channels = channels
        self.band_spec = band_spec  # stored values in their own units when the weights carry one

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None, float]:
        start = time.perf_counter()
        try:
            tensor = to_image_tensor(self.sources[index], self.channels, band_spec=self.band_spec)
        except Exception as exc:  # any decoder failure is this file's, recorded; the run goes on
            reason = one_line(exc)
            with contextlib.suppress(OSError):
                if os.path.getsize(self.sources[index]) == 0:  # say so, rather than "cannot identify image file"
                    reason = f"{self.sources[index]} is empty (0 bytes); expected a picture or a .npy array"
            return index, None, reason, time.perf_counter() - start
        return index, tensor, None, time.perf_counter() - start


def _passthrough(item: Any) -> Any:
    return item


def iter_predictions(
    model: nn.Module,
    sources: Sequence[str],
    *,
    protocol: InferenceProtocol,
    channels: int,
    batch_size: int = 1,
    num_workers: int = 2,
    confidence: str | None = None,
    amp_dtype: torch.dtype | None = None,
    pending_limit: int | None = None,
) -> Iterator[Outcome]:
    """Yield an :class:`Outcome` for every path of ``sources`` (in batch order, not input order).

    Args:
        model: the network, on its device, in eval mode.
        sources: picture paths.
        protocol: the resolved protocol (:func:`~pspnet_lib.inference.predict.resolve_protocol`).
        channels: the model's input channels.
        batch_size: pictures per forward pass (of one network input size).
        num_workers: decoding processes (0: decode in this process, between forward passes).
        confidence: also compute this confidence map (``Prediction.confidence``).
        amp_dtype: autocast dtype for the forward pass.
        pending_limit: most decoded pictures held while waiting for a batch to fill (default
            ``4 * batch_size``, at least 8); past it, the fullest batch runs as it is.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be 0 or a positive integer, got {num_workers!r}")
    limit = pending_limit or max(8, 4 * batch_size)
    pin = any(p.is_cuda for p in model.parameters())
    loader = DataLoader(
        _Decoded(sources, channels, PretrainedCfg.of(model).bands),
        batch_size=None,
        shuffle=False,
        num_workers=min(num_workers, len(sources)),  # no idle processes for a handful of pictures
        collate_fn=_passthrough,
        pin_memory=pin,
    )
    buckets: OrderedDict[tuple[int, int], list[tuple[int, torch.Tensor, float]]] = OrderedDict()
    held = 0

    def run(bucket: list[tuple[int, torch.Tensor, float]]) -> Iterator[Outcome]:
        start = time.perf_counter()
        try:
            results = predict(
                model,
                [tensor for _, tensor, _ in bucket],
                protocol=protocol,
                batch_size=len(bucket),
                confidence=confidence,
                amp_dtype=amp_dtype,
            )
        except Exception as exc:  # e.g. out of memory: retry one by one, so only the culprit fails
            if len(bucket) > 1:
                for item in bucket:
                    yield from run([item])
                return
            index, _, decode_seconds = bucket[0]
            yield Outcome(index, None, one_line(exc), decode_seconds + time.perf_counter() - start)
            return
        share = (time.perf_counter() - start) / len(bucket)
        assert isinstance(results, list)  # a list of pictures gives a list
        for (index, _, decode_seconds), result in zip(bucket, results):
            yield Outcome(index, result, None, decode_seconds + share)

    for index, tensor, error, seconds in loader:
        if tensor is None:
            yield Outcome(index, None, error, seconds)
            continue
        size = rescale_size(int(tensor.shape[-2]), int(tensor.shape[-1]), protocol.resize)
        buckets.setdefault(size, []).append((index, tensor, seconds))
        held += 1
        if len(buckets[size]) >= batch_size:
            held -= len(buckets[size])
            yield from run(buckets.pop(size))
        elif held >= limit:
            fullest = max(buckets, key=lambda s: len(buckets[s]))
            held -= len(buckets[fullest])
            yield from run(buckets.pop(fullest))
    while buckets:
        _, bucket = buckets.popitem(last=False)
        yield from run(bucket)
