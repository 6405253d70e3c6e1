"""Deprecated path: ``pspnet_lib.hub.download`` moved to :mod:`pspnet_lib.hub.cache` (the cache wing).

Kept as a documented port (docs/architecture.md, "The ports") so that code and docs written for
0.1 keep working; it re-exports the module's names and warns once on import. Import from
``pspnet_lib.hub.cache`` (or the names ``pspnet_lib.hub`` exports) instead.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .cache import *  # noqa: F403  (the re-export this path exists for)
from .cache import __all__  # noqa: F401

warnings.warn(
    "pspnet_lib.hub.download is deprecated; import from pspnet_lib.hub.cache",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """Names of the new module outside its ``__all__`` (e.g. helpers the docs name)."""
    return getattr(importlib.import_module("pspnet_lib.hub.cache"), name)
