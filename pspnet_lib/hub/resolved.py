"""What a weights source resolves to (:class:`Resolved`) and the checks every source goes through.

A source (zoo name, file, folder, URL, ``hf-hub:``) becomes a state dict in this library's
layout, an architecture dict and a ``pretrained_cfg``; :func:`verify_resolved` validates them
(:meth:`pspnet_lib.core.pretrained_cfg.PretrainedCfg.from_dict` for the ``pretrained_cfg``)
before a model is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.pretrained_cfg import PretrainedCfg
from ..models.pspnet import PSPNet, PSPNetConfig
from .load_report import _is_counter
from .serialization import CheckpointError
from .validation import check_tensors, validate_pretrained_cfg

__all__ = ["Resolved", "verify_resolved"]

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(PSPNetConfig)}


@dataclass
class Resolved:
    """A source turned into weights in this library's layout plus what is known about them."""

    state_dict: Mapping[str, torch.Tensor]
    config: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    description: str
    backbone_only: bool = False
    #: where settings came from (see LoadReport.settings); unnamed ones came with the weights
    sources: dict[str, str] = field(default_factory=dict)


def _has_head(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("decode_head.") for k in state_dict)


def _default_pretrained_cfg(in_channels: int = 3, **extra: Any) -> dict[str, Any]:
    """The stored form of :class:`PretrainedCfg`'s default mean/std for ``in_channels``, plus ``extra``."""
    defaults = PretrainedCfg(in_channels=in_channels)
    return {"mean": list(defaults.mean), "std": list(defaults.std), **extra}


def _fill_stats(pretrained_cfg: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Write the default mean/std (for ``config``'s input channels) into a stored cfg lacking them."""
    for key, value in _default_pretrained_cfg(int(config.get("in_channels") or 3)).items():
        pretrained_cfg.setdefault(key, value)
    return pretrained_cfg


def _check_fits(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], what: str) -> None:
    """Verify (on the meta device: no memory, no compute) that converted weights fit ``config``."""
    probe = dict(config)
    probe.setdefault("num_classes", 1)
    arch = PSPNetConfig.from_dict(probe, source=what)  # validated before the meta-device build
    with torch.device("meta"):
        model = PSPNet(arch)
    own = model.state_dict()
    if not _has_head(state_dict):
        own = {k: v for k, v in own.items() if k.startswith("backbone.")}
    problems = [
        f"{k}: file {list(v.shape)} vs expected {list(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    problems += [f"unexpected {k}" for k in state_dict if k not in own]
    problems += [f"missing {k}" for k in own if k not in state_dict and not _is_counter(k)]
    if problems:
        raise CheckpointError(f"{what} does not match its registered architecture: {'; '.join(problems[:5])}")


def _checked_record(config: Any, pretrained_cfg: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate an architecture dict and a ``pretrained_cfg`` read from a file (unknown architecture keys: a warning)."""
    try:
        arch = PSPNetConfig.from_dict(config, source=source, unknown="warn")
        cfg = validate_pretrained_cfg(pretrained_cfg, source, in_channels=arch.in_channels)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return {k: v for k, v in dict(config).items() if k in _CONFIG_FIELDS}, cfg


def verify_resolved(resolved: Resolved) -> None:
    """The checks every source goes through before a model is built from it.

    The architecture and ``pretrained_cfg`` are validated and the tensors must be finite floats
    (:func:`~pspnet_lib.hub.validation.check_tensors`); whether the weights fit the architecture
    is then checked on the meta device by :func:`_build_and_load` before the model is allocated.
    Raises :class:`CheckpointError` naming the source.
    """
    try:
        check_tensors(resolved.state_dict, resolved.description)
        in_channels = resolved.config.get("in_channels") if isinstance(resolved.config, Mapping) else None
        resolved.pretrained_cfg = validate_pretrained_cfg(
            resolved.pretrained_cfg,
            resolved.description,
            in_channels=in_channels if isinstance(in_channels, int) else None,
        )
        PSPNetConfig.from_dict(
            {"num_classes": 1, **{k: v for k, v in resolved.config.items() if k in _CONFIG_FIELDS}},
            source=resolved.description,
        )
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
