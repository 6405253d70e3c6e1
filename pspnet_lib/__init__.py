"""pspnet_lib: a faithful, pretrained, fast PSPNet for PyTorch."""

from .models import PRESETS, PSPNet, PSPNetConfig, PyramidPoolingModule, ResNet, build_pspnet
from .runtime import optimize_for_inference

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "PSPNet",
    "PSPNetConfig",
    "PyramidPoolingModule",
    "ResNet",
    "build_pspnet",
    "optimize_for_inference",
]
