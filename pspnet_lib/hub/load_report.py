"""Loading a state dict into a model with a report on every key (:class:`LoadReport`), into an existing
model (:func:`load_weights`) or one built for it without initialising what is loaded (:func:`build_loaded`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn as nn

from ..core.escape import printable

__all__ = ["CLASSIFIER_KEYS", "LoadReport", "build_loaded", "load_weights"]

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
    missing (they carry no learned value). :func:`build_loaded` builds a model and loads it
    without initialising what the load overwrites.
    """
    report, to_load = _match(model, state_dict, reinitialise, discard, strict, source)
    # strict=False here: the report above already accounts for every key.
    model.load_state_dict(to_load, strict=False)
    return report


def _match(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    reinitialise: Iterable[str],
    discard: Iterable[str],
    strict: bool,
    source: str,
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """``(report, to_load)``: what loading ``state_dict`` into ``model`` does with each key (raises if strict and not ok)."""
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
    return report, to_load


ModelT = TypeVar("ModelT", bound=nn.Module)


def build_loaded(
    build: Callable[[], ModelT],
    state_dict: Mapping[str, torch.Tensor],
    *,
    meta_model: ModelT | None = None,
    strict: bool = True,
    reinitialise: Iterable[str] = (),
    discard: Iterable[str] = (),
    source: str = "checkpoint",
) -> tuple[ModelT, LoadReport]:
    """``build()`` with ``state_dict`` loaded into it, without initialising what the load overwrites.

    The model is first built on the meta device (no memory, no initialisation; ``meta_model`` when
    the caller built it there already), and the keys are matched on it: with ``strict`` a misfit
    is a ``ValueError`` (as :func:`load_weights`) before anything is allocated. Then:

    * if the load overwrites every parameter and buffer (BatchNorm counters a checkpoint lacks
      start at 0, as built), the meta model takes the weights themselves
      (``load_state_dict(assign=True)``): nothing is initialised only to be overwritten, and
      nothing is copied. A weight is copied into memory of its own instead where the model could
      not keep it as it is: another dtype or device than built, not contiguous, a view into a larger
      storage, or sharing memory with another weight (tied in the file);
    * otherwise (keys reinitialised, or missing with ``strict=False``, buffers that are not in a
      state dict, tensors a model shares between names) ``build()`` makes the model with its own
      initialisation and the weights are copied in, exactly as :func:`load_weights` does: what is
      not loaded keeps that initialisation.

    The result equals ``load_weights(build(), state_dict, ...)`` value for value; only the
    first way draws nothing from torch's random number generator. ``state_dict`` should hold
    tensors read for this model (the model may keep them).
    """
    if meta_model is None:
        with torch.device("meta"):
            meta_model = build()
    report, to_load = _match(meta_model, state_dict, reinitialise, discard, strict, source)
    if _fills(meta_model, to_load) and _assign(meta_model, to_load):
        return meta_model, report
    model = build()
    model.load_state_dict(to_load, strict=False)
    return model, report


def _fills(model: nn.Module, to_load: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``to_load`` gives every parameter and buffer of ``model`` its value."""
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    if len({id(t) for _, t in tensors}) != len(tensors):
        return False  # tied: one tensor under several names stays one only if built so
    own = model.state_dict(keep_vars=True)
    if any(name not in own for name, _ in tensors) or not all(isinstance(v, torch.Tensor) for v in own.values()):
        return False  # a non-persistent buffer or a module's extra state: only the constructor makes them
    return all(key in to_load or _is_counter(key) for key in own)


def _assign(model: nn.Module, to_load: Mapping[str, torch.Tensor]) -> bool:
    """Materialise the meta-built ``model`` with the tensors of ``to_load``; False if any stayed on meta."""
    device = torch.empty(()).device  # where build() puts tensors (torch.set_default_device)
    own = model.state_dict(keep_vars=True)
    seen: set[int] = set()
    tensors = {}
    with torch.no_grad():
        for key, like in own.items():
            value = to_load.get(key)
            if value is None:  # a BatchNorm counter the checkpoint lacks: 0, as built
                tensors[key] = torch.zeros(like.shape, dtype=like.dtype, device=device)
            elif _keepable(value, like.dtype, device, seen):
                tensors[key] = value
            else:  # what load_state_dict's copy into the built tensor makes of it
                tensors[key] = torch.empty(like.shape, dtype=like.dtype, device=device).copy_(value)
    model.load_state_dict(tensors, strict=True, assign=True)
    return not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def _keepable(value: torch.Tensor, dtype: torch.dtype, device: torch.device, seen: set[int]) -> bool:
    """Whether a model may hold ``value`` itself: a plain dense tensor of its dtype and device, alone
    in its storage, contiguous (what a copy into a freshly built tensor would make of it)."""
    if type(value) is not torch.Tensor or value.requires_grad or value.layout != torch.strided:
        return False
    if value.dtype != dtype or value.device != device or not value.is_contiguous() or value.storage_offset():
        return False
    storage = value.untyped_storage()
    if storage.nbytes() != value.numel() * value.element_size() or storage.data_ptr() in seen:
        return False
    if storage.nbytes():
        seen.add(storage.data_ptr())
    return True


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
