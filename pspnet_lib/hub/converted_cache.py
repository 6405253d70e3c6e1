"""The converted cache: zoo weights as ``<name>-<sha8>.safetensors`` + ``.json``, verified when they enter it.

Written once after a checkpoint is downloaded, converted and its values checked, atomically; the
json records the sha256 of the safetensors and the file's stamp (size, mtime, ctime, inode:
:func:`~pspnet_lib.hub.cache_dir.file_stamp`). A load trusts the safetensors while its stamp is
the recorded one and hashes it in full otherwise (then records the new stamp if the hash
matches). The config + ``pretrained_cfg`` in the json are checked against their sha256 and the
copy inside the safetensors on every load (small). A modified or truncated entry is never
trusted: it is removed and rebuilt under the entry's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.hub
from filelock import Timeout
from safetensors import SafetensorError, safe_open

from .._files import parse_json, read_json, remove_stale_temporaries
from .cache_dir import _lock, _remove_legacy_lock, default_cache_dir, file_stamp, remove_leftovers, sha256_file
from .registry import Weights
from .serialization import CheckpointError, read_safetensors, write_json, write_safetensors

__all__ = [
    "DamagedCacheError",
    "cached_paths",
    "is_cached",
    "verify_cached",
    "load_cached",
    "save_cached",
    "mark_values_checked",
    "recheck_cached",
    "lock_for",
    "tidy_entry",
]

logger = logging.getLogger(__name__)

#: Version of the ``.json`` record; entries of another version are rebuilt.
_CACHE_FORMAT_VERSION = 2

# --- the converted cache ---
#
# An entry is <name>-<sha8>.safetensors plus <name>-<sha8>.json. The json records the sha256, size
# and stamp of the safetensors, whether its values were checked (finite floats), and the sha256 of
# the config + pretrained_cfg it holds. Every load (and is_cached) recomputes the config digest and
# compares the stamp; a stamp that differs means a full hash. The safetensors also carries config
# and pretrained_cfg in its metadata, covered by its own hash, and the json must agree with them.


class DamagedCacheError(CheckpointError):
    """A converted cache entry failed verification and cannot be rebuilt here."""


def cached_paths(weights: Weights, cache_dir: Path) -> tuple[Path, Path]:
    """``(<name>-<sha8>.safetensors, <name>-<sha8>.json)`` in ``cache_dir``."""
    return cache_dir / f"{weights.cache_stem}.safetensors", cache_dir / f"{weights.cache_stem}.json"


def _config_digest(config: Any, pretrained_cfg: Any) -> str:
    return hashlib.sha256(_dumps({"config": config, "pretrained_cfg": pretrained_cfg}).encode("utf-8")).hexdigest()


def _check_record(record: Any, js: Path) -> None:
    if not isinstance(record, dict):
        raise CheckpointError(f"{js} holds a JSON {type(record).__name__}, not a cache record")
    if record.get("cache_format") != _CACHE_FORMAT_VERSION:
        raise CheckpointError(
            f"{js} was written by an older pspnet_lib (cache format {record.get('cache_format')!r}, this version "
            f"writes {_CACHE_FORMAT_VERSION} with checksums)"
        )
    for key, kind in (
        ("safetensors_sha256", str),
        ("config_sha256", str),
        ("safetensors_size", int),
        ("config", dict),
        ("pretrained_cfg", dict),
    ):
        if not isinstance(record.get(key), kind):
            raise CheckpointError(f"{js} lacks a valid {key!r}")
    if _config_digest(record["config"], record["pretrained_cfg"]) != record["config_sha256"]:
        raise CheckpointError(
            f"{js} was modified: its config/pretrained_cfg do not match the sha256 recorded with them"
        )


def verify_cached(weights: Weights, cache_dir: str | os.PathLike | None = None, *, full: bool = False) -> str | None:
    """Why the converted cache entry of ``weights`` cannot be trusted, or None if it verifies.

    The safetensors is hashed (about 0.3 s per 200 MB, see docs/weights.md) when its stamp is
    not the one recorded when it was verified, or with ``full``; otherwise the stamp, the json's
    digests and the safetensors header are checked (milliseconds). An absent entry gives
    ``"not cached"``.
    """
    try:
        _open_entry(weights, default_cache_dir(cache_dir), load=False, full=full)
    except FileNotFoundError:
        return "not cached"
    except (ValueError, OSError) as exc:
        return str(exc)
    return None


def is_cached(weights: Weights, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether verified converted weights are in the cache (loading them needs no network and no pickle).

    A damaged or altered entry is not cached (:func:`verify_cached` says why).
    """
    return verify_cached(weights, cache_dir) is None


