"""pspnet_lib: a faithful, pretrained, fast PSPNet for PyTorch."""

from .assets import sample_images
from .inference.predict import Prediction, predict
from .inference.visualize import colorize, legend, overlay
from .models import PRESETS, PSPNet, PSPNetConfig, PyramidPoolingModule, ResNet, build_pspnet

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "PSPNet",
    "PSPNetConfig",
    "Prediction",
    "PyramidPoolingModule",
    "ResNet",
    "build_pspnet",
    "colorize",
    "legend",
    "overlay",
    "predict",
    "sample_images",
]
