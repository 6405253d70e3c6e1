"""Downloads: zoo checkpoints and URLs fetched once into the cache, sha256-verified, never half-written.

A download goes to a ``.partial`` file under the destination's lock and is renamed into place
only after its size and sha256 matched; HTML error pages are refused; offline
(``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) a missing file is an error naming the URL
to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
import torch.hub

from .._files import fsync_dir
from .._progress import progress_bar
from ..core.escape import printable
from ..core.limits import LIMITS, format_amount, get_limit
from .cache_dir import (
    ChecksumError,
    OfflineError,
    _partial_name,
    _verify,
    default_cache_dir,
    file_lock,
    is_offline,
    remove_leftovers,
)
from .registry import Weights
from .serialization import CheckpointError
from .url_record import check_record, mark_url_values_checked, record_path, recorded, url_values_checked

__all__ = [
    "URL_DIR",
    "download_file",
    "fetch_weights_file",
    "fetch_original",
    "fetch_url",
    "discard_unreadable_download",
    "url_cache_path",
    "url_values_checked",
    "mark_url_values_checked",
]

logger = logging.getLogger(__name__)

# --- downloads ---

_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_CHUNK = 1 << 20


def _looks_like_html(first_bytes: bytes, content_type: str) -> bool:
    """HTML markup at the start, or an HTML Content-Type on text (checkpoints have NUL bytes early on)."""
    if first_bytes.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_STARTS):
        return True
    html_type = content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
    return html_type and b"\x00" not in first_bytes


class _TooSlow(Exception):
    def __init__(self, received: int, expected: int | None) -> None:
        self.received, self.expected = received, expected


def _network_reason(exc: BaseException) -> str:
    """What went wrong, readably: the status of an error page, the gist of a dropped connection."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {printable(exc.reason, 80)}"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed after {len(exc.partial)} bytes, before the end of the file"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach the server ({printable(exc.reason, 120)})"
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "the server stopped sending (timed out)"
    return printable(f"{type(exc).__name__}: {exc}", 160)


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
        _download(url, dest, sha256_prefix=sha256_prefix, progress=progress, timeout=timeout)
        return dest


