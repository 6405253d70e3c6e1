"""What to label next: pictures ordered by the model's uncertainty, most uncertain first.

* :func:`rank_pictures` runs the model over pictures (the decoding pipeline of ``pspnet predict``)
  and keeps the ``top`` most uncertain;
* :func:`rank_manifests` orders the records of ``pspnet predict --confidence KIND`` runs (every
  shard's manifest part), so that a ranking over millions of pictures costs no second pass.

A picture's uncertainty is the mean over its pixels of the confidence map, turned so that higher
means less sure (:func:`pspnet_lib.inference.confidence.uncertainty`): ``1 - mean maxprob``,
``1 - mean margin`` or ``mean entropy / ln K``, each in [0, 1]. With test-time augmentation
(``flip``/``scales``) the map is computed on the probabilities averaged over the runs.
Ties are broken by the input path, so the order is reproducible.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from .._files import atomic_output
from ..core.pretrained_cfg import PretrainedCfg
from .confidence import check_kind, scaled, uncertainty
from .manifest import read_manifest
from .pipeline import iter_predictions
from .predict import model_num_classes, resolve_protocol

__all__ = ["Ranking", "rank_pictures", "rank_manifests", "write_ranking"]


@dataclass
class Ranking:
    """The ranked records (most uncertain first, ``rank`` from 1) and the inputs that failed ``(path, reason)``."""

    records: list[dict[str, Any]]
    failed: list[tuple[str, str]] = field(default_factory=list)
    considered: int = 0


def _order(records: Iterable[dict[str, Any]], top: int | None) -> list[dict[str, Any]]:
    """The ``top`` records of highest uncertainty (all when None), highest first, ties by input path."""

    def key(record: dict[str, Any]) -> tuple[float, str]:
        return (-float(record["uncertainty"]), str(record["input"]))

    return heapq.nsmallest(top, records, key=key) if top is not None else sorted(records, key=key)


def _ranked(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"rank": i, **record} for i, record in enumerate(records, 1)]


def _check_top(top: int | None) -> None:
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer (how many pictures to list), got {top!r}")


def rank_pictures(
    model: nn.Module,
    sources: Sequence[str],
    *,
    confidence: str = "entropy",
    top: int | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    batch_size: int = 1,
    num_workers: int = 2,
) -> Ranking:
    """The ``top`` most uncertain of the pictures ``sources`` (all, ordered, when ``top`` is None).

    Each record: ``rank``, ``input``, ``uncertainty``, ``confidence_kind``, ``confidence_mean``,
    ``height``, ``width``. The weights' protocol is used, with ``flip``/``scales`` added. A
    picture that cannot be read is left out and listed in :attr:`Ranking.failed`.
    """
    check_kind(confidence)
    _check_top(top)
    protocol = resolve_protocol(model, flip=flip, scales=scales)
    num_classes = model_num_classes(model) or 0
    failed: list[tuple[str, str]] = []
    records: list[dict[str, Any]] = []
    outcomes = iter_predictions(
        model,
        list(sources),
        protocol=protocol,
        channels=PretrainedCfg.of(model).in_channels,
        batch_size=batch_size,
        num_workers=num_workers,
        confidence=confidence,
    )
    for outcome in outcomes:
        source = sources[outcome.index]
        prediction = outcome.prediction
        if prediction is None or prediction.confidence is None:
            failed.append((source, outcome.error or "no confidence map"))
            continue
        mean = float(scaled(prediction.confidence, confidence, num_classes).double().mean())
        height, width = prediction.mask.shape
        records.append(
            {
                "input": source,
                "uncertainty": uncertainty(mean, confidence),
                "confidence_kind": confidence,
                "confidence_mean": mean,
                "height": int(height),
                "width": int(width),
            }
        )
        if top is not None and len(records) > 4 * top + 1024:  # bounded memory over millions of pictures
            records = _order(records, top)
    return Ranking(_ranked(_order(records, top)), failed, considered=len(sources))


def rank_manifests(source: str | os.PathLike | Iterable[str | os.PathLike], *, top: int | None = None) -> Ranking:
    """Order the ``done`` records of ``pspnet predict --confidence KIND`` manifests (a folder: every part).

    Raises ``ValueError`` when no record has an uncertainty (the run had no ``--confidence``) or
    the records mix confidence kinds (their uncertainties do not compare).
    """
    _check_top(top)
    done = [r for r in read_manifest(source) if r.get("status") == "done"]
    scored = [r for r in done if isinstance(r.get("uncertainty"), (int, float))]
    if not scored:
        raise ValueError(
            f"no manifest record in {source} has an uncertainty; run pspnet predict with --confidence KIND first"
        )
    kinds = sorted({str(r.get("confidence_kind")) for r in scored})
    if len(kinds) > 1:
        raise ValueError(
            f"the manifests mix confidence kinds {kinds}, whose uncertainties do not compare; rank one kind"
        )
    latest = {r["input"]: r for r in scored}  # a resumed run's record replaces an earlier one
    keys = ("input", "uncertainty", "confidence_kind", "confidence_mean", "height", "width", "outputs")
    records = [{k: r[k] for k in keys if k in r} for r in latest.values()]
    return Ranking(_ranked(_order(records, top)), considered=len(done))


def write_ranking(records: Iterable[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write ``records`` as JSON Lines to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
