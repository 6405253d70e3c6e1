"""``resolve_source``: any supported source (zoo name, ``hf-hub:``, URL, file, folder) to weights.

Zoo names are downloaded once, verified, converted and cached as safetensors
(:mod:`pspnet_lib.hub.download`); files and folders are read by
:mod:`pspnet_lib.hub.checkpoint_files`; ``hf-hub:`` repositories by :mod:`pspnet_lib.hub.hf`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..models.pspnet import PSPNetConfig
from .checkpoint_files import _resolve_path
from .converters import convert_state_dict
from .download import (
    OfflineError,
    default_cache_dir,
    discard_unreadable_download,
    fetch_original,
    fetch_url,
    load_cached,
    lock_for,
    mark_url_values_checked,
    mark_values_checked,
    save_cached,
    tidy_entry,
    url_values_checked,
)
from .hf import resolve_hf
from .registry import Weights, get_weight, resolve_name
from .resolved import Resolved, _check_fits, check_values
from .serialization import CheckpointError, extract_state_dict, read_checkpoint

__all__ = ["resolve_source", "parse_hf_source"]

logger = logging.getLogger(__name__)


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
        resolved = Resolved(tensors, record["config"], record["pretrained_cfg"], weights.name, backbone_only)
        if record.get("values_checked") is True:
            resolved.values_checked = True
        else:  # an entry written before values were checked on entry: checked once, then recorded
            check_values(resolved)
            mark_values_checked(weights, cache_dir, record)
        return resolved

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
            path, source_sha256 = fetch_original(
                weights, cache_dir, local_files_only=local_files_only, progress=progress
            )
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
        resolved = Resolved(state_dict, config, pretrained_cfg, weights.name, backbone_only)
        check_values(resolved)  # weights that cannot be right never enter the cache
        try:
            save_cached(weights, cache_dir, state_dict, config, pretrained_cfg, source_sha256, values_checked=True)
            logger.info(
                "converted %s and cached it as %s.safetensors in %s", weights.name, weights.cache_stem, cache_dir
            )
        except OSError as exc:  # e.g. a read-only shared cache: use the conversion without keeping it
            logger.warning("converted %s but could not cache it in %s: %s", weights.name, cache_dir, exc)
        return resolved


_WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".json")


def _looks_like_path(source: str) -> bool:
    """Whether a string that is no zoo name was meant as a file or folder rather than a zoo name."""
    return (
        any(sep in source for sep in ("/", "\\", os.sep))
        or source.startswith((".", "~"))
        or Path(source).suffix.lower() in _WEIGHT_SUFFIXES
    )


_HF_RE = re.compile(r"^hf-hub:(?P<repo>[\w.\-]+/[\w.\-]+)(?:@(?P<rev>[\w.\-/]+))?$")


def parse_hf_source(source: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"hf-hub:org/repo[@revision]"`` -> ``(repo, revision)``; ``ValueError`` if malformed or revisions conflict."""
    match = _HF_RE.match(source)
    if not match:
        raise ValueError(f"malformed Hub source {source!r}; expected 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
    if match["rev"] and revision and match["rev"] != revision:
        raise ValueError(f"{source!r} names revision {match['rev']!r} but revision={revision!r} was passed too")
    return match["repo"], match["rev"] or revision


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
        repo, revision = parse_hf_source(source, revision)
        if format not in (None, "pspnet_lib"):
            raise ValueError("format= applies to checkpoint files, not to Hub repositories (always pspnet_lib)")
        return resolve_hf(
            repo,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            progress=progress,
        )
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", source):
        url_cache = None if cache_dir is None else Path(cache_dir)
        path = fetch_url(source, url_cache, local_files_only=local_files_only, progress=progress)
        try:
            resolved = _resolve_path(path, format, trust_pickle)
        except CheckpointError as exc:  # a wrong file never stays cached under the URL's name
            raise discard_unreadable_download(source, path, url_cache, exc) from None
        if not source.lower().startswith(("http://", "https://")):
            return resolved  # a file:// URL: a file like any other
        # A download's values are checked at its first load and recorded, for the default reading
        # (another format= or trust_pickle may read other tensors from the same bytes).
        default = format is None and not trust_pickle
        if default and url_values_checked(path):
            resolved.values_checked = True
        else:
            check_values(resolved)
            if default:
                mark_url_values_checked(path)
        return resolved
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
            # resolve_name's advice (close zoo names, where to list them) without repeating the name
            advice = (unknown_name or "").removeprefix(f"unknown pretrained weights {source!r}.").strip()
            raise ValueError(
                f"cannot load {source!r}: it is not a zoo name, an existing file or folder, a URL or an 'hf-hub:' id. "
                f"{advice}"
            )
        return _resolve_path(path, format, trust_pickle)
    if format is not None:
        raise ValueError(f"format= applies to checkpoint files; the zoo entry {name!r} has a known format")
    return _resolve_zoo(
        get_weight(name),
        default_cache_dir(cache_dir),
        local_files_only=local_files_only,
        progress=progress,
        trust_pickle=trust_pickle,
    )
