"""pspnet_lib: a faithful, pretrained, fast PSPNet for PyTorch."""

from ._version import __version__
from .assets import sample_images
from .core.pretrained_cfg import InferenceProtocol, PretrainedCfg
from .hub import get_weights as get_weights  # deprecated alias of get_weight (0.3)
from .hub import list_pretrained, load_pretrained
from .hub.entrypoints import get_model, list_models
from .hub.registry import get_model_weights, get_weight
from .inference.batch import predict_files
from .inference.predict import Prediction, predict
from .inference.rasters import predict_raster
from .inference.segmenter import Segmenter
from .inference.visualize import colorize, legend, overlay
from .models import PRESETS, PSPNet, PSPNetConfig, PyramidPoolingModule, ResNet, build_pspnet
from .runtime import optimize_for_inference

__all__ = [
    "__version__",
    "InferenceProtocol",
    "PRESETS",
    "PSPNet",
    "PSPNetConfig",
    "Prediction",
    "PretrainedCfg",
    "PyramidPoolingModule",
    "ResNet",
    "Segmenter",
    "build_pspnet",
    "colorize",
    "get_model",
    "get_model_weights",
    "get_weight",
    "legend",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "optimize_for_inference",
    "overlay",
    "predict",
    "predict_files",
    "predict_raster",
    "sample_images",
]
