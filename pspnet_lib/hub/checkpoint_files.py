"""What a weights source resolves to, the checks every source passes, and the readers of local files.

The loader's middle (docs/architecture.md, "One loader"): a source (zoo name, file, folder, URL,
``hf-hub:``) becomes a :class:`Resolved` (a state dict in this library's layout, an architecture
dict, a ``pretrained_cfg`` and where each setting came from); :func:`verify_resolved` validates it
before a model is built.

Files come from strangers: ``config.json``, safetensors metadata, ``pretrained_cfg`` entries and
the tensors themselves are checked here, for every source (zoo, folders, ``.safetensors``,
``hf-hub:``, ``.pth``), so that a bad value is one line naming the file and the key instead of an
allocator error, a torch overload dump at predict time, or silently wrong predictions
(:meth:`pspnet_lib.core.pretrained_cfg.PretrainedCfg.from_dict` for the ``pretrained_cfg``,
:meth:`pspnet_lib.PSPNetConfig.from_dict` for the architecture).

The files read here: ``save_pretrained`` folders (``config.json`` + ``model.safetensors``),
``.safetensors`` with this library's metadata, the Trainer's ``.pt`` checkpoints (architecture and
``pretrained_cfg`` as recorded), released zoo files recognised by name or sha256, and checkpoints
of other layouts (settings found in the zoo, the mmseg meta config, CLASSES/PALETTE, the tensors'
shapes, the layout's defaults: docs/weights.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import parse_json, read_json
from ..core.constants import CHECKPOINT_FORMAT
from ..core.escape import printable
from ..core.inference_budget import TILED_ADVICE, activation_bytes, protocol_run_size
from ..core.limits import check_limit, format_amount
from ..core.pretrained_cfg import PretrainedCfg
from ..models.pspnet import PSPNet, PSPNetConfig
from .cache import sha256_file
from .formats.converters import FORMATS, LAYOUT_DEFAULTS, convert_state_dict, detect_format, infer_config, select_ema
from .formats.mmseg_config import read_checkpoint_config
from .formats.serialization import (
    CheckpointError,
    check_content_digest,
    extract_state_dict,
    read_checkpoint,
    read_safetensors,
)
from .load_report import is_counter
from .zoo.registry import find_weights_for_file

__all__ = [
    "Resolved",
    "check_model_budget",
    "check_tensors",
    "check_values",
    "read_pretrained_folder",
    "validate_pretrained_cfg",
    "verify_resolved",
    "warn_unknown",
]

logger = logging.getLogger(__name__)


# --- the checks on what a source says (every source) ---------------------------------------


def warn_unknown(keys: Any, known: Any, source: str, what: str) -> list[str]:
    """Log one warning naming ``source`` and the keys of ``keys`` outside ``known``; returns them."""
    unknown = sorted(str(k) for k in keys if k not in known)
    if unknown:
        shown = ", ".join(printable(k, 80) for k in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        logger.warning("%s: ignoring unknown %s key(s) %s (written by another version or tool?)", source, what, shown)
    return unknown


def validate_pretrained_cfg(cfg: Any, source: str, *, in_channels: int | None = None) -> dict[str, Any]:
    """Check the entries of a ``pretrained_cfg`` that the library uses; returns it as a dict.

    The checks are :meth:`pspnet_lib.core.pretrained_cfg.PretrainedCfg.from_dict`'s: ``mean``/
    ``std`` (finite numbers, as many as the input channels or one, ``std`` positive),
    ``classes`` (strings), ``palette`` (``[r, g, b]`` integers in 0..255), ``ignore_index`` (an
    integer), ``reduce_zero_label`` (a bool), ``inference`` and ``tta`` (``mode``;
    ``resize``/``crop``/``stride`` within ``[1, MAX_SIDE]`` pixels; ``scales`` in
    ``(0, MAX_SCALE]``; ``flip`` a bool; no other keys), provenance strings. Other entries are
    descriptive and kept as they are.

    Raises ``ValueError`` in one line naming ``source``, the key, what was expected and the value.
    """
    if cfg is None:
        return {}
    PretrainedCfg.from_dict(cfg, in_channels, what=source)
    return dict(cfg)


#: Elements checked at a time (bounds the temporary of ``torch.isfinite`` to 1 MiB of booleans).
_CHUNK = 1 << 20


def _count_non_finite(value: torch.Tensor) -> tuple[int, int]:
    """``(non-finite values, values checked)`` over the stored span of ``value`` (see :func:`check_tensors`)."""
    if value.numel() == 0:
        return 0, 0
    span = 1 + sum((size - 1) * stride for size, stride in zip(value.shape, value.stride()))
    # Elements that repeat (expanded, zero strides): check the stored ones. Otherwise a flat view
    # (a copy for a strided view, never larger than the values the storage holds for it).
    flat = value.as_strided((span,), (1,)) if span < value.numel() else value.reshape(-1)
    # A finite sum means no value is NaN or Inf; it reads the values once without allocating. A
    # non-finite one (NaN, Inf, or finite values overflowing the sum) is settled by counting.
    if bool(torch.isfinite(flat.sum()).all()):
        return 0, flat.numel()
    bad = 0
    for start in range(0, flat.numel(), _CHUNK):
        bad += int((~torch.isfinite(flat[start : start + _CHUNK])).sum())
    return bad, flat.numel()


def check_tensors(state_dict: Mapping[str, Any], source: str, *, values: bool = True) -> None:
    """Weights that cannot be right are an error naming them: non-tensors, non-float weights, NaN/Inf.

    Every entry must be a floating-point tensor with only finite values, except BatchNorm's
    ``num_batches_tracked`` counters (integers). Raises ``ValueError`` naming up to 5 tensors.

    The value check reads each tensor's stored values once, in chunks: a view whose strides
    repeat elements (an expanded or zero-stride tensor from a file, whose ``numel`` may be 10^9
    over one stored value) costs what its storage holds, never ``numel``. ``values=False`` checks
    the types only (no value is read): for weights whose values were checked when they entered
    the cache and have not changed since.
    """
    wrong_type, non_finite = [], []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            wrong_type.append(f"{printable(key, 120)} ({type(value).__name__})")
        elif key.endswith("num_batches_tracked"):
            if value.is_floating_point() or value.is_complex():
                wrong_type.append(f"{printable(key, 120)} ({value.dtype}, expected an integer counter)")
        elif not value.is_floating_point():
            wrong_type.append(f"{printable(key, 120)} ({value.dtype})")
        elif values and value.device.type != "meta":
            bad, checked = _count_non_finite(value)
            if bad:
                of = f"{checked} values" if checked == value.numel() else f"{checked} stored values"
                non_finite.append(f"{printable(key, 120)} ({bad} of {of})")
    if wrong_type:
        more = f" and {len(wrong_type) - 5} more" if len(wrong_type) > 5 else ""
        raise ValueError(
            f"{source}: {len(wrong_type)} weight tensor(s) are not floating point: {', '.join(wrong_type[:5])}{more}; "
            "the file's dtypes are wrong (damaged, or a header that lies): re-export the weights"
        )
    if non_finite:
        more = f" and {len(non_finite) - 5} more" if len(non_finite) > 5 else ""
        raise ValueError(
            f"{source}: {len(non_finite)} weight tensor(s) hold NaN or Inf: {', '.join(non_finite[:5])}{more}; "
            "these weights cannot predict anything (a diverged training run or a damaged file)"
        )


# --- what a source resolves to ------------------------------------------------------------

CONFIG_FIELDS = {f.name for f in dataclasses.fields(PSPNetConfig)}


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


def default_pretrained_cfg(in_channels: int = 3, **extra: Any) -> dict[str, Any]:
    """The stored form of :class:`PretrainedCfg`'s default mean/std for ``in_channels``, plus ``extra``."""
    defaults = PretrainedCfg(in_channels=in_channels)
    return {"mean": list(defaults.mean), "std": list(defaults.std), **extra}


