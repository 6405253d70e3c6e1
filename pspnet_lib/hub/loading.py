"""``load_pretrained``: one call from any released checkpoint (or your own) to a ready PSPNet."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.constants import IMAGENET_MEAN, IMAGENET_STD
from ..models.pspnet import PSPNet, PSPNetConfig
from .converters import FORMATS, LAYOUT_DEFAULTS, convert_state_dict, detect_format, infer_config, select_ema
from .download import (
    OfflineError,
    default_cache_dir,
    discard_unreadable_download,
    fetch_url,
    fetch_weights_file,
    load_cached,
    lock_for,
    save_cached,
    sha256_file,
    tidy_entry,
)
from .mmseg_config import read_checkpoint_config
from .registry import Weights, find_weights_for_file, get_weights, resolve_name
from .serialization import CheckpointError, extract_state_dict, read_checkpoint, read_safetensors
from .validation import check_tensors, validate_pretrained_cfg, warn_unknown

__all__ = ["LoadReport", "load_pretrained", "load_weights", "build_with_backbone_weights", "resolve_source", "Resolved"]

logger = logging.getLogger(__name__)

CLASSIFIER_KEYS = (
    "decode_head.classifier.weight",
    "decode_head.classifier.bias",
    "aux_head.classifier.weight",
    "aux_head.classifier.bias",
)
#: pretrained_cfg entries that describe the original classes; dropped when num_classes changes.
_CLASS_SPECIFIC = (
    "classes",
    "palette",
    "metrics",
    "dataset",
    "dataset_title",
    "reduce_zero_label",
    "label_convention",
    "num_classes",
)

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(PSPNetConfig)}


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

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        parts = [f"{len(self.loaded)} loaded"]
        for name in ("reinitialised", "missing", "unexpected", "mismatched", "discarded"):
            items = getattr(self, name)
            if items:
                shown = [i if isinstance(i, str) else f"{i[0]} {i[1]}->{i[2]}" for i in items[:4]]
                more = f", ... {len(items) - 4} more" if len(items) > 4 else ""
                parts.append(f"{len(items)} {name} ({', '.join(shown)}{more})")
        return "; ".join(parts)


@dataclass
class Resolved:
    """A source turned into weights in this library's layout plus what is known about them."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    description: str
    backbone_only: bool = False
    #: where settings came from (see LoadReport.settings); unnamed ones came with the weights
    sources: dict[str, str] = field(default_factory=dict)


# --- loading a state dict into a model, with a report ---


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
    lines = [f"the weights in {source} do not fit the model (strict=True):"]
    if report.mismatched:
        shown = ", ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:5])
        lines.append(f"  {len(report.mismatched)} shape mismatch(es), e.g. {shown}")
    if report.missing:
        shown = ", ".join(f"{k} {list(own[k].shape)}" for k in report.missing[:5])
        lines.append(f"  {len(report.missing)} key(s) missing from the checkpoint, e.g. {shown}")
    if report.unexpected:
        shown = ", ".join(f"{k} {list(theirs[k].shape)}" for k in report.unexpected[:5])
        lines.append(f"  {len(report.unexpected)} unexpected key(s), e.g. {shown}")
    lines.append(
        "Check the overrides (they must agree with the weights), the format= of the file, or pass "
        "num_classes=K to replace the classifiers; strict=False loads only what fits."
    )
    return "\n".join(lines)


# --- resolving a source to (state dict, config, pretrained_cfg) ---


def _has_head(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("decode_head.") for k in state_dict)


def _default_pretrained_cfg(**extra: Any) -> dict[str, Any]:
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **extra}


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


