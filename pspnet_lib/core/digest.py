"""``content_digest``: a sha256 of a checkpoint's content (tensors, numbers, strings, containers).

The Trainer stores it in each checkpoint under :data:`DIGEST_KEY`; reading the checkpoint back
(``--resume``, ``load_pretrained``) recomputes it over what was read. torch does not check the
zip CRCs of a ``.pth`` file, so bytes overwritten inside a tensor would otherwise load as
different weights without a word.

The digest walks the value in order: each dict's keys in insertion order (pickling keeps it),
each tensor's dtype, shape and bytes (in C order, on the CPU), each float's exact bits
(``float.hex``), and a tag per type, so that ``[1]`` and ``(1,)`` or ``1`` and ``1.0`` differ.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["DIGEST_KEY", "content_digest"]

#: The key under which a Trainer checkpoint stores the digest of the rest of its content.
DIGEST_KEY = "content_sha256"


def _feed(digest: Any, value: Any) -> None:
    if value is None or isinstance(value, bool):
        digest.update(b"N" if value is None else (b"T" if value else b"F"))
    elif isinstance(value, int):
        digest.update(b"i%d;" % value)
    elif isinstance(value, float):
        digest.update(b"f" + value.hex().encode() + b";")
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"s%d:" % len(data) + data)
    elif isinstance(value, (bytes, bytearray)):
        digest.update(b"b%d:" % len(value) + bytes(value))
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"t{tensor.dtype}{list(tensor.shape)};".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        digest.update(b"d%d;" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update((b"l%d;" if isinstance(value, list) else b"u%d;") % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (torch.dtype, torch.device, complex)):
        digest.update(f"o{type(value).__name__}:{value};".encode())
    else:  # not part of what the Trainer writes; named so that its presence is covered
        digest.update(f"?{type(value).__module__}.{type(value).__qualname__};".encode())


def content_digest(value: Any) -> str:
    """The hex sha256 of ``value``'s content (see the module docstring). Hashing reads every tensor
    once (about 0.3-0.5 s per GB on one core)."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()
