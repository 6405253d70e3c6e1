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

from ..core.escape import printable
from ..core.inference_budget import TILED_ADVICE, activation_bytes, protocol_run_size
from ..core.limits import check_limit, format_amount
from ..core.pretrained_cfg import PretrainedCfg
from ..models.pspnet import PSPNet, PSPNetConfig
from .load_report import _is_counter
from .serialization import CheckpointError
from .validation import check_tensors, validate_pretrained_cfg

__all__ = ["Resolved", "check_model_budget", "check_values", "verify_resolved"]

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
    #: the values were checked (finite floats) when the file entered the cache, and the file is
    #: unchanged since (by its stamp or hash): :func:`verify_resolved` checks the types only
    values_checked: bool = False


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
        f"{printable(k, 120)}: file {list(v.shape)} vs expected {list(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    problems += [f"unexpected {printable(k, 120)}" for k in state_dict if k not in own]
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


def check_values(resolved: Resolved) -> None:
    """Check that the weights are finite floats (:func:`~pspnet_lib.hub.validation.check_tensors`)
    and mark them checked; raises :class:`CheckpointError` naming the source.

    Where a cached file is first read (a conversion into the cache, a download's first load), so
    that the cache can record it and later loads of the unchanged file skip the check.
    """
    try:
        check_tensors(resolved.state_dict, resolved.description)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    resolved.values_checked = True


def verify_resolved(resolved: Resolved) -> None:
    """The checks every source goes through before a model is built from it.

    The architecture and ``pretrained_cfg`` are validated and the tensors must be finite floats
    (:func:`~pspnet_lib.hub.validation.check_tensors`; their types only where
    ``resolved.values_checked``: a cache entry whose values were checked when it entered the cache);
    whether the weights fit the architecture is then checked on the meta device by
    ``loading._build_and_load`` before the model is allocated. Raises :class:`CheckpointError`
    naming the source.
    """
    try:
        check_tensors(resolved.state_dict, resolved.description, values=not resolved.values_checked)
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


def check_model_budget(
    arch: PSPNetConfig, pretrained_cfg: Mapping[str, Any], what: str, probe: torch.nn.Module | None = None
) -> None:
    """Refuse, before a model is allocated, an architecture and stored protocol that together need too much.

    The parameters and buffers are counted on the meta device (no memory) against the
    ``model_bytes`` limit; with them, one inference at the largest size the stored protocol runs
    at (a whole-image protocol with a resize, or a sliding window) is estimated
    (:func:`~pspnet_lib.core.inference_budget.activation_bytes`) against the ``memory`` limit. Values
    that are each within their bounds (``head_channels=8192``, ``resize=[8192, 8192]``) are refused
    together here, naming them, the limit and its override (:mod:`pspnet_lib.core.limits`).

    ``probe``: the model of ``arch`` built on the meta device, if the caller has it.

    Raises:
        ResourceLimitError: (a ``ValueError``) one line naming ``what``.
    """
    if probe is None:
        with torch.device("meta"):
            probe = PSPNet(arch)
    count = sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))
    weights = 4 * count  # float32, as built
    widths = ", ".join(f"{k}={getattr(arch, k)}" for k in ("head_channels", "ppm_channels", "aux_channels"))
    model = f"a {arch.backbone} PSPNet with {arch.num_classes} classes and {widths} ({count:,} parameters)"
    check_limit("model_bytes", weights, f"{what}: {model}", "check the file's architecture config")
    try:
        protocol = PretrainedCfg.from_dict(dict(pretrained_cfg), arch.in_channels, what=what).protocol
    except ValueError:
        return  # reported, naming the key, by the pretrained_cfg checks
    if protocol.mode == "whole" and protocol.resize is None:
        return  # the run size is the picture's: checked at inference (core.inference_budget)
    long_side, short_side = protocol.resize or (protocol.crop or (1, 1))
    height, width = protocol_run_size(short_side, long_side, protocol)
    if protocol.mode == "slide":
        assert protocol.crop is not None  # checked by InferenceProtocol
        height, width = min(height, protocol.crop[0]), min(width, protocol.crop[1])
    needed = weights + activation_bytes(arch, height, width)
    check_limit(
        "memory",
        needed,
        f"{what}: {model} ({format_amount(weights, 'bytes')}) run at up to {width}x{height} by its stored "
        f"{protocol.mode} protocol",
        f"store a smaller protocol (pretrained_cfg={{'inference': ...}}) or {TILED_ADVICE.split(', or ')[0]}",
    )