def _resolve_zoo(
    weights: Weights, cache_dir: Path, *, local_files_only: bool, progress: bool | None, trust_pickle: bool
) -> Resolved:
    backbone_only = weights.task == "backbone"

    problems: list[str] = []

    def from_cache(discard: bool) -> Resolved | None:
        problems.clear()
        cached = load_cached(weights, cache_dir, discard=discard, problems=problems)
        if cached is None:
            return None
        tensors, record = cached
        logger.debug("loaded %s from the cache (%s)", weights.name, cache_dir)
        return Resolved(tensors, record["config"], record["pretrained_cfg"], weights.name, backbone_only)

    # Cache files are only ever renamed into place, so reading needs no lock (and works on a
    # read-only cache). An entry that does not verify is only removed under the lock: without it,
    # this could be another process's rebuild caught between its two renames.
    tidy_entry(weights, cache_dir)
    resolved = from_cache(discard=False)
    if resolved is not None:
        return resolved
    with lock_for(weights, cache_dir):
        resolved = from_cache(discard=True)  # another process may have finished meanwhile
        if resolved is not None:
            return resolved
        try:
            path = fetch_weights_file(weights, cache_dir, local_files_only=local_files_only, progress=progress)
        except OfflineError as exc:
            if not problems:
                raise
            raise OfflineError(
                f"the cached converted weights did not verify and were removed ({problems[0]}); rebuilding them needs "
                f"the original checkpoint: {exc}"
            ) from None
        raw, _ = extract_state_dict(read_checkpoint(path, trust_pickle=trust_pickle), str(path))
        state_dict = convert_state_dict(raw, weights.format)
        config = dict(weights.config) if backbone_only else PSPNetConfig.from_dict(weights.config).to_dict()
        _check_fits(state_dict, config, f"{path} ({weights.name})")
        pretrained_cfg = weights.pretrained_cfg()
        try:
            save_cached(weights, cache_dir, state_dict, config, pretrained_cfg, sha256_file(path))
            logger.info(
                "converted %s and cached it as %s.safetensors in %s", weights.name, weights.cache_stem, cache_dir
            )
        except OSError as exc:  # e.g. a read-only shared cache: use the conversion without keeping it
            logger.warning("converted %s but could not cache it in %s: %s", weights.name, cache_dir, exc)
        return Resolved(state_dict, config, pretrained_cfg, weights.name, backbone_only)


def _classes_from_mmseg_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Class names / palette that mmsegmentation stores in a checkpoint's ``meta``."""
    out: dict[str, Any] = {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), Mapping) else {}
    classes = meta.get("CLASSES") or dataset_meta.get("classes")
    palette = meta.get("PALETTE") or dataset_meta.get("palette")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        out["classes"] = [c.strip() for c in classes]
    if isinstance(palette, (list, tuple)) and all(isinstance(c, (list, tuple)) and len(c) == 3 for c in palette):
        out["palette"] = [[int(v) for v in c] for c in palette]
    return out


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
    pretrained_cfg = _default_pretrained_cfg(source=description, source_format=fmt)
    sources["mean"] = sources["std"] = "default (ImageNet)"
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
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


