"""Pretrained weights: the zoo, downloads and caching, checkpoint conversion, the Hugging Face Hub.

See docs/weights.md (the zoo, offline use, converting checkpoints) and docs/hub.md. The modules
are grouped in wings (``zoo/``, ``formats/``, ``cache/``; docs/architecture.md); the flat paths
of 0.1 (``pspnet_lib.hub.registry``, ...) still import, as the moved module itself, with a
``DeprecationWarning`` (:data:`MOVED_MODULES`).
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

from ..data.registry import DATASET_INFO, DatasetInfo, get_dataset_info
from .cache import ChecksumError, OfflineError, default_cache_dir, is_cached
from .formats.serialization import CheckpointError
from .load_report import LoadReport, load_weights
from .loading import build_with_backbone_weights, load_pretrained
from .zoo.registry import get_weight, list_pretrained, register_weights, unregister_weights
from .zoo.registry import get_weights as get_weights  # deprecated alias of get_weight (0.3)
from .zoo.weights import Weights

__all__ = [
    "DATASET_INFO",
    "CheckpointError",
    "ChecksumError",
    "DatasetInfo",
    "LoadReport",
    "OfflineError",
    "Weights",
    "build_with_backbone_weights",
    "default_cache_dir",
    "get_dataset_info",
    "get_weight",
    "is_cached",
    "list_pretrained",
    "load_pretrained",
    "load_weights",
    "register_weights",
    "unregister_weights",
]

#: The flat paths of 0.1 that docs, ``hubconf.py`` and users import -> the module now holding the
#: code. ``import pspnet_lib.hub.registry`` gives ``pspnet_lib.hub.zoo.registry`` itself (one
#: module object: a patch through the old path reaches the code) and warns once.
MOVED_MODULES = {
    "pspnet_lib.hub.download": "pspnet_lib.hub.cache",
    "pspnet_lib.hub.serialization": "pspnet_lib.hub.formats.serialization",
    "pspnet_lib.hub.converters": "pspnet_lib.hub.formats.converters",
    "pspnet_lib.hub.registry": "pspnet_lib.hub.zoo.registry",
    "pspnet_lib.hub.preprocessing": "pspnet_lib.hub.zoo.preprocessing",
    "pspnet_lib.hub.zoo_stats": "pspnet_lib.hub.zoo.stats",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED_MODULES` (asked only when no file has the name)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        moved = importlib.util.find_spec(MOVED_MODULES[fullname])
        return importlib.machinery.ModuleSpec(fullname, self, origin=moved.origin if moved else None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} is deprecated; import from {new}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # put back by exec_module (the import system sets ours)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The moved module ran when it was imported; it keeps its own spec (its relative imports).
        module.__spec__ = module.__spec__.loader_state if module.__spec__ else None

    def get_code(self, fullname: str) -> types.CodeType:
        """``python -m <old path>``: runs the moved module's command line."""
        return compile(f"from {MOVED_MODULES[fullname]} import main\nmain()\n", fullname, "exec")


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name == "DATASETS":  # 0.2's name of DATASET_INFO
        warnings.warn(
            "pspnet_lib.hub.DATASETS is deprecated; use pspnet_lib.hub.DATASET_INFO (zoo key -> DatasetInfo)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DATASET_INFO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
