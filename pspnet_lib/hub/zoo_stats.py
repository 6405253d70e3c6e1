"""Deprecated path: ``pspnet_lib.hub.zoo_stats`` moved to :mod:`pspnet_lib.hub.zoo.stats` (the zoo wing).

Kept as a documented port (docs/architecture.md, "The ports") so that code and docs written for
0.1 keep working; it re-exports the module's names and warns once on import. Import from
``pspnet_lib.hub.zoo.stats`` (or the names ``pspnet_lib.hub`` exports) instead.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .zoo.stats import *  # noqa: F403  (the re-export this path exists for)
from .zoo.stats import (
    __all__,  # noqa: F401
    main,
)

warnings.warn(
    "pspnet_lib.hub.zoo_stats is deprecated; import from pspnet_lib.hub.zoo.stats",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """Names of the new module outside its ``__all__`` (e.g. helpers the docs name)."""
    return getattr(importlib.import_module("pspnet_lib.hub.zoo.stats"), name)


if __name__ == "__main__":
    main()
