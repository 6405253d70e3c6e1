"""The named PSPNet variants: one table that presets, the weights zoo, ``get_model`` and hubconf read.

A variant is an architecture (backbone depth, stem, output stride, the author's layout) without
the class count. Its **model name** is ``pspnet_<code>`` with ``-`` written as ``_`` (a Python
identifier, so it is also the torch.hub entry point): variant ``r50-d8`` is model
``pspnet_r50_d8``, and the zoo's weights of that variant are named ``pspnet_r50-d8_<dataset>-...``
(mmsegmentation's code; ``-rsb``/``-fp16`` suffixes mark the training, not the architecture).

The default weights are zoo names (data only: this module imports nothing from ``pspnet_lib.hub``).
The timm variants (``pspnet_convnext_tiny_d8``, ...) put the pyramid on a timm encoder at output
stride 8 (they need the ``timm`` extra); they have no released segmentation weights, and their
``weights_backbone=True`` means timm's default ImageNet weights of the encoder (``"DEFAULT"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Variant", "VARIANTS", "PRESETS", "model_name", "get_variant", "variant_of_code"]

#: mmsegmentation's "D32" models stride layer3/4 *and* keep their dilations (2, 4).
_D32_DILATIONS = [1, 1, 2, 4]
#: hszhao/semseg (the author's release): deep base 64-64-128, every layer3/4 block dilated.
_SEMSEG_LAYOUT: dict[str, Any] = {"stem_channels": 128, "contract_dilation": False, "align_corners": True}

#: Named override sets for the layouts of the two projects that released weights
#: (``build_pspnet(preset=...)``).
PRESETS: dict[str, dict[str, Any]] = {
    # mmsegmentation "R-xx-D8" (ResNetV1c): the default.
    "mmseg": {},
    # mmsegmentation "R-xxb-D8": torchvision-style 7x7 stem.
    "mmseg-b": {"stem": "standard"},
    "semseg": dict(_SEMSEG_LAYOUT),
}


@dataclass(frozen=True)
class Variant:
    """One architecture and its defaults.

    Attributes:
        code: mmsegmentation-style code (``r50-d8``, ``r50b-d32``, ``semseg50``).
        architecture: :class:`~pspnet_lib.PSPNetConfig` fields (no ``num_classes``).
        default_weights: zoo name used for ``weights="DEFAULT"`` / ``pretrained=True``, or None.
        default_backbone_weights: zoo name of the ImageNet backbone (``weights_backbone=True``).
        description: one line for docs and ``help()``.
    """

    code: str
    architecture: dict[str, Any] = field(default_factory=dict)
    default_weights: str | None = None
    default_backbone_weights: str | None = None
    description: str = ""

    @property
    def name(self) -> str:
        """The model name (``get_model`` / ``list_models`` / the hubconf entry point)."""
        return model_name(self.code)


def model_name(code: str) -> str:
    """``"r50-d8"`` -> ``"pspnet_r50_d8"``."""
    return "pspnet_" + code.replace("-", "_")


def _arch(depth: int, stem: str, output_stride: int, **extra: Any) -> dict[str, Any]:
    arch: dict[str, Any] = {"backbone": f"resnet{depth}", "stem": stem, "output_stride": output_stride}
    if output_stride == 32:
        arch["dilations"] = list(_D32_DILATIONS)
    arch.update(extra)
    return arch


def _mmseg(depth: int, b: bool, output_stride: int, default: str | None) -> Variant:
    code = f"r{depth}{'b' if b else ''}-d{output_stride}"
    stem = "torchvision 7x7 stem" if b else "ResNetV1c, deep stem"
    layout = "layer3/4 strided and dilated, output stride 32" if output_stride == 32 else "output stride 8"
    return Variant(
        code,
        _arch(depth, "standard" if b else "deep", output_stride),
        default,
        f"resnet{depth}_torchvision" if b else f"resnet{depth}_v1c",
        f"mmsegmentation R-{depth}{'b' if b else ''}-D{output_stride} ({stem}, {layout})",
    )


VARIANTS: dict[str, Variant] = {
    v.code: v
    for v in (
        _mmseg(18, False, 8, "pspnet_r18-d8_cityscapes-512x1024-80k"),
        _mmseg(50, False, 8, "pspnet_r50-d8_ade20k-512x512-160k"),
        _mmseg(101, False, 8, "pspnet_r101-d8_ade20k-512x512-160k"),
        _mmseg(18, True, 8, "pspnet_r18b-d8_cityscapes-512x1024-80k"),
        _mmseg(50, True, 8, "pspnet_r50b-d8_cityscapes-512x1024-80k"),
        _mmseg(101, True, 8, "pspnet_r101b-d8_cityscapes-512x1024-80k"),
        _mmseg(50, False, 32, "pspnet_r50-d32_cityscapes-512x1024-80k"),
        _mmseg(50, True, 32, "pspnet_r50b-d32_cityscapes-512x1024-80k"),
        Variant(
            "semseg50",
            _arch(50, "deep", 8, **_SEMSEG_LAYOUT),
            None,
            None,
            "the author's PSPNet-50 (hszhao/semseg: deep base 64-64-128, every layer3/4 block dilated)",
        ),
        Variant(
            "semseg101",
            _arch(101, "deep", 8, **_SEMSEG_LAYOUT),
            None,
            None,
            "the author's PSPNet-101 (hszhao/semseg: deep base 64-64-128, every layer3/4 block dilated)",
        ),
    )
}


def _timm(code: str, model: str, title: str) -> Variant:
    return Variant(
        code,
        {"backbone": f"timm:{model}", "output_stride": 8},
        None,
        "DEFAULT",
        f"{title} from timm ({model}) at output stride 8 (its last stages dilated), PSP head on its last stage",
    )


VARIANTS.update(
    (v.code, v)
    for v in (
        _timm("convnext-tiny-d8", "convnext_tiny", "ConvNeXt-T"),
        _timm("regnety-040-d8", "regnety_040", "RegNetY-4GF"),
        _timm("efficientnet-b3-d8", "efficientnet_b3", "EfficientNet-B3"),
        _timm("mobilenetv3-large-d8", "mobilenetv3_large_100", "MobileNetV3-Large"),
    )
)

_CODE = re.compile(r"^r(?P<depth>\d+)(?P<b>b?)-d(?P<os>8|32)(?:-(?P<suffix>rsb|fp16))?$")


def variant_of_code(code: str) -> Variant:
    """The variant of a zoo backbone code (``r50-d8``, ``r50b-d8-rsb``, ``r101-d8-fp16``)."""
    match = _CODE.match(code)
    if not match:
        raise ValueError(f"unknown backbone code {code!r}")
    return VARIANTS[f"r{match['depth']}{match['b']}-d{match['os']}"]


def get_variant(name: str) -> Variant:
    """The variant of a model name (``pspnet_r50_d8``; ``pspnet_r50-d8`` and ``r50-d8`` work too)."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a str, got {type(name).__name__}")
    code = name.removeprefix("pspnet_").replace("_", "-")
    if code in VARIANTS:
        return VARIANTS[code]
    import difflib

    names = [v.name for v in VARIANTS.values()]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(names)} (pspnet_lib.list_models())")