def _fill_stats(pretrained_cfg: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Write the default mean/std (for ``config``'s input channels) into a stored cfg lacking them."""
    for key, value in default_pretrained_cfg(int(config.get("in_channels") or 3)).items():
        pretrained_cfg.setdefault(key, value)
    return pretrained_cfg


def check_fits(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], what: str) -> None:
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
    problems += [f"missing {k}" for k in own if k not in state_dict and not is_counter(k)]
    if problems:
        raise CheckpointError(f"{what} does not match its registered architecture: {'; '.join(problems[:5])}")


def _checked_record(config: Any, pretrained_cfg: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate an architecture dict and a ``pretrained_cfg`` read from a file (unknown architecture keys: a warning)."""
    try:
        arch = PSPNetConfig.from_dict(config, source=source, unknown="warn")
        cfg = validate_pretrained_cfg(pretrained_cfg, source, in_channels=arch.in_channels)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return {k: v for k, v in dict(config).items() if k in CONFIG_FIELDS}, cfg


def check_values(resolved: Resolved) -> None:
    """Check that the weights are finite floats (:func:`check_tensors`) and mark them checked;
    raises :class:`CheckpointError` naming the source.

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
    (:func:`check_tensors`; their types only where ``resolved.values_checked``: a cache entry whose
    values were checked when it entered the cache); whether the weights fit the architecture is
    then checked on the meta device by :func:`pspnet_lib.hub.loading.load_pretrained` before the
    model is allocated. Raises :class:`CheckpointError` naming the source.
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
            {"num_classes": 1, **{k: v for k, v in resolved.config.items() if k in CONFIG_FIELDS}},
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


# --- local files and folders ----------------------------------------------------------------


def _classes_from_mmseg_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Class names / palette that mmsegmentation stores in a checkpoint's ``meta``."""
    out: dict[str, Any] = {}
    found = meta.get("dataset_meta")
    dataset_meta: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    classes = meta.get("CLASSES") or dataset_meta.get("classes")
    palette = meta.get("PALETTE") or dataset_meta.get("palette")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        out["classes"] = [c.strip() for c in classes]
    if isinstance(palette, (list, tuple)) and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_colour_value(v) for v in c) for c in palette
    ):
        out["palette"] = [[int(v) for v in c] for c in palette]
    return out


