"""Pretrained weights: the zoo, downloads and caching, checkpoint conversion, the Hugging Face Hub.

See docs/weights.md (the zoo, offline use, converting checkpoints) and docs/hub.md.
"""

from typing import Any

from ..data.registry import DATASET_INFO, DatasetInfo, get_dataset_info
from .download import ChecksumError, OfflineError, default_cache_dir, is_cached
from .loading import LoadReport, build_with_backbone_weights, load_pretrained, load_weights
from .registry import Weights, get_weight, list_pretrained, register_weights, unregister_weights
from .registry import get_weights as get_weights  # deprecated alias of get_weight (0.3)
from .serialization import CheckpointError

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


def __getattr__(name: str) -> Any:
    if name == "DATASETS":  # 0.2's name of DATASET_INFO
        import warnings

        warnings.warn(
            "pspnet_lib.hub.DATASETS is deprecated; use pspnet_lib.hub.DATASET_INFO (zoo key -> DatasetInfo)",
            DeprecationWarning,
            stacklevel=2,
        )
        return DATASET_INFO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
