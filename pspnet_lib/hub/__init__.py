"""Pretrained weights: the zoo, downloads and caching, checkpoint conversion, the Hugging Face Hub.

See docs/weights.md (the zoo, offline use, converting checkpoints) and docs/hub.md.
"""

from ..data.metadata import DATASETS, DatasetInfo, get_dataset_info
from .cache import ChecksumError, OfflineError, default_cache_dir, is_cached
from .formats.serialization import CheckpointError
from .load_report import LoadReport, load_weights
from .loading import build_with_backbone_weights, load_pretrained
from .zoo.registry import get_weights, list_pretrained, register_weights, unregister_weights
from .zoo.weights import Weights

__all__ = [
    "DATASETS",
    "CheckpointError",
    "ChecksumError",
    "DatasetInfo",
    "LoadReport",
    "OfflineError",
    "Weights",
    "build_with_backbone_weights",
    "default_cache_dir",
    "get_dataset_info",
    "get_weights",
    "is_cached",
    "list_pretrained",
    "load_pretrained",
    "load_weights",
    "register_weights",
    "unregister_weights",
]
