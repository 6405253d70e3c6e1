"""Download, verify, convert once and cache: zoo weights become ``<name>-<sha8>.safetensors``.

Cache layout (``cache_dir`` defaults to ``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``, shared with ``torch.hub.load_state_dict_from_url``)::

    <original file name>.pth          # the upstream checkpoint, sha256-verified
    <name>-<sha8>.safetensors         # converted weights in this library's layout
    <name>-<sha8>.json                # config + pretrained_cfg + provenance

The first load downloads the ``.pth`` (with a progress bar, to a temporary file that is renamed
only after its sha256 matched), reads it without unpickling code, converts it and writes the
safetensors and json atomically; every later load reads the safetensors only. Offline
(``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) nothing is fetched: a missing file is an
error that names the URL to fetch and where to put it. A file lock serialises processes (e.g.
torchrun ranks) loading the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import urllib.error
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
import torch.hub
from filelock import FileLock

from .._progress import progress_enabled

from .registry import Weights
from .serialization import CheckpointError, read_safetensors, write_json, write_safetensors

__all__ = [
    "ChecksumError",
    "OfflineError",
    "default_cache_dir",
    "is_offline",
    "sha256_file",
    "download_file",
    "fetch_weights_file",
    "fetch_url",
    "cached_paths",
    "is_cached",
    "load_cached",
    "save_cached",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_CACHE_FORMAT_VERSION = 1


class ChecksumError(CheckpointError):
    """A file's sha256 does not start with the expected prefix."""


class OfflineError(FileNotFoundError):
    """Downloads are disabled and the file is not in the cache."""


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``torch.hub.get_dir()/checkpoints`` (honours ``TORCH_HOME``)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"


def is_offline(local_files_only: bool = False) -> bool:
    """True if downloads are disabled: ``local_files_only`` or ``HF_HUB_OFFLINE`` set (read now, not at import)."""
    if local_files_only:
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, sha256_prefix: str, what: str) -> None:
    digest = sha256_file(path)
    if not digest.startswith(sha256_prefix):
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{what} {path} ({size} bytes) has sha256 {digest[:16]}..., expected a hash starting with "
            f"{sha256_prefix}: the file is truncated, corrupt or not the published one. It was removed; "
            "load again to re-download it (or place the correct file there)."
        )


