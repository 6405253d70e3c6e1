"""Reading local weights files and folders into a :class:`~pspnet_lib.hub.resolved.Resolved`.

``save_pretrained`` folders (``config.json`` + ``model.safetensors``), ``.safetensors`` with
this library's metadata, the Trainer's ``.pt`` checkpoints (architecture and ``pretrained_cfg``
as recorded), released zoo files recognised by name or sha256, and checkpoints of other layouts
(settings found in the zoo, the mmseg meta config, CLASSES/PALETTE, the tensors' shapes, the
layout's defaults: docs/weights.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import parse_json, read_json
from ..core.constants import CHECKPOINT_FORMAT
from ..models.pspnet import PSPNetConfig
from .converters import FORMATS, LAYOUT_DEFAULTS, convert_state_dict, detect_format, infer_config, select_ema
from .download import sha256_file
from .mmseg_config import read_checkpoint_config
from .registry import find_weights_for_file
from .resolved import (
    _CONFIG_FIELDS,
    Resolved,
    _check_fits,
    _checked_record,
    _default_pretrained_cfg,
    _fill_stats,
    _has_head,
)
from .serialization import CheckpointError, check_content_digest, extract_state_dict, read_checkpoint, read_safetensors
from .validation import warn_unknown

__all__ = ["read_pretrained_folder"]

logger = logging.getLogger(__name__)


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
        _check_fits(state_dict, config, f"{path} ({weights.name})")
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
    pretrained_cfg = _default_pretrained_cfg(int(config.get("in_channels") or 3), source=description, source_format=fmt)
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
    if set(data) <= _CONFIG_FIELDS:  # a bare PSPNetConfig dict
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


def _resolve_path(path: Path, fmt: str | None, trust_pickle: bool) -> Resolved:
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
