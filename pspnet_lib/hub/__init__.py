"""Pretrained weights: the zoo, downloads and caching, checkpoint conversion, the Hugging Face Hub.

See docs/weights.md (the zoo, offline use, converting checkpoints) and docs/hub.md.
"""

from ..data.metadata import DATASETS, DatasetInfo, get_dataset_info
from .download import ChecksumError, OfflineError, default_cache_dir, is_cached
from .loading import LoadReport, build_with_backbone_weights, load_pretrained, load_weights
from .registry import Weights, get_weight, list_pretrained, register_weights, unregister_weights
from .registry import get_weights as get_weights  # deprecated alias of get_weight (0.3)
from .serialization import CheckpointError

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
    "get_weight",
    "is_cached",
    "list_pretrained",
    "load_pretrained",
    "load_weights",
    "register_weights",
    "unregister_weights",
]
