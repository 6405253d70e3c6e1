"""The backbones under the pyramid ("encoders", as segmentation_models.pytorch calls them).

Two kinds, behind one small protocol that :class:`~pspnet_lib.models.PSPNet` relies on:

* ``"resnet18"`` ... ``"resnet152"``: the dilated ResNet of the paper
  (:class:`~pspnet_lib.models.resnet.ResNet`, this library's own, exact against mmsegmentation and
  hszhao/semseg; it never imports timm);
* ``"timm:<name>"``: any timm model that can build a feature extractor (``features_only=True``)
  at the requested output stride (:class:`~pspnet_lib.models.encoders.timm_encoder.TimmEncoder`;
  needs the ``timm`` extra). The stride it really has is measured, never trusted.

The protocol (what an encoder provides):

* ``forward(x) -> list[Tensor]``: the stage features ``(N, C_i, H / r_i, W / r_i)``, shallow to
  deep; the last one is at the output stride (the pyramid's input), the one before feeds the
  auxiliary head;
* ``feature_info``: one dict per returned stage with ``num_chs`` (channels), ``reduction``
  (stride relative to the input) and ``module`` (the module that produces it), timm's keys;
* ``out_channels``: ``[info["num_chs"] for info in feature_info]``;
* ``set_grad_checkpointing(enable)``: recompute activations in the backward pass, BatchNorm
  running statistics updated once per step as without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn as nn

from .._utils import NormLayer, make_norm_layer
from ..resnet import ResNet
from .timm_names import TIMM_KWARGS, TIMM_PREFIX, check_timm_name, is_timm_backbone, require_timm, timm_name

__all__ = [
    "Encoder",
    "build_encoder",
    "is_timm_backbone",
    "timm_name",
    "check_timm_name",
    "require_timm",
    "TIMM_PREFIX",
    "TIMM_KWARGS",
]


class Encoder(Protocol):
    """What PSPNet needs of a backbone (see the module docstring)."""

    feature_info: list[dict]

    @property
    def out_channels(self) -> list[int]: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]: ...


def build_encoder(
    config: Any, norm_layer: NormLayer | None = None, *, pretrained: Mapping[str, torch.Tensor] | None = None
) -> nn.Module:
    """The encoder a :class:`~pspnet_lib.models.PSPNetConfig` describes (random weights).

    ``pretrained`` (timm backbones only): ImageNet weights for timm's loader, a state dict in
    timm's layout (:mod:`pspnet_lib.hub.timm_weights` resolves them).
    ``norm_layer`` is the ResNet's (default: ``config.norm``); a timm encoder keeps its own norms.
    """
    if is_timm_backbone(config.backbone):
        from .timm_encoder import TimmEncoder  # (timm itself is imported when the model is built)

        return TimmEncoder(
            timm_name(config.backbone),
            output_stride=config.output_stride,
            in_channels=config.in_channels,
            model_kwargs=config.backbone_kwargs,
            pretrained=pretrained,
        )
    if pretrained is not None:
        raise ValueError("pretrained= applies to timm backbones; ResNet weights load with load_pretrained")
    return ResNet(
        config.depth,
        in_channels=config.in_channels,
        stem=config.stem,
        stem_channels=config.stem_channels,
        base_channels=config.base_channels,
        output_stride=config.output_stride,
        contract_dilation=config.contract_dilation,
        dilations=config.dilations,
        norm_layer=norm_layer or make_norm_layer(config.norm, config.norm_groups),
    )