def _open_entry(
    weights: Weights, cache_dir: Path, *, load: bool, full: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, record)`` of a verified entry (tensors only when ``load``), the record holding
    the stamp the file was verified with. Raises FileNotFoundError if absent, ValueError or
    OSError if it does not verify. After a full hash the new stamp is recorded (where the cache
    is writable), so that the next load trusts it."""
    st, js = cached_paths(weights, cache_dir)
    tensors, record, stamp, hashed = _read_verified(st, js, load=load, full=full)
    verified = {**record, "safetensors_stamp": stamp}
    if hashed and record.get("safetensors_stamp") != stamp:
        _update_record(weights, cache_dir, verified, {"safetensors_stamp": stamp})
    return tensors, verified


def _read_verified(
    st: Path, js: Path, *, load: bool, full: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, int], bool]:
    """Verify an entry (and read its tensors when ``load``); raises FileNotFoundError if absent.

    Returns ``(tensors, record, stamp, hashed)``: the file's stamp while it was verified and
    read, and whether it was hashed (``full``, or a stamp other than the recorded one).
    """
    if not (st.is_file() and js.is_file()):
        raise FileNotFoundError(f"{st} and {js}")
    try:
        record = read_json(js)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    _check_record(record, js)
    before = file_stamp(st)
    if before["size"] != record["safetensors_size"]:
        raise CheckpointError(f"{st} has {before['size']} bytes, {js} records {record['safetensors_size']}")
    hashed = full or record.get("safetensors_stamp") != before
    if hashed:
        digest = sha256_file(st)
        if digest != record["safetensors_sha256"]:
            raise CheckpointError(
                f"{st} was modified: its sha256 {digest[:16]}... differs from the "
                f"{record['safetensors_sha256'][:16]}... recorded in {js}"
            )
    if load:  # the tensors are read here, into memory of their own: the bytes verified are the bytes used
        tensors, metadata = read_safetensors(st)
    else:
        tensors, metadata = {}, _safetensors_metadata(st)
    if file_stamp(st) != before:
        raise CheckpointError(f"{st} changed while it was being verified")
    for key in ("config", "pretrained_cfg"):
        try:
            inside = parse_json(metadata.get(f"pspnet_lib.{key}", "null"), str(st))
        except ValueError:
            inside = None
        if inside != record[key]:
            raise CheckpointError(f"the {key} in {js} differs from the one recorded inside {st}")
    return tensors, record, before, hashed


def _update_record(weights: Weights, cache_dir: Path, verified: dict[str, Any], updates: dict[str, Any]) -> bool:
    """Write ``updates`` into the json of an entry verified as ``verified``, if it is still that entry.

    Under the entry's lock, without waiting (a process at work on the entry may be replacing it),
    and only while the safetensors has the stamp it was verified with and the json the sha256 it
    was verified against: a stamp is never recorded for bytes that were not checked. A read-only
    cache, or an entry of symbolic links (left as links), keeps its record. Returns whether it
    was written.
    """
    st, js = cached_paths(weights, cache_dir)
    if st.is_symlink() or js.is_symlink():
        return False
    with contextlib.suppress(Timeout, OSError, ValueError):
        with _lock(cache_dir, weights.cache_stem, timeout=0) as held:
            if held is None:  # a read-only cache
                return False
            record = read_json(js)
            if (
                isinstance(record, dict)
                and record.get("safetensors_sha256") == verified["safetensors_sha256"]
                and file_stamp(st) == verified["safetensors_stamp"]
            ):
                write_json({**record, **updates}, js)
                return True
    return False


def mark_values_checked(weights: Weights, cache_dir: Path, verified: dict[str, Any]) -> bool:
    """Record in the entry's json that its values were checked (finite floats), so that later loads
    skip the check. ``verified`` is the record :func:`load_cached` returned with the tensors that
    were checked. Entries written by :func:`save_cached` with ``values_checked=True`` have it."""
    return _update_record(weights, cache_dir, verified, {"values_checked": True})


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read the safetensors header of {path}: {exc}") from None


def load_cached(
    weights: Weights,
    cache_dir: Path,
    *,
    discard: bool = True,
    problems: list[str] | None = None,
    full: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(state_dict, record)`` from the verified converted cache, or None if absent or damaged.

    Every load recomputes the sha256 of the json's config and compares the safetensors' stamp
    with the one recorded when it was verified; a different stamp (or ``full``) means hashing the
    safetensors in full against the recorded sha256. ``record["values_checked"]`` says whether its
    values were checked finite (:func:`mark_values_checked`). An entry that fails (unreadable,
    altered, truncated, written by an older version without checksums, or a symlink to an altered
    copy) is removed with a warning when ``discard`` (call it under :func:`lock_for` then), so that
    it is rebuilt; removing it may fail on a read-only cache, which raises
    :class:`DamagedCacheError` naming the files to delete. The reason is appended to
    ``problems`` when given.
    """
    st, js = cached_paths(weights, cache_dir)
    try:
        return _open_entry(weights, cache_dir, load=True, full=full)
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        if problems is not None:
            problems.append(f"{st}: {exc}")
        if not discard:
            logger.debug("cache entry %s does not verify (yet): %s", st, exc)
            return None
        logger.warning("discarding damaged cache entry %s: %s", st, exc)
        try:
            st.unlink(missing_ok=True)
            js.unlink(missing_ok=True)
        except OSError as unlink_error:
            raise DamagedCacheError(
                f"the cached {st} does not verify ({exc}) and cannot be removed ({unlink_error.strerror}): delete "
                f"{st} and {js} (they are rebuilt from {weights.url} on the next load)"
            ) from None
        return None