def _is_colour_value(value: Any) -> bool:
    """An integer (numpy integers included) in 0..255; a palette with anything else is ignored."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) <= 255


def _recognise_zoo_file(path: Path, state_dict: Mapping[str, torch.Tensor], description: str) -> Resolved | None:
    """A released zoo checkpoint recognised by its file name or sha256, with everything the zoo knows.

    A file downloaded with a browser keeps the upstream name; a renamed one keeps its bytes. The
    weights must fit the entry's architecture, else the file is read as any other checkpoint.
    """
    found = find_weights_for_file(path.name)
    if found is None:
        found = find_weights_for_file(sha256=sha256_file(path))
    if found is None or found[0].task != "semantic-segmentation":
        return None
    weights, how = found
    config = PSPNetConfig.from_dict(weights.config).to_dict()
    try:
        check_fits(state_dict, config, f"{path} ({weights.name})")
    except CheckpointError as exc:
        logger.warning(
            "%s has the %s of the zoo entry %s but not its architecture (%s); reading it as a plain checkpoint",
            path,
            how,
            weights.name,
            exc,
        )
        return None
    pretrained_cfg = weights.pretrained_cfg()
    origin = f"zoo entry {weights.name} (by {how})"
    logger.info(
        "recognised %s by its %s as the zoo entry %s: align_corners=%s, inference %s, %d classes",
        description,
        how,
        weights.name,
        config["align_corners"],
        pretrained_cfg.get("inference"),
        config["num_classes"],
    )
    sources = {key: origin for key in (*config, *pretrained_cfg)}
    return Resolved(state_dict, config, pretrained_cfg, description, backbone_only=False, sources=sources)


def _from_state_dict(
    raw: Mapping[str, torch.Tensor],
    fmt: str | None,
    description: str,
    meta: Mapping[str, Any] | None = None,
    path: Path | None = None,
) -> Resolved:
    """A checkpoint of another layout. Its settings are found, in this order: the zoo entry whose
    upstream file it is (file name or sha256), the config text in an mmseg checkpoint's meta,
    its CLASSES/PALETTE, the tensors' shapes, the layout's defaults (docs/weights.md)."""
    raw = select_ema({}, raw, description)  # wrapper prefixes and EMA copies of a bare state dict
    if fmt is None:
        fmt = detect_format(raw)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    state_dict = convert_state_dict(raw, fmt)
    if path is not None and fmt == "mmseg":
        zoo = _recognise_zoo_file(path, state_dict, description)
        if zoo is not None:
            return zoo
    config = infer_config(state_dict, fmt)
    defaults = LAYOUT_DEFAULTS.get(fmt, {})
    sources = {key: f"default for {fmt} checkpoints" if key in defaults else "weights" for key in config}
    pretrained_cfg = default_pretrained_cfg(int(config.get("in_channels") or 3), source=description, source_format=fmt)
    sources["mean"] = sources["std"] = (
        "default (ImageNet)" if int(config.get("in_channels") or 3) == 3 else "default (ImageNet's, averaged)"
    )
    if meta and fmt == "mmseg":
        stated = read_checkpoint_config(meta)
        if stated is not None:
            fields, extra = stated
            for key, value in fields.items():
                if key in config and key not in defaults and config[key] != value:
                    # shapes are facts; a config that disagrees describes another model
                    logger.warning(
                        "%s: its meta config says %s=%r but the weights hold %r; using the weights",
                        description,
                        key,
                        value,
                        config[key],
                    )
                    continue
                config[key] = value
                sources[key] = "checkpoint meta config"
            for key, value in extra.items():
                pretrained_cfg[key] = value
                sources[key] = "checkpoint meta config"
            logger.info(
                "read the settings of %s from its meta config: %s",
                description,
                ", ".join(f"{k}={v!r}" for k, v in {**fields, **extra}.items()) or "none",
            )
        found = _classes_from_mmseg_meta(meta)
        if found.get("classes") and len(found["classes"]) == config.get("num_classes"):
            pretrained_cfg.update(found)
            sources.update({key: "checkpoint meta CLASSES/PALETTE" for key in found})
    logger.info("read %s as a %r checkpoint", description, fmt)
    return Resolved(
        state_dict, config, pretrained_cfg, description, backbone_only=not _has_head(state_dict), sources=sources
    )


_CONFIG_JSON_KEYS = {"config", "pretrained_cfg", "library", "pspnet_lib_version"}


def _read_config_json(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, pretrained_cfg)`` from a ``save_pretrained`` ``config.json``, validated (one-line errors naming it)."""
    try:
        data = read_json(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object (got a {type(data).__name__})")
    if "config" in data:
        warn_unknown(data, _CONFIG_JSON_KEYS, str(path), "top-level")
        return _checked_record(data["config"], data.get("pretrained_cfg"), str(path))
    if set(data) <= CONFIG_FIELDS:  # a bare PSPNetConfig dict
        return _checked_record(data, None, str(path))
    raise CheckpointError(
        f"{path} is not a pspnet_lib config (expected {{'config': {{...PSPNetConfig fields...}}, 'pretrained_cfg': {{...}}}}, "
        f"got keys {sorted(data)[:8]})"
    )


def _json_entry(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return parse_json(metadata[key], f"{path}: safetensors metadata {key!r}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def read_pretrained_folder(config_path: Path, weights_path: Path, description: str) -> Resolved:
    """A ``save_pretrained`` pair of files (``config.json`` + ``model.safetensors``)."""
    config, pretrained_cfg = _read_config_json(config_path)
    _check_weights_file(weights_path)
    tensors, _ = read_safetensors(weights_path)
    _fill_stats(pretrained_cfg, config)
    return Resolved(tensors, config, pretrained_cfg, description, backbone_only=not _has_head(tensors))


def resolve_path(path: Path, fmt: str | None, trust_pickle: bool) -> Resolved:
    if path.is_dir():
        config_path, weights_path = path / "config.json", path / "model.safetensors"
        for part in (config_path, weights_path):
            if part.exists() and not part.is_file():
                raise CheckpointError(
                    f"{part} is a folder or special file, not a file; a save_pretrained folder holds "
                    "config.json and model.safetensors as files"
                )
        if not (config_path.is_file() and weights_path.is_file()):
            present = sorted(p.name for p in path.iterdir())[:10]
            hint = ""
            if (path / "model" / "config.json").is_file() or (path / "checkpoints").is_dir():
                hint = (
                    f"; it looks like a `pspnet train` run directory: use {path / 'model'} (the final model) or "
                    f"{path / 'checkpoints' / 'best.pt'}"
                )
            raise FileNotFoundError(
                f"{path} is not a save_pretrained folder: expected config.json and model.safetensors, found {present}{hint}"
            )
        return read_pretrained_folder(config_path, weights_path, str(path))
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a device, pipe or socket); pass a weights file or folder")
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.suffix.lower() == ".json":
        raise ValueError(
            f"{path} is a JSON file, not weights; pass the folder that holds it with model.safetensors "
            f"({path.parent}) or a checkpoint file"
        )
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if "pspnet_lib.config" in metadata and fmt in (None, "pspnet_lib"):
            warn_unknown(
                [k for k in metadata if k.startswith("pspnet_lib.")], _METADATA_KEYS, str(path), "safetensors metadata"
            )
            config, pretrained_cfg = _checked_record(
                _json_entry(metadata, "pspnet_lib.config", path),
                _json_entry(metadata, "pspnet_lib.pretrained_cfg", path)
                if "pspnet_lib.pretrained_cfg" in metadata
                else None,
                f"{path} (safetensors metadata)",
            )
            return Resolved(tensors, config, pretrained_cfg, str(path), backbone_only=not _has_head(tensors))
        sibling = path.with_name("config.json")
        if sibling.is_file() and fmt in (None, "pspnet_lib"):
            return read_pretrained_folder(sibling, path, str(path))
        return _from_state_dict(tensors, fmt, str(path), path=path)
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    if fmt in (None, "pspnet_lib") and _is_train_checkpoint(obj):
        # A pspnet train checkpoint records the architecture and the pretrained_cfg (classes,
        # protocol); the weights alone cannot tell align_corners, dilations or output stride.
        check_content_digest(obj, str(path))
        tensors = {k: v for k, v in obj["model"].items() if isinstance(v, torch.Tensor)}
        config, pretrained_cfg = _checked_record(obj["model_config"], obj.get("pretrained_cfg"), str(path))
        _fill_stats(pretrained_cfg, config)
        logger.info("read %s as a pspnet train checkpoint (iteration %s)", path, obj.get("iteration"))
        return Resolved(tensors, config, pretrained_cfg, str(path), backbone_only=not _has_head(tensors))
    raw, meta = extract_state_dict(obj, str(path))
    return _from_state_dict(raw, fmt, str(path), meta, path=path)


_METADATA_KEYS = {"pspnet_lib.config", "pspnet_lib.pretrained_cfg"}


def _check_weights_file(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is a folder or special file, not a safetensors file")


def _is_train_checkpoint(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and obj.get("format") == CHECKPOINT_FORMAT
        and isinstance(obj.get("model_config"), Mapping)
        and isinstance(obj.get("model"), Mapping)
    )
