"""Loading a state dict into a model with a report on every key (:class:`LoadReport`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..core.escape import printable

__all__ = ["CLASSIFIER_KEYS", "LoadReport", "load_weights"]

logger = logging.getLogger(__name__)


CLASSIFIER_KEYS = (
    "decode_head.classifier.weight",
    "decode_head.classifier.bias",
    "aux_head.classifier.weight",
    "aux_head.classifier.bias",
)


@dataclass
class LoadReport:
    """What :func:`load_weights` did with each state-dict entry.

    Attributes:
        loaded: model keys filled from the checkpoint.
        reinitialised: model keys deliberately left freshly initialised (new classifiers after a
            ``num_classes`` change, heads on top of backbone-only weights, an aux head the
            checkpoint lacks).
        missing: model keys the checkpoint should have held but did not.
        unexpected: checkpoint keys with no place in the model.
        mismatched: ``(key, checkpoint shape, model shape)`` for keys whose shapes differ.
        discarded: checkpoint keys dropped on request (the aux head with ``aux=False``).
        adapted: checkpoint keys changed to fit the model before loading, with what was done
            (the first convolution of RGB weights adapted to another input-channel count, see
            :mod:`pspnet_lib.hub.input_conv`); they are in ``loaded`` too.
        settings: where each setting of the model came from, by name (``PSPNetConfig`` fields and
            ``pretrained_cfg`` keys): ``"argument"``, ``"zoo entry <name> (by file name)"``,
            ``"checkpoint meta config"``, ``"checkpoint meta CLASSES"``, ``"weights"`` (read
            from the tensors' shapes), ``"default for <format> checkpoints"``, ...
    """

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        parts = [f"{len(self.loaded)} loaded"]
        for name in ("reinitialised", "missing", "unexpected", "mismatched", "discarded"):
            items = getattr(self, name)
            if items:
                shown = [
                    printable(i, 120) if isinstance(i, str) else f"{printable(i[0], 120)} {i[1]}->{i[2]}"
                    for i in items[:4]
                ]
                more = f", ... {len(items) - 4} more" if len(items) > 4 else ""
                parts.append(f"{len(items)} {name} ({', '.join(shown)}{more})")
        if self.adapted:
            parts.append(f"{len(self.adapted)} adapted ({'; '.join(f'{k}: {v}' for k, v in self.adapted.items())})")
        return "; ".join(parts)


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    reinitialise: Iterable[str] = (),
    discard: Iterable[str] = (),
    source: str = "checkpoint",
) -> LoadReport:
    """Copy ``state_dict`` into ``model`` and report on every key.

    Args:
        reinitialise: model keys that are expected not to be loaded (their checkpoint values, if
            any, are skipped, and they keep their fresh initialisation).
        discard: checkpoint keys to drop silently.
        strict: raise ``ValueError`` listing the first offending keys and shapes if anything is
            missing, unexpected or of another shape; with False, load what fits and log the rest.

    BatchNorm ``num_batches_tracked`` counters absent from a checkpoint are not reported as
    missing (they carry no learned value).
    """
    reinit = set(reinitialise)
    drop = set(discard)
    own = model.state_dict()
    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in drop:
            report.discarded.append(key)
        elif key in reinit:
            continue
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            to_load[key] = value
    for key in own:
        if key in to_load:
            report.loaded.append(key)
        elif key in reinit:
            report.reinitialised.append(key)
        elif key not in state_dict and not _is_counter(key):
            report.missing.append(key)
    if strict and not report.ok:
        raise ValueError(_mismatch_message(report, own, state_dict, source))
    if not report.ok:
        logger.warning("loading %s with strict=False: %s", source, report)
    # strict=False here: the report above already accounts for every key.
    model.load_state_dict(to_load, strict=False)
    return report


def _mismatch_message(report: LoadReport, own: Mapping, theirs: Mapping, source: str) -> str:
    lines = [f"the weights in {source} do not fit the model (strict=True)"]
    if report.mismatched:
        shown = ", ".join(
            f"{printable(k, 120)}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:5]
        )
        lines.append(f"{len(report.mismatched)} shape mismatch(es), e.g. {shown}")
    if report.missing:
        shown = ", ".join(f"{printable(k, 120)} {list(own[k].shape)}" for k in report.missing[:5])
        lines.append(f"{len(report.missing)} key(s) missing from the checkpoint, e.g. {shown}")
    if report.unexpected:
        shown = ", ".join(f"{printable(k, 120)} {list(theirs[k].shape)}" for k in report.unexpected[:5])
        lines.append(f"{len(report.unexpected)} unexpected key(s), e.g. {shown}")
    lines.append(
        "check the overrides (they must agree with the weights), the format= of the file, or pass "
        "num_classes=K to replace the classifiers; strict=False loads only what fits"
    )
    return "; ".join(lines)  # one line: the CLI shows it as it is