def _checked_record(config: Any, pretrained_cfg: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate an architecture dict and a ``pretrained_cfg`` read from a file (unknown architecture keys: a warning)."""
    try:
        arch = PSPNetConfig.from_dict(config, source=source, unknown="warn")
        cfg = validate_pretrained_cfg(pretrained_cfg, source, in_channels=arch.in_channels)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return {k: v for k, v in dict(config).items() if k in _CONFIG_FIELDS}, cfg


def _json_entry(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(metadata[key])
    except ValueError as exc:
        raise CheckpointError(f"{path}: safetensors metadata {key!r} is not valid JSON ({exc})") from None


def read_pretrained_folder(config_path: Path, weights_path: Path, description: str) -> Resolved:
    """A ``save_pretrained`` pair of files (``config.json`` + ``model.safetensors``)."""
    config, pretrained_cfg = _read_config_json(config_path)
    _check_weights_file(weights_path)
    tensors, _ = read_safetensors(weights_path)
    pretrained_cfg.setdefault("mean", list(IMAGENET_MEAN))
    pretrained_cfg.setdefault("std", list(IMAGENET_STD))
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
        tensors = {k: v for k, v in obj["model"].items() if isinstance(v, torch.Tensor)}
        config, pretrained_cfg = _checked_record(obj["model_config"], obj.get("pretrained_cfg"), str(path))
        pretrained_cfg.setdefault("mean", list(IMAGENET_MEAN))
        pretrained_cfg.setdefault("std", list(IMAGENET_STD))
        logger.info("read %s as a pspnet train checkpoint (iteration %s)", path, obj.get("iteration"))
        return Resolved(tensors, config, pretrained_cfg, str(path), backbone_only=not _has_head(tensors))
    raw, meta = extract_state_dict(obj, str(path))
    return _from_state_dict(raw, fmt, str(path), meta, path=path)


_METADATA_KEYS = {"pspnet_lib.config", "pspnet_lib.pretrained_cfg"}


def _check_weights_file(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is a folder or special file, not a safetensors file")


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


def _is_train_checkpoint(obj: Any) -> bool:
    from ..core.constants import CHECKPOINT_FORMAT

    return (
        isinstance(obj, Mapping)
        and obj.get("format") == CHECKPOINT_FORMAT
        and isinstance(obj.get("model_config"), Mapping)
        and isinstance(obj.get("model"), Mapping)
    )


_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".json")


def _looks_like_path(source: str) -> bool:
    """Whether a string that is no zoo name was meant as a file or folder rather than a zoo name."""
    return (
        any(sep in source for sep in ("/", "\\", os.sep))
        or source.startswith((".", "~"))
        or Path(source).suffix.lower() in _WEIGHT_SUFFIXES
    )


_HF_RE = re.compile(r"^hf-hub:(?P<repo>[\w.\-]+/[\w.\-]+)(?:@(?P<rev>[\w.\-/]+))?$")


def resolve_source(
    source: str | os.PathLike,
    *,
    format: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    progress: bool | None = None,
    trust_pickle: bool = False,
) -> Resolved:
    """Turn any supported source into weights in this library's layout (see :func:`load_pretrained`)."""
    if isinstance(source, Weights):
        source = source.name
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source:
        raise TypeError(
            f"source must be a zoo name, 'hf-hub:org/repo', a path or a URL, got {type(source).__name__}: {source!r}"
        )
    if revision is not None and not source.startswith("hf-hub:"):
        raise ValueError(f"revision= applies to 'hf-hub:' sources only, not to {source!r}")
    if source.startswith("hf-hub:"):
        match = _HF_RE.match(source)
        if not match:
            raise ValueError(
                f"malformed Hub source {source!r}; expected 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'"
            )
        if match["rev"] and revision and match["rev"] != revision:
            raise ValueError(f"{source!r} names revision {match['rev']!r} but revision={revision!r} was passed too")
        if format not in (None, "pspnet_lib"):
            raise ValueError("format= applies to checkpoint files, not to Hub repositories (always pspnet_lib)")
        from .hf import resolve_hf

        return resolve_hf(
            match["repo"],
            revision=match["rev"] or revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            progress=progress,
        )
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", source):
        url_cache = None if cache_dir is None else Path(cache_dir)
        path = fetch_url(source, url_cache, local_files_only=local_files_only, progress=progress)
        try:
            return _resolve_path(path, format, trust_pickle)
        except CheckpointError as exc:  # a wrong file never stays cached under the URL's name
            raise discard_unreadable_download(source, path, url_cache, exc) from None
    try:
        name = resolve_name(source)
        unknown_name = None
    except ValueError as exc:
        name, unknown_name = None, str(exc)
    if name is None:
        path = Path(source).expanduser()
        if not path.exists():
            if _looks_like_path(source):
                parent = next((p for p in path.absolute().parents if p.exists()), None)
                missing = f"there is no file or folder {path.absolute()}" + (
                    f" ({parent} exists, {path.absolute().relative_to(parent)} does not)"
                    if parent and parent != Path("/")
                    else ""
                )
                repo_like = (
                    re.fullmatch(r"[\w\-][\w.\-]*/[\w.\-]+", source) and path.suffix.lower() not in _WEIGHT_SUFFIXES
                )
                hub = f"; for a Hugging Face repository write 'hf-hub:{source}'" if repo_like else ""
                raise ValueError(
                    f"cannot load {source!r}: it is not a zoo name, an existing file or folder, a URL or an "
                    f"'hf-hub:' id; {missing}{hub}"
                )
            raise ValueError(
                f"cannot load {source!r}: it is not a zoo name, an existing file or folder, a URL or an 'hf-hub:' id. "
                f"{unknown_name}"
            )
        return _resolve_path(path, format, trust_pickle)
    if format is not None:
        raise ValueError(f"format= applies to checkpoint files; the zoo entry {name!r} has a known format")
    return _resolve_zoo(
        get_weights(name),
        default_cache_dir(cache_dir),
        local_files_only=local_files_only,
        progress=progress,
        trust_pickle=trust_pickle,
    )


# --- the public entry points ---


def load_pretrained(
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    aux: bool | None = None,
    strict: bool = True,
    format: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    progress: bool | None = None,
    trust_pickle: bool = False,
    pretrained_cfg: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> PSPNet:
    """Build a PSPNet and load weights from any supported source.

    Args:
        source: one of

            * a zoo name or alias (``list_pretrained()``), e.g. ``"pspnet_r50-d8_ade20k-512x512-80k"``:
              downloaded once, verified, converted and cached as safetensors;
            * ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a repository written by
              ``save_pretrained`` / ``push_to_hub`` (through ``huggingface_hub``'s cache);
            * a local ``save_pretrained`` folder, a ``.safetensors`` file, or a checkpoint file
              of another layout (mmsegmentation, the author's semseg, torchvision or
              mmsegmentation ImageNet ResNets, ...), or a training checkpoint (``.pt``) written
              by the Trainer (architecture and ``pretrained_cfg`` as recorded in it);
            * an ``https://`` / ``http://`` / ``file://`` URL of any of those files.
        num_classes: replace both classifiers with freshly initialised ones for ``num_classes``
            classes (everything else is loaded). Required for backbone-only weights.
        aux: keep (True) or drop (False) the auxiliary head; default: as in the weights.
        strict: any missing, unexpected or mis-shaped key (other than the classifiers being
            replaced) is an error listing the first offenders; False loads what fits.
        format: the checkpoint layout (``mmseg``, ``semseg``, ``torchvision``,
            ``mmseg_backbone``, ``semseg_backbone``, ``pspnet_lib``) when detection from the keys
            should be overridden; files only.
        revision: Hub branch, tag or commit (``hf-hub:`` sources only).
        cache_dir: for zoo names and URLs the folder of downloads and converted files (default
            ``torch.hub.get_dir()/checkpoints``); for ``hf-hub:`` the Hugging Face cache.
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        progress: a download progress bar: None = on a terminal only (and not with TQDM_DISABLE or
            HF_HUB_DISABLE_PROGRESS_BARS set), True = always, False = never.
        trust_pickle: allow arbitrary pickled objects in ``.pth`` files. Only for files you
            trust: unpickling can run code. Off by default; the default reader accepts tensors,
            containers, numpy scalars and OpenMMLab bookkeeping objects (as inert placeholders).
        pretrained_cfg: entries merged over the loaded ``model.pretrained_cfg`` (e.g. your
            ``classes`` for a bare checkpoint).
        device: move the model there (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); checked
            before anything is read or downloaded: a device this machine lacks is a
            ``RuntimeError``. Default: the CPU.
        **overrides: :class:`~pspnet_lib.PSPNetConfig` fields the weights cannot tell, e.g.
            ``align_corners=True``, ``output_stride=32, dilations=[1, 1, 2, 4]``. Defaults per layout
            are in :data:`pspnet_lib.hub.converters.LAYOUT_DEFAULTS` (docs/weights.md).

    Returns the model in eval mode, with ``model.pretrained_cfg`` (preprocessing, classes,
    palette, inference protocol) and ``model.load_report`` (a :class:`LoadReport`).

    Example::

        model = load_pretrained("pspnet_r50-d8_ade20k-512x512-80k")
        model = load_pretrained("pspnet_r50-d8_cityscapes-512x1024-80k", num_classes=5)  # fine-tune
        model = load_pretrained("train_epoch_100.pth")            # hszhao/semseg, detected
    """
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown load_pretrained option(s) {unknown}; PSPNetConfig fields are: {', '.join(sorted(_CONFIG_FIELDS))}"
        )
    for key in ("num_classes", "aux"):
        if key in overrides:  # pragma: no cover - they are named parameters
            raise ValueError(f"pass {key} as the named argument")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if device is not None:
        _check_device(device)  # before loading (and perhaps downloading) the weights
    resolved = resolve_source(
        source,
        format=format,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        progress=progress,
        trust_pickle=trust_pickle,
    )
    verify_resolved(resolved)
    if pretrained_cfg is not None:
        pretrained_cfg = validate_pretrained_cfg(pretrained_cfg, "the pretrained_cfg argument")
    model = _build_and_load(
        resolved, num_classes=num_classes, aux=aux, strict=strict, overrides=overrides, extra_cfg=pretrained_cfg
    )
    return model.to(device) if device is not None else model


def _check_device(device: str | torch.device) -> None:
    """Raise a one-line error for a device this machine does not have (torch's own is about drivers)."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but CUDA is not available; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but MPS is not available; use --device cpu")


def _build_and_load(
    resolved: Resolved,
    *,
    num_classes: int | None,
    aux: bool | None,
    strict: bool,
    overrides: Mapping[str, Any],
    extra_cfg: Mapping[str, Any] | None,
    norm_layer: Callable[[int], nn.Module] | None = None,
) -> PSPNet:
    config = {k: v for k, v in resolved.config.items() if k in _CONFIG_FIELDS}
    checkpoint_classes = config.get("num_classes") if not resolved.backbone_only else None
    config.update(overrides)
    if resolved.backbone_only and num_classes is None:
        raise ValueError(
            f"{resolved.description} holds backbone weights only (no segmentation heads); pass num_classes=K to "
            "build a PSPNet whose heads are freshly initialised for K classes"
        )
    if num_classes is not None:
        config["num_classes"] = num_classes
    has_aux = any(k.startswith("aux_head.") for k in resolved.state_dict)
    if aux is not None:
        config["aux"] = aux
    elif not resolved.backbone_only:
        config["aux"] = has_aux
    pretrained_cfg = dict(resolved.pretrained_cfg)
    arch = PSPNetConfig.from_dict(config)

    def plan(model: PSPNet) -> tuple[set[str], set[str]]:
        """``(reinitialise, discard)`` for ``model``."""
        reinit: set[str] = set()
        own = model.state_dict()
        if resolved.backbone_only:
            reinit = {k for k in own if not k.startswith("backbone.")}
        else:
            if checkpoint_classes is not None and model.config.num_classes != checkpoint_classes:
                reinit |= {k for k in CLASSIFIER_KEYS if k in own}
            if model.aux_head is not None and not has_aux:
                reinit |= {k for k in own if k.startswith("aux_head.")}
        discard = {k for k in resolved.state_dict if k.startswith("aux_head.")} if model.aux_head is None else set()
        return reinit, discard

    if strict:
        # The fit check first, on the meta device (no memory, no compute): weights that do not fit
        # the architecture a file describes fail before its model is allocated.
        with torch.device("meta"):
            probe = PSPNet(copy.deepcopy(arch), norm_layer=norm_layer)
        reinit, discard = plan(probe)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "copying from a non-meta parameter": nothing is copied
            load_weights(
                probe,
                resolved.state_dict,
                strict=True,
                reinitialise=reinit,
                discard=discard,
                source=resolved.description,
            )
    model = PSPNet(arch, norm_layer=norm_layer)
    reinit, discard = plan(model)
    report = load_weights(
        model, resolved.state_dict, strict=strict, reinitialise=reinit, discard=discard, source=resolved.description
    )

    if resolved.backbone_only or (checkpoint_classes is not None and model.config.num_classes != checkpoint_classes):
        origin = {k: pretrained_cfg.pop(k) for k in ("name", "url", "sha256") if k in pretrained_cfg}
        for key in (*_CLASS_SPECIFIC, "task"):
            pretrained_cfg.pop(key, None)
        pretrained_cfg["adapted_from"] = origin or {"name": resolved.description}
    if extra_cfg:
        pretrained_cfg.update(extra_cfg)
    model.pretrained_cfg = pretrained_cfg
    report.settings = _settings_sources(
        resolved, model.config.to_dict(), pretrained_cfg, overrides, num_classes, aux, extra_cfg
    )
    model.load_report = report
    logger.info("loaded %s: %s", resolved.description, report)
    logger.info(
        "settings of %s: %s",
        resolved.description,
        _describe_settings(model.config.to_dict(), pretrained_cfg, report.settings),
    )
    return model.eval()


#: the settings the load log line names (the rest are in model.load_report.settings)
_LOGGED_SETTINGS = (
    "backbone",
    "num_classes",
    "output_stride",
    "dilations",
    "align_corners",
    "inference",
    "classes",
    "mean",
    "std",
)


def _settings_sources(
    resolved: Resolved,
    config: Mapping[str, Any],
    pretrained_cfg: Mapping[str, Any],
    overrides: Mapping[str, Any],
    num_classes: int | None,
    aux: bool | None,
    extra_cfg: Mapping[str, Any] | None,
) -> dict[str, str]:
    stored = f"stored with {resolved.description}"
    sources = {key: resolved.sources.get(key, stored) for key in (*config, *pretrained_cfg)}
    for key in config:
        if key not in resolved.config and key not in resolved.sources:
            sources[key] = "PSPNetConfig default"
    argued = set(overrides) | set(extra_cfg or {})
    argued |= {"num_classes"} if num_classes is not None else set()
    argued |= {"aux"} if aux is not None else set()
    sources.update({key: "argument" for key in argued if key in sources})
    return sources


def _describe_settings(config: Mapping[str, Any], pretrained_cfg: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    parts = []
    for key in _LOGGED_SETTINGS:
        value = config.get(key, pretrained_cfg.get(key))
        if value is None or key not in sources:
            continue
        shown = f"{len(value)} names" if key == "classes" else repr(value)
        parts.append(f"{key}={shown} ({sources[key]})")
    return ", ".join(parts)


def build_with_backbone_weights(
    config: Mapping[str, Any],
    weights_backbone: str | os.PathLike,
    *,
    explicit: set[str] = frozenset(),
    norm_layer: Callable[[int], nn.Module] | None = None,
    **source_options: Any,
) -> PSPNet:
    """``build_pspnet(..., weights_backbone=...)``: a PSPNet whose backbone holds ImageNet weights.

    The stem type and width follow the weights unless ``explicit`` says the caller set them; a
    conflicting depth or an explicitly different stem is an error. The heads keep their random
    initialisation, and the model stays in training mode (as built).
    """
    resolved = resolve_source(weights_backbone, **source_options)
    verify_resolved(resolved)
    state_dict = {k: v for k, v in resolved.state_dict.items() if k.startswith("backbone.")}
    if not state_dict:
        raise ValueError(f"{resolved.description} holds no backbone weights")
    found = resolved.config
    config = dict(config)
    if found.get("backbone") and config.get("backbone", "resnet50") != found["backbone"]:
        raise ValueError(
            f"weights_backbone={weights_backbone!r} holds a {found['backbone']} but the model is a "
            f"{config.get('backbone', 'resnet50')}; build it with backbone={found['backbone']!r}"
        )
    for key in ("stem", "stem_channels", "in_channels"):
        if key not in found:
            continue
        if key in explicit and config.get(key) != found[key]:
            raise ValueError(
                f"weights_backbone={weights_backbone!r} needs {key}={found[key]!r} but {key}={config.get(key)!r} was set"
                + ("; torchvision weights need stem='standard' (preset='mmseg-b')" if key == "stem" else "")
            )
        config[key] = found[key]
    model = PSPNet(PSPNetConfig.from_dict(config), norm_layer=norm_layer)
    own = model.state_dict()
    reinit = {k for k in own if not k.startswith("backbone.")}
    report = load_weights(model, state_dict, strict=True, reinitialise=reinit, source=resolved.description)
    model.pretrained_cfg = _default_pretrained_cfg(backbone_weights=resolved.description)
    model.load_report = report
    logger.info("initialised the backbone from %s: %s", resolved.description, report)
    return model
