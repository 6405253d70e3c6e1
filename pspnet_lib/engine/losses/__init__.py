"""The training loss's parts: the terms (cross-entropy, focal, Dice, Lovász-softmax), the OHEM pixel
sampler and the loss spec that names them. :class:`pspnet_lib.engine.loss.PSPNetLoss` puts them together
for the main and auxiliary heads."""

from .ohem import OHEMPixelSampler
from .spec import (
    ALIASES,
    SAMPLERS,
    TERMS,
    build_loss_terms,
    build_sampler,
    parse_loss,
    parse_sampler,
)
from .terms import CrossEntropyLoss, DiceLoss, FocalLoss, LossTerm, LovaszLoss, check_class_weight

__all__ = [
    "ALIASES",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LossTerm",
    "LovaszLoss",
    "OHEMPixelSampler",
    "SAMPLERS",
    "TERMS",
    "build_loss_terms",
    "build_sampler",
    "check_class_weight",
    "parse_loss",
    "parse_sampler",
]
