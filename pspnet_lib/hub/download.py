"""Download, verify, convert once and cache: zoo weights become ``<name>-<sha8>.safetensors``.

Cache layout (``cache_dir`` defaults to ``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``, shared with ``torch.hub.load_state_dict_from_url``)::

    <original file name>.pth          # the upstream checkpoint, sha256-verified
    <name>-<sha8>.safetensors         # converted weights in this library's layout
    <name>-<sha8>.json                # config + pretrained_cfg + provenance + checksums
    .locks/<name>.lock                # (empty) lock files, kept out of the way
    urls/<sha256(url)[:16]>/<name>    # a URL download, keyed by its URL, with <name>.source.json

The first load downloads the ``.pth`` (with a progress bar on terminals, to a temporary file
that is renamed only after its size and sha256 matched), reads it without unpickling code,
converts it, checks its values (finite floats) and writes the safetensors and json atomically;
every later load reads the safetensors only, trusting it while its stamp (size, mtime, ctime,
inode) is the one recorded when it was hashed, and hashing it in full otherwise. Offline
(``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) nothing is fetched: a missing file is an
error that names the URL to fetch and where to put it. File locks serialise
processes (e.g. torchrun ranks) loading the same weights; whoever holds one removes what
interrupted downloads and conversions of that file left.

The work is split by concern: :mod:`~pspnet_lib.hub.cache_dir` (the folder, sha256, stamps,
locks and leftovers), :mod:`~pspnet_lib.hub.http_download` (fetching files; the record of a URL
download in :mod:`~pspnet_lib.hub.url_record`) and
:mod:`~pspnet_lib.hub.converted_cache` (the verified safetensors + json entries). This module
re-exports their public names (``pspnet_lib.hub.download.cached_paths``, ...).
"""

from __future__ import annotations

from .cache_dir import (
    LOCK_DIR,
    ChecksumError,
    OfflineError,
    default_cache_dir,
    file_lock,
    file_stamp,
    is_offline,
    remove_leftovers,
    sha256_file,
)
from .converted_cache import (
    DamagedCacheError,
    cached_paths,
    is_cached,
    load_cached,
    lock_for,
    mark_values_checked,
    recheck_cached,
    save_cached,
    tidy_entry,
    verify_cached,
)
from .http_download import (
    URL_DIR,
    discard_unreadable_download,
    download_file,
    fetch_original,
    fetch_url,
    fetch_weights_file,
    mark_url_values_checked,
    url_cache_path,
    url_values_checked,
)

__all__ = [
    "LOCK_DIR",
    "ChecksumError",
    "DamagedCacheError",
    "OfflineError",
    "default_cache_dir",
    "is_offline",
    "sha256_file",
    "file_stamp",
    "download_file",
    "fetch_weights_file",
    "fetch_original",
    "fetch_url",
    "url_cache_path",
    "URL_DIR",
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
    "mark_values_checked",
    "recheck_cached",
    "url_values_checked",
    "mark_url_values_checked",
]