def download_file(url: str, dest: Path, *, sha256_prefix: str | None, progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` with torch.hub's downloader (temporary file, verified, renamed).

    A failed, interrupted or hash-mismatched download leaves nothing at ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dest)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256_prefix, progress=progress_enabled(progress))
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise ChecksumError(
                f"the file downloaded from {url} does not match the published checksum ({exc}); expected a "
                f"sha256 starting with {sha256_prefix}. Nothing was cached at {dest}; the download was probably "
                "truncated or altered in transit: try again."
            ) from None
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise OSError(
            f"could not download {url}: {exc}. Without network access, fetch the file on another machine and "
            f"place it at {dest} (see docs/weights.md, 'Offline and air-gapped use')."
        ) from None
    return dest


def _offline_message(url: str, dest: Path, sha256_prefix: str | None, name: str) -> str:
    check = f" (its sha256 starts with {sha256_prefix})" if sha256_prefix else ""
    return (
        f"{name} is not in the cache and downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1). "
        f"Fetch {url}{check} on a machine with network access and place it at {dest}, "
        "or allow downloads."
    )


def fetch_weights_file(
    weights: Weights, cache_dir: Path, *, local_files_only: bool = False, progress: bool | None = None
) -> Path:
    """The verified original checkpoint of ``weights`` in ``cache_dir``, downloaded if needed."""
    dest = cache_dir / weights.filename
    if dest.is_file():
        _verify(dest, weights.sha256, f"cached checkpoint for {weights.name}")
        return dest
    if is_offline(local_files_only):
        raise OfflineError(_offline_message(weights.url, dest, weights.sha256, weights.name))
    return download_file(weights.url, dest, sha256_prefix=weights.sha256, progress=progress)


def fetch_url(
    url: str, cache_dir: Path | None = None, *, local_files_only: bool = False, progress: bool | None = None
) -> Path:
    """A local path for an ``https://``/``http://`` URL (downloaded into the cache) or ``file://`` URL.

    A ``-<hex>.`` suffix in the file name (torch.hub's convention) is checked as a sha256 prefix.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.exists():
            raise FileNotFoundError(f"{url} points to {path}, which does not exist")
        return path
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parsed.scheme!r} in {url!r}; use https://, http:// or file://")
    filename = os.path.basename(unquote(parsed.path))
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    cache_dir = default_cache_dir(cache_dir)
    dest = cache_dir / filename
    match = torch.hub.HASH_REGEX.search(filename)
    prefix = match.group(1) if match and len(match.group(1)) >= 6 else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f".{filename}.lock")):
        if dest.is_file():
            if prefix:
                _verify(dest, prefix, "cached file")
            return dest
        if is_offline(local_files_only):
            raise OfflineError(_offline_message(url, dest, prefix, filename))
        return download_file(url, dest, sha256_prefix=prefix, progress=progress)


# --- the converted cache ---


def cached_paths(weights: Weights, cache_dir: Path) -> tuple[Path, Path]:
    """``(<name>-<sha8>.safetensors, <name>-<sha8>.json)`` in ``cache_dir``."""
    return cache_dir / f"{weights.cache_stem}.safetensors", cache_dir / f"{weights.cache_stem}.json"


def is_cached(weights: Weights, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether the converted weights are in the cache (loading them needs no network and no pickle)."""
    st, js = cached_paths(weights, default_cache_dir(cache_dir))
    return st.is_file() and js.is_file()


def load_cached(weights: Weights, cache_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(state_dict, record)`` from the converted cache, or None if absent.

    A damaged entry (unreadable json, size mismatch, broken safetensors) is removed with a
    warning and None returned, so that it is rebuilt.
    """
    st, js = cached_paths(weights, cache_dir)
    if not (st.is_file() and js.is_file()):
        return None
    try:
        record = json.loads(js.read_text(encoding="utf-8"))
        if record.get("safetensors_size") != st.stat().st_size:
            raise CheckpointError(f"{st} has {st.stat().st_size} bytes, {js} records {record.get('safetensors_size')}")
        tensors, _ = read_safetensors(st)
    except (ValueError, OSError, CheckpointError) as exc:
        logger.warning("discarding damaged cache entry %s: %s", st, exc)
        st.unlink(missing_ok=True)
        js.unlink(missing_ok=True)
        return None
    return tensors, record


def save_cached(
    weights: Weights,
    cache_dir: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    pretrained_cfg: dict[str, Any],
    source_sha256: str,
) -> Path:
    """Write the converted weights (safetensors first, then the json that marks the entry complete)."""
    from .. import __version__

    st, js = cached_paths(weights, cache_dir)
    metadata = {"format": "pt", "pspnet_lib.config": _dumps(config), "pspnet_lib.pretrained_cfg": _dumps(pretrained_cfg)}
    write_safetensors(state_dict, st, metadata)
    record = {
        "cache_format": _CACHE_FORMAT_VERSION,
        "name": weights.name,
        "config": config,
        "pretrained_cfg": pretrained_cfg,
        "source_url": weights.url,
        "source_format": weights.format,
        "source_sha256": source_sha256,
        "safetensors_size": st.stat().st_size,
        "pspnet_lib_version": __version__,
    }
    write_json(record, js)
    return st


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def lock_for(weights: Weights, cache_dir: Path) -> Any:
    """A lock file serialising download + conversion of ``weights`` across processes.

    Where the cache folder is not writable (a read-only shared cache) there is nothing to
    serialise: a no-op context is returned and the writes themselves report the problem.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return contextlib.nullcontext()
    if not os.access(cache_dir, os.W_OK):
        return contextlib.nullcontext()
    return FileLock(str(cache_dir / f".{weights.cache_stem}.lock"))
