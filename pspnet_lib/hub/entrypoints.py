"""Model families behind the torch.hub entry points in ``hubconf.py`` (``pspnet_r50_d8(...)`` etc.)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..models.pspnet import PSPNet, PSPNetConfig, build_pspnet
from .loading import load_pretrained
from .registry import get_weights, resolve_name

__all__ = ["FAMILIES", "Family", "build_family"]


@dataclass(frozen=True)
class Family:
    """One architecture (backbone depth, stem, output stride) and its default weights."""

    code: str
    architecture: dict
    default_weights: str | None
    default_backbone_weights: str | None
    description: str


def _arch(depth: int, stem: str, output_stride: int, **extra: Any) -> dict:
    arch = {"backbone": f"resnet{depth}", "stem": stem, "output_stride": output_stride}
    if output_stride == 32:
        arch["dilations"] = [1, 1, 2, 4]
    arch.update(extra)
    return arch


FAMILIES: dict[str, Family] = {
    f.code: f
    for f in (
        Family("r18-d8", _arch(18, "deep", 8), "pspnet_r18-d8_cityscapes-512x1024-80k", "resnet18_v1c",
               "mmsegmentation R-18-D8 (ResNetV1c, deep stem, output stride 8)"),
        Family("r50-d8", _arch(50, "deep", 8), "pspnet_r50-d8_ade20k-512x512-160k", "resnet50_v1c",
               "mmsegmentation R-50-D8 (ResNetV1c, deep stem, output stride 8)"),
        Family("r101-d8", _arch(101, "deep", 8), "pspnet_r101-d8_ade20k-512x512-160k", "resnet101_v1c",
               "mmsegmentation R-101-D8 (ResNetV1c, deep stem, output stride 8)"),
        Family("r18b-d8", _arch(18, "standard", 8), "pspnet_r18b-d8_cityscapes-512x1024-80k", "resnet18_torchvision",
               "mmsegmentation R-18b-D8 (torchvision 7x7 stem, output stride 8)"),
        Family("r50b-d8", _arch(50, "standard", 8), "pspnet_r50b-d8_cityscapes-512x1024-80k", "resnet50_torchvision",
               "mmsegmentation R-50b-D8 (torchvision 7x7 stem, output stride 8)"),
        Family("r101b-d8", _arch(101, "standard", 8), "pspnet_r101b-d8_cityscapes-512x1024-80k", "resnet101_torchvision",
               "mmsegmentation R-101b-D8 (torchvision 7x7 stem, output stride 8)"),
        Family("r50-d32", _arch(50, "deep", 32), "pspnet_r50-d32_cityscapes-512x1024-80k", "resnet50_v1c",
               "mmsegmentation R-50-D32 (deep stem; layer3/4 strided and dilated, output stride 32)"),
        Family("r50b-d32", _arch(50, "standard", 32), "pspnet_r50b-d32_cityscapes-512x1024-80k", "resnet50_torchvision",
               "mmsegmentation R-50b-D32 (7x7 stem; layer3/4 strided and dilated, output stride 32)"),
        Family("semseg50", _arch(50, "deep", 8, stem_channels=128, contract_dilation=False, align_corners=True), None, None,
               "the author's PSPNet-50 (hszhao/semseg: deep base 64-64-128, every layer3/4 block dilated)"),
        Family("semseg101", _arch(101, "deep", 8, stem_channels=128, contract_dilation=False, align_corners=True), None, None,
               "the author's PSPNet-101 (hszhao/semseg: deep base 64-64-128, every layer3/4 block dilated)"),
    )
}

_ARCH_KEYS = ("backbone", "stem", "stem_channels", "output_stride", "dilations", "contract_dilation")


def _matches(family: Family, config: dict) -> bool:
    full = PSPNetConfig.from_dict({**family.architecture}).to_dict()
    return all(full.get(k) == config.get(k) for k in _ARCH_KEYS)


def build_family(code: str, pretrained: bool | str | os.PathLike = False, num_classes: int | None = None, **kwargs: Any) -> PSPNet:
    """Build a model of family ``code``; see the entry points in ``hubconf.py`` for the arguments."""
    family = FAMILIES[code]
    entry = code.replace("-", "_")
    if pretrained is True:
        if family.default_weights is None:
            raise ValueError(
                f"pspnet_{entry} has no downloadable default weights (the author's checkpoints are distributed by "
                "hand); pass pretrained='path/to/checkpoint.pth' (or a URL) instead"
            )
        pretrained = family.default_weights
    if pretrained is not False and pretrained is not None:
        source = os.fspath(pretrained)
        try:
            name = resolve_name(source)
        except ValueError:
            name = None
        if name is not None:
            weights = get_weights(name)
            if weights.task != "semantic-segmentation" or not _matches(family, PSPNetConfig.from_dict(weights.config).to_dict()):
                raise ValueError(
                    f"{name!r} is not a pspnet_{entry} checkpoint ({family.description}); "
                    f"pick one of list_pretrained('pspnet_{code}_*'), or use pspnet_lib.load_pretrained({name!r})"
                )
        return load_pretrained(source, num_classes=num_classes, **kwargs)
    if kwargs.get("weights_backbone") is True:
        if family.default_backbone_weights is None:
            raise ValueError(f"pspnet_{entry} has no downloadable ImageNet backbone; pass weights_backbone='path/to/file'")
        kwargs["weights_backbone"] = family.default_backbone_weights
    options = {**family.architecture, **kwargs}
    backbone = options.pop("backbone")
    return build_pspnet(backbone, 21 if num_classes is None else num_classes, **options)