def _download(url: str, dest: Path, *, sha256_prefix: str | None, progress: bool | None, timeout: float) -> str:
    """:func:`download_file` under the lock held; returns the sha256 of what was saved (hashed as it arrived)."""
    logger.info("downloading %s to %s", printable(url), dest)
    by_hand = (
        f"Nothing was cached at {dest}. Try again; without network access, fetch the file on another machine and "
        "place it there (see docs/weights.md, 'Offline and air-gapped use')."
    )
    partial = _partial_name(dest)
    digest = hashlib.sha256()
    received = 0
    start = time.monotonic()
    deadline = get_limit("download_seconds")
    shown_url = printable(url)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"pspnet_lib (torch {torch.__version__})"})
        try:
            with (
                urllib.request.urlopen(request, timeout=min(timeout, deadline)) as response,
                open(partial, "xb") as out,
            ):
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
                    # read1: whatever has arrived (a slow server must not hold one read for minutes),
                    # so that the overall deadline is checked as the bytes come in.
                    while chunk := response.read1(_CHUNK):
                        if len(first) < 512:
                            first += chunk[: 512 - len(first)]
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if time.monotonic() - start > deadline:
                            raise _TooSlow(received, expected)
                out.flush()
                os.fsync(out.fileno())
        except _TooSlow as slow:
            elapsed = time.monotonic() - start
            of = f" of {slow.expected}" if slow.expected is not None else ""
            limit = LIMITS["download_seconds"]
            raise OSError(
                f"the download of {shown_url} did not finish within {format_amount(deadline, 'seconds')} "
                f"({slow.received}{of} bytes in {elapsed:.0f} s, {slow.received / max(elapsed, 1e-9) / 1000:.1f} kB/s); "
                f"{by_hand} A slow but working link needs more time: raise the limit with the environment "
                f"variable {limit.env} (e.g. {limit.env}={int(deadline * 4)})"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # HTTPError is a URLError: a 404 or 500 error page is never written.
            raise OSError(f"could not download {shown_url}: {_network_reason(exc)}. {by_hand}") from None
        if expected is not None and received != expected:
            raise OSError(
                f"the download of {shown_url} was cut short: the server announced {expected} bytes and sent {received} "
                f"(the connection closed early). {by_hand}"
            )
        hash_ok = sha256_prefix is not None and digest.hexdigest().startswith(sha256_prefix)
        if not hash_ok and _looks_like_html(first, content_type):  # a matching hash outranks a wrong Content-Type
            raise OSError(
                f"{shown_url} answered with a web page (Content-Type {printable(content_type or 'unknown', 60)}, {received} bytes), not a "
                f"weights file: the link is probably expired, wrong or behind a login. {by_hand}"
            )
        if sha256_prefix is not None and not hash_ok:
            raise ChecksumError(
                f"the file downloaded from {shown_url} does not match the published checksum (sha256 {digest.hexdigest()[:16]}..., "
                f"expected a sha256 starting with {sha256_prefix}). Nothing was cached at {dest}; the download was "
                "probably altered in transit or replaced on the server: try again."
            )
        os.replace(partial, dest)
        fsync_dir(dest.parent)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


def _offline_message(url: str, dest: Path, sha256_prefix: str | None, name: str) -> str:
    check = f" (its sha256 starts with {sha256_prefix})" if sha256_prefix else ""
    return (
        f"{name} is not in the cache and downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1). "
        f"Fetch {printable(url)}{check} on a machine with network access and place it at {dest}, "
        "or allow downloads."
    )


def fetch_weights_file(
    weights: Weights, cache_dir: Path, *, local_files_only: bool = False, progress: bool | None = None
) -> Path:
    """The verified original checkpoint of ``weights`` in ``cache_dir``, downloaded if needed."""
    return fetch_original(weights, cache_dir, local_files_only=local_files_only, progress=progress)[0]


def fetch_original(
    weights: Weights, cache_dir: Path, *, local_files_only: bool = False, progress: bool | None = None
) -> tuple[Path, str]:
    """:func:`fetch_weights_file` and the file's sha256 (computed once, while it was verified)."""
    dest = cache_dir / weights.filename
    with file_lock(dest):
        remove_leftovers(dest)
        if dest.is_file():
            return dest, _verify(dest, weights.sha256, f"cached checkpoint for {weights.name}")
        if is_offline(local_files_only):
            raise OfflineError(_offline_message(weights.url, dest, weights.sha256, weights.name))
        return dest, _download(weights.url, dest, sha256_prefix=weights.sha256, progress=progress, timeout=60.0)


#: URL downloads live in ``<cache>/urls/<key>/<file name>``, ``key`` = the first 16 hex digits of
#: the sha256 of the URL: two URLs never share a file, whatever their file names.
URL_DIR = "urls"


def url_cache_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`fetch_url` caches ``url``: ``<cache>/urls/<sha256(url)[:16]>/<file name>``."""
    filename = os.path.basename(unquote(urlparse(url).path))
    if not filename or filename in (".", ".."):
        raise ValueError(f"cannot tell a file name from the URL {printable(url)!r}")
    key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return default_cache_dir(cache_dir) / URL_DIR / key / filename


def _url_destination(url: str, cache_dir: Path | None) -> tuple[Path, str | None]:
    dest = url_cache_path(url, cache_dir)
    match = torch.hub.HASH_REGEX.search(dest.name)
    prefix = match.group(1) if match and len(match.group(1)) >= 6 else None
    return dest, prefix


def fetch_url(
    url: str, cache_dir: Path | None = None, *, local_files_only: bool = False, progress: bool | None = None
) -> Path:
    """A local path for an ``https://``/``http://`` URL (downloaded into the cache) or ``file://`` URL.

    The cache is keyed by the URL itself (:func:`url_cache_path`): a file fetched from one URL is
    never served for another, even with the same file name. When a download enters the cache
    (size checked against ``Content-Length``, not a web page, a ``-<hex>.`` suffix in the file name
    (torch.hub's convention) checked as a sha256 prefix), ``<file>.source.json`` records its URL,
    sha256 and stamp (:mod:`~pspnet_lib.hub.url_record`). Every later use checks the file against
    that record: trusted while its stamp is the recorded one, else hashed against the recorded
    sha256 (and the name's hash prefix); a file that changed is removed and downloaded again
    (offline: an error naming it). A file placed there by hand, without a record, is checked
    against the name's hash prefix if any and recorded.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.exists():
            raise FileNotFoundError(f"{printable(url)} points to {path}, which does not exist")
        return path
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported URL scheme {printable(parsed.scheme)!r} in {printable(url)!r}; use https://, http:// or file://"
        )
    dest, prefix = _url_destination(url, cache_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):
        remove_leftovers(dest)
        if dest.is_file():
            problem = check_record(dest, url, prefix)
            if problem == "no record of its source":  # placed by hand, or a download whose record was cut off
                return recorded(dest, url)
            if problem is None:
                return dest
            logger.warning("discarding the cached download %s: %s", dest, problem)
            dest.unlink(missing_ok=True)
            record_path(dest).unlink(missing_ok=True)
            if is_offline(local_files_only):
                raise OfflineError(
                    f"the cached download {dest} of {printable(url)} was removed ({problem}) and downloads are "
                    "disabled (local_files_only=True or HF_HUB_OFFLINE=1); allow downloads or place the correct "
                    "file there"
                )
        if is_offline(local_files_only):
            raise OfflineError(_offline_message(url, dest, prefix, dest.name))
        return recorded(dest, url, _download(url, dest, sha256_prefix=prefix, progress=progress, timeout=60.0))


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
            record_path(dest).unlink(missing_ok=True)
            outcome = "it was removed from the cache, so the next load downloads it again"
        except OSError as exc:
            outcome = f"it could not be removed ({exc}): delete {dest} before loading again"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointError(
        f"{first_line} [{dest} was downloaded from {printable(url)}, whose name carries no checksum; {outcome}. Check that "
        "the URL serves the weights file itself]"
    )
