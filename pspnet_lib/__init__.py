"""pspnet_lib: a faithful, pretrained, fast PSPNet for PyTorch."""

from .hub import get_weights, list_pretrained, load_pretrained
from .models import PRESETS, PSPNet, PSPNetConfig, PyramidPoolingModule, ResNet, build_pspnet

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "PSPNet",
    "PSPNetConfig",
    "PyramidPoolingModule",
    "ResNet",
    "build_pspnet",
    "get_weights",
    "list_pretrained",
    "load_pretrained",
]
