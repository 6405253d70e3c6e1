"""Download, verify, convert once and cache: zoo weights become ``<name>-<sha8>.safetensors``.

Cache layout (``cache_dir`` defaults to ``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``, shared with ``torch.hub.load_state_dict_from_url``)::

    <original file name>.pth          # the upstream checkpoint, sha256-verified
    <name>-<sha8>.safetensors         # converted weights in this library's layout
    <name>-<sha8>.json                # config + pretrained_cfg + provenance + checksums
    .locks/<name>.lock                # (empty) lock files, kept out of the way

The first load downloads the ``.pth`` (with a progress bar on terminals, to a temporary file
that is renamed only after its size and sha256 matched), reads it without unpickling code,
converts it and writes the safetensors and json atomically; every later load verifies the
sha256 of the safetensors and of the config recorded in the json, then reads the safetensors
only. Offline (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) nothing is fetched: a missing
file is an error that names the URL to fetch and where to put it. File locks serialise
processes (e.g. torchrun ranks) loading the same weights; whoever holds one removes what
interrupted downloads and conversions of that file left.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
import torch.hub
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open

from .._files import atomic_write_bytes, fsync_dir, remove_stale_temporaries
from .._progress import progress_bar
from .registry import Weights
from .serialization import CheckpointError, read_safetensors, write_json, write_safetensors

__all__ = [
    "ChecksumError",
    "DamagedCacheError",
    "OfflineError",
    "default_cache_dir",
    "is_offline",
    "sha256_file",
    "download_file",
    "fetch_weights_file",
    "fetch_url",
    "cached_paths",
    "is_cached",
    "verify_cached",
    "file_lock",
    "lock_for",
    "remove_leftovers",
    "tidy_entry",
    "discard_unreadable_download",
    "load_cached",
    "save_cached",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_CACHE_FORMAT_VERSION = 2


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


# --- locks and leftovers ---

#: Lock files live in this sub-folder of the cache, never next to the weights. filelock keeps a
#: lock file after release on purpose: deleting it would let a process that waits on the old inode
#: and a newcomer that creates a fresh file both "hold" the lock. huggingface_hub keeps its lock
#: files in ``.locks/`` for the same reason.
LOCK_DIR = ".locks"
#: A ``<file>.<hex>.partial`` of torch.hub's downloader (older pspnet_lib versions, or another
#: program sharing the folder, which takes no lock of ours) is only removed once it has not grown
#: for this long: a live download writes to it continuously.
_FOREIGN_PARTIAL_AGE_S = 3600.0


def _lock(cache_dir: Path, name: str, timeout: float = -1) -> Any:
    try:
        lock_dir = cache_dir / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return contextlib.nullcontext()
    if not os.access(lock_dir, os.W_OK):
        return contextlib.nullcontext()
    return FileLock(str(lock_dir / f"{name}.lock"), timeout=timeout)


def file_lock(dest: Path) -> Any:
    """The lock serialising every download of the cache file ``dest`` (``<cache>/.locks/<name>.lock``).

    Where the cache is not writable (a read-only shared cache) nothing can be written and there
    is nothing to serialise: a no-op context is returned.
    """
    return _lock(dest.parent, dest.name)


def _partial_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")


def remove_leftovers(dest: Path) -> list[Path]:
    """Remove what interrupted downloads or writes of ``dest`` left next to it; call under its lock.

    * ``.<name>.<hex>.partial``: this module's downloads (only ever written under the lock, so any
      found while holding it belongs to a process that died);
    * ``<name>.<hex>.partial`` (torch.hub's downloader): only when older than an hour, since a
      program that does not take our lock may still be writing it;
    * ``.<name>.<random>.tmp<suffix>``: interrupted atomic writes (``pspnet_lib._files``);
    * ``.<name>.lock``: the lock files older versions kept next to the weights, when free.
    """
    removed: list[Path] = []
    ours = re.compile(rf"^\.{re.escape(dest.name)}\.[0-9a-f]{{32}}\.partial$")
    torch_hub = re.compile(rf"^{re.escape(dest.name)}\.[0-9a-f]{{32}}\.partial$")
    try:
        names = [p for p in dest.parent.iterdir() if p.name.endswith(".partial")]
    except OSError:
        return removed
    now = time.time()
    for path in names:
        try:
            if ours.match(path.name) or (
                torch_hub.match(path.name) and now - path.stat().st_mtime > _FOREIGN_PARTIAL_AGE_S
            ):
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    removed += remove_stale_temporaries(dest)
    removed += _remove_legacy_lock(dest.with_name(f".{dest.name}.lock"))
    if removed:
        logger.info("removed leftovers of interrupted downloads or writes: %s", ", ".join(str(p) for p in removed))
    return removed


def _remove_legacy_lock(legacy: Path) -> list[Path]:
    """Remove a lock file that an older version left next to the weights, if no process holds it."""
    with contextlib.suppress(OSError, Timeout):
        if legacy.is_file() and legacy.stat().st_size == 0:
            with FileLock(str(legacy), timeout=0):  # held by an older version's process: leave it
                legacy.unlink()
            return [legacy]
    return []


# --- downloads ---

_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_CHUNK = 1 << 20


def _looks_like_html(first_bytes: bytes, content_type: str) -> bool:
    """HTML markup at the start, or an HTML Content-Type on text (checkpoints have NUL bytes early on)."""
    if first_bytes.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_STARTS):
        return True
    html_type = content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
    return html_type and b"\x00" not in first_bytes


def download_file(
    url: str, dest: Path, *, sha256_prefix: str | None, progress: bool | None = None, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest``: checked, then renamed into place; nothing is left on failure.

    The body goes to ``.<name>.<hex>.partial`` next to ``dest`` and becomes ``dest`` only if

    * as many bytes arrived as the server's ``Content-Length`` announced (``torch.hub``'s
      downloader cannot tell a connection cut short from the end: ``http.client`` returns short
      reads silently, which is why this module streams the body itself);
    * it is not an HTML page (``Content-Type: text/html`` or HTML markup at its start): servers
      answer a missing file or an expired link with a "200 OK" error or login page;
    * its sha256 starts with ``sha256_prefix`` (when given).

    Error statuses (404, 500, ...) raise before anything is written. Takes the lock of ``dest``
    (:func:`file_lock`) and removes leftovers of earlier interrupted downloads of it.

    Raises:
        ChecksumError: the hash does not match.
        OSError: the download failed, was cut short, or is a web page; the message names the URL,
            the byte counts and where to place the file by hand.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):
        remove_leftovers(dest)
        return _download(url, dest, sha256_prefix=sha256_prefix, progress=progress, timeout=timeout)


def _download(url: str, dest: Path, *, sha256_prefix: str | None, progress: bool | None, timeout: float) -> Path:
    logger.info("downloading %s to %s", url, dest)
    by_hand = (
        f"Nothing was cached at {dest}. Try again; without network access, fetch the file on another machine and "
        "place it there (see docs/weights.md, 'Offline and air-gapped use')."
    )
    partial = _partial_name(dest)
    digest = hashlib.sha256()
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"pspnet_lib (torch {torch.__version__})"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "xb") as out:
                announced = response.headers.get("Content-Length")
                expected = int(announced) if announced and announced.strip().isdigit() else None
                content_type = response.headers.get("Content-Type", "")
                # on terminals only, unless asked (pspnet_lib._progress: logs and CI get no bar)
                with progress_bar(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    leave=False,
                    progress=progress,
                ) as bar:
                    first = b""
                    while chunk := response.read(_CHUNK):
                        if len(first) < 512:
                            first += chunk[: 512 - len(first)]
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # HTTPError is a URLError: a 404 or 500 error page is never written.
            raise OSError(f"could not download {url}: {exc}. {by_hand}") from None
        if expected is not None and received != expected:
            raise OSError(
                f"the download of {url} was cut short: the server announced {expected} bytes and sent {received} "
                f"(the connection closed early). {by_hand}"
            )
        hash_ok = sha256_prefix is not None and digest.hexdigest().startswith(sha256_prefix)
        if not hash_ok and _looks_like_html(first, content_type):  # a matching hash outranks a wrong Content-Type
            raise OSError(
                f"{url} answered with a web page (Content-Type {content_type or 'unknown'}, {received} bytes), not a "
                f"weights file: the link is probably expired, wrong or behind a login. {by_hand}"
            )
        if sha256_prefix is not None and not hash_ok:
            raise ChecksumError(
                f"the file downloaded from {url} does not match the published checksum (sha256 {digest.hexdigest()[:16]}..., "
                f"expected a sha256 starting with {sha256_prefix}). Nothing was cached at {dest}; the download was "
                "probably altered in transit or replaced on the server: try again."
            )
        os.replace(partial, dest)
        fsync_dir(dest.parent)
    finally:
        partial.unlink(missing_ok=True)
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
    with file_lock(dest):
        remove_leftovers(dest)
        if dest.is_file():
            _verify(dest, weights.sha256, f"cached checkpoint for {weights.name}")
            return dest
        if is_offline(local_files_only):
            raise OfflineError(_offline_message(weights.url, dest, weights.sha256, weights.name))
        return _download(weights.url, dest, sha256_prefix=weights.sha256, progress=progress, timeout=60.0)


def _url_destination(url: str, cache_dir: Path | None) -> tuple[Path, str | None]:
    filename = os.path.basename(unquote(urlparse(url).path))
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    match = torch.hub.HASH_REGEX.search(filename)
    prefix = match.group(1) if match and len(match.group(1)) >= 6 else None
    return default_cache_dir(cache_dir) / filename, prefix


def _digest_sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def fetch_url(
    url: str, cache_dir: Path | None = None, *, local_files_only: bool = False, progress: bool | None = None
) -> Path:
    """A local path for an ``https://``/``http://`` URL (downloaded into the cache) or ``file://`` URL.

    A ``-<hex>.`` suffix in the file name (torch.hub's convention) is checked as a sha256 prefix
    on every use. A file without one is checked at download time (size, not a web page) and its
    sha256 is recorded next to it (``<file>.sha256``, the ``sha256sum`` format), so that later
    uses detect a cached copy that changed: such a copy is removed and downloaded again (offline:
    an error naming it).
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.exists():
            raise FileNotFoundError(f"{url} points to {path}, which does not exist")
        return path
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parsed.scheme!r} in {url!r}; use https://, http:// or file://")
    dest, prefix = _url_destination(url, cache_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sidecar = _digest_sidecar(dest)
    with file_lock(dest):
        remove_leftovers(dest)
        if dest.is_file():
            if prefix:
                _verify(dest, prefix, "cached file")
                return dest
            problem = _check_sidecar(dest, sidecar)
            if problem is None:
                return dest
            logger.warning("discarding the cached download %s: %s", dest, problem)
            dest.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            if is_offline(local_files_only):
                raise OfflineError(
                    f"the cached download {dest} of {url} was removed ({problem}) and downloads are disabled "
                    "(local_files_only=True or HF_HUB_OFFLINE=1); allow downloads or place the correct file there"
                )
        if is_offline(local_files_only):
            raise OfflineError(_offline_message(url, dest, prefix, dest.name))
        _download(url, dest, sha256_prefix=prefix, progress=progress, timeout=60.0)
        if not prefix:
            try:
                atomic_write_bytes(sidecar, f"{sha256_file(dest)}  {dest.name}\n".encode())
            except OSError as exc:  # the download itself is complete and checked
                logger.warning("could not record the sha256 of %s in %s: %s", dest, sidecar, exc)
        return dest


def _check_sidecar(dest: Path, sidecar: Path) -> str | None:
    """None if ``dest`` matches the sha256 recorded when it was downloaded (or none was recorded)."""
    if not sidecar.is_file():
        return None  # placed by hand, or downloaded by an older version: nothing to compare with
    try:
        recorded = sidecar.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        return f"its checksum file {sidecar} is unreadable"
    actual = sha256_file(dest)
    if actual != recorded:
        return f"its sha256 {actual[:16]}... differs from the {recorded[:16]}... recorded at download time"
    return None


def discard_unreadable_download(url: str, path: Path, cache_dir: Path | None, error: Exception) -> Exception:
    """The error to raise when the cached download of ``url`` at ``path`` cannot be read as weights.

    A file whose name carries no hash was checked only for its size and type when it arrived,
    so a wrong file (a server that sent something else) would otherwise be trusted on every
    later load. It is removed, and the message names it, so the next load downloads it again.
    Files with a verified hash, ``file://`` URLs and files outside the cache are left alone.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        return error
    dest, prefix = _url_destination(url, cache_dir)
    if prefix or dest != path or not dest.is_file():
        return error
    with file_lock(dest):
        try:
            dest.unlink(missing_ok=True)
            _digest_sidecar(dest).unlink(missing_ok=True)
            outcome = "it was removed from the cache, so the next load downloads it again"
        except OSError as exc:
            outcome = f"it could not be removed ({exc}): delete {dest} before loading again"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointError(
        f"{first_line} [{dest} was downloaded from {url}, whose name carries no checksum; {outcome}. Check that "
        "the URL serves the weights file itself]"
    )


# --- the converted cache ---
#
# An entry is <name>-<sha8>.safetensors plus <name>-<sha8>.json. The json records the sha256 and
# size of the safetensors and the sha256 of the config + pretrained_cfg it holds; every load (and
# is_cached) recomputes both. The safetensors also carries config and pretrained_cfg in its
# metadata, covered by its own hash, and the json must agree with them.


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


def verify_cached(weights: Weights, cache_dir: str | os.PathLike | None = None) -> str | None:
    """Why the converted cache entry of ``weights`` cannot be trusted, or None if it verifies.

    Hashes the whole safetensors file (about 0.3 s per 200 MB, see docs/weights.md). An absent
    entry gives ``"not cached"``.
    """
    st, js = cached_paths(weights, default_cache_dir(cache_dir))
    try:
        _read_verified(st, js, load=False)
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


def _read_verified(st: Path, js: Path, *, load: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify an entry (and read its tensors when ``load``); raises FileNotFoundError if absent."""
    if not (st.is_file() and js.is_file()):
        raise FileNotFoundError(f"{st} and {js}")
    try:
        record = json.loads(js.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{js} is not valid JSON ({exc})") from None
    _check_record(record, js)
    before = os.stat(st)
    if before.st_size != record["safetensors_size"]:
        raise CheckpointError(f"{st} has {before.st_size} bytes, {js} records {record['safetensors_size']}")
    digest = sha256_file(st)
    if digest != record["safetensors_sha256"]:
        raise CheckpointError(
            f"{st} was modified: its sha256 {digest[:16]}... differs from the {record['safetensors_sha256'][:16]}... "
            f"recorded in {js}"
        )
    if load:
        tensors, metadata = read_safetensors(st)
    else:
        tensors, metadata = {}, _safetensors_metadata(st)
    after = os.stat(st)
    if (after.st_ino, after.st_dev, after.st_size, after.st_mtime_ns) != (
        before.st_ino,
        before.st_dev,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise CheckpointError(f"{st} changed while it was being verified")
    for key in ("config", "pretrained_cfg"):
        try:
            inside = json.loads(metadata.get(f"pspnet_lib.{key}", "null"))
        except ValueError:
            inside = None
        if inside != record[key]:
            raise CheckpointError(f"the {key} in {js} differs from the one recorded inside {st}")
    return tensors, record


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read the safetensors header of {path}: {exc}") from None


def load_cached(
    weights: Weights, cache_dir: Path, *, discard: bool = True, problems: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(state_dict, record)`` from the verified converted cache, or None if absent or damaged.

    Every load recomputes the sha256 of the safetensors and of the json's config and compares
    them with those recorded when the entry was written. An entry that fails (unreadable, altered,
    truncated, written by an older version without checksums, or a symlink to an altered copy)
    is removed with a warning when ``discard`` (call it under :func:`lock_for` then), so that it
    is rebuilt; removing it may fail on a read-only cache, which raises
    :class:`DamagedCacheError` naming the files to delete. The reason is appended to
    ``problems`` when given.
    """
    st, js = cached_paths(weights, cache_dir)
    try:
        return _read_verified(st, js, load=True)
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


def save_cached(
    weights: Weights,
    cache_dir: Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    pretrained_cfg: dict[str, Any],
    source_sha256: str,
) -> Path:
    """Write the converted weights (safetensors first, then the json that marks the entry complete).

    Call under :func:`lock_for`. The json records the sha256 of the written safetensors (read back
    from disk, so a faulty write is caught by the next load) and of the config it holds.
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
    record = {
        "cache_format": _CACHE_FORMAT_VERSION,
        "name": weights.name,
        "config": config,
        "pretrained_cfg": pretrained_cfg,
        "config_sha256": _config_digest(config, pretrained_cfg),
        "source_url": weights.url,
        "source_format": weights.format,
        "source_sha256": source_sha256,
        "safetensors_size": st.stat().st_size,
        "safetensors_sha256": sha256_file(st),
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