def recheck_cached(weights: Weights, cache_dir: Path) -> str | None:
    """Hash the converted entry of ``weights`` in full, whatever its stamp says (``pspnet download``).

    Catches what a stamp cannot see (bit rot below the file system). An entry that fails is
    removed with a warning, so that the next load rebuilds it. Returns why it failed, or None
    (it verified, or is absent).
    """
    if verify_cached(weights, cache_dir, full=True) in (None, "not cached"):  # records a new stamp if needed
        return None
    problems: list[str] = []
    with lock_for(weights, cache_dir):  # removed under the lock: it may be a rebuild caught between two renames
        load_cached(weights, cache_dir, discard=True, problems=problems, full=True)
    return problems[0] if problems else None


def save_cached(
    weights: Weights,
    cache_dir: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    pretrained_cfg: dict[str, Any],
    source_sha256: str,
    *,
    values_checked: bool = False,
) -> Path:
    """Write the converted weights (safetensors first, then the json that marks the entry complete).

    Call under :func:`lock_for`. The json records the sha256 and stamp of the written safetensors
    (hashed as read back from disk), the sha256 of the config it holds, and ``values_checked``:
    pass True when ``state_dict`` was checked (finite floats), so that loads need not check again.
    """
    from .._version import __version__

    st, js = cached_paths(weights, cache_dir)
    config = json.loads(_dumps(config))  # exactly what the json will hold, so that the digests agree
    pretrained_cfg = json.loads(_dumps(pretrained_cfg))
    metadata = {
        "format": "pt",
        "pspnet_lib.config": _dumps(config),
        "pspnet_lib.pretrained_cfg": _dumps(pretrained_cfg),
    }
    write_safetensors(state_dict, st, metadata)
    stamp = file_stamp(st)  # before hashing: a file that changed while hashed no longer has this stamp
    digest = sha256_file(st)
    record = {
        "cache_format": _CACHE_FORMAT_VERSION,
        "name": weights.name,
        "config": config,
        "pretrained_cfg": pretrained_cfg,
        "config_sha256": _config_digest(config, pretrained_cfg),
        "source_url": weights.url,
        "source_format": weights.format,
        "source_sha256": source_sha256,
        "safetensors_size": stamp["size"],
        "safetensors_stamp": stamp,  # a load trusts the file hashed here while its stamp is this one
        "safetensors_sha256": digest,
        "values_checked": values_checked,
        "pspnet_lib_version": __version__,
    }
    write_json(record, js)
    return st


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@contextlib.contextmanager
def lock_for(weights: Weights, cache_dir: Path) -> Iterator[None]:
    """The lock serialising conversion of ``weights`` across processes (``<cache>/.locks/<name>-<sha8>.lock``).

    Entering it also removes what interrupted conversions of this entry left (temporary files
    of the safetensors and json). Where the cache folder is not writable (a read-only shared
    cache) there is nothing to serialise: nothing is locked and the writes themselves report
    the problem.
    """
    with _lock(cache_dir, weights.cache_stem) as held:
        if held is not None:  # None: the no-op context of a read-only cache
            removed = [p for path in cached_paths(weights, cache_dir) for p in remove_stale_temporaries(path)]
            removed += _remove_legacy_lock(cache_dir / f".{weights.cache_stem}.lock")
            if removed:
                logger.info("removed leftovers of interrupted conversions: %s", ", ".join(str(p) for p in removed))
        yield


def tidy_entry(weights: Weights, cache_dir: Path) -> list[Path]:
    """Remove what interrupted downloads and conversions of ``weights`` left, unless a process is at work.

    Takes the entry's and the original file's locks without waiting: if another process holds
    either, its temporary files may be in use and nothing is touched. Returns the removed paths.
    """
    if not cache_dir.is_dir():
        return []
    removed: list[Path] = []
    with contextlib.suppress(Timeout, OSError):
        with _lock(cache_dir, weights.cache_stem, timeout=0) as held:
            if held is None:  # a read-only cache: nothing could be removed anyway
                return []
            with _lock(cache_dir, weights.filename, timeout=0):
                removed += [p for path in cached_paths(weights, cache_dir) for p in remove_stale_temporaries(path)]
                removed += _remove_legacy_lock(cache_dir / f".{weights.cache_stem}.lock")
                removed += remove_leftovers(cache_dir / weights.filename)
    return removed
