"""Model definitions: dilated ResNet backbone, pyramid pooling, heads and PSPNet."""

from ._utils import ConvNormAct, FrozenBatchNorm2d, make_norm_layer
from .heads import FCNHead, PSPHead
from .ppm import PoolingBranch, PyramidPoolingModule
from .pspnet import BACKBONES, PRESETS, PSPNet, PSPNetConfig, build_pspnet
from .resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "BACKBONES",
    "PRESETS",
    "BasicBlock",
    "Bottleneck",
    "ConvNormAct",
    "FCNHead",
    "FrozenBatchNorm2d",
    "PSPHead",
    "PSPNet",
    "PSPNetConfig",
    "PoolingBranch",
    "PyramidPoolingModule",
    "ResNet",
    "build_pspnet",
    "make_norm_layer",
]
