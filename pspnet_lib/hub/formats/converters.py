"""State-dict converters: other projects' checkpoint layouts -> this library's keys.

Each layout is a list of regex rename rules applied to every key (the first rule that
matches wins; a key no rule matches is dropped only if it is listed as ignorable, so
nothing is lost silently). :func:`detect_format` recognises a layout from its keys, and
:func:`infer_config` reads the architecture from the weights' shapes; what shapes cannot
tell (``contract_dilation``, ``align_corners``) comes from the layout's documented defaults.
See docs/model.md ("State-dict layout") and docs/weights.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from ...core.escape import printable

__all__ = [
    "FORMATS",
    "LAYOUT_DEFAULTS",
    "convert_state_dict",
    "detect_format",
    "infer_config",
    "strip_prefix",
    "strip_wrappers",
    "select_ema",
    "WRAPPER_PREFIXES",
    "EMA_KEYS",
]

logger = logging.getLogger(__name__)

Rules = list[tuple[str, str]]

_NORM_FIELDS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

_RULES: dict[str, Rules] = {
    "pspnet_lib": [(r"^(.*)$", r"\1")],
    # mmsegmentation EncoderDecoder(ResNetV1c or ResNet, PSPHead, FCNHead).
    "mmseg": [
        (r"^backbone\.(.*)$", r"backbone.\1"),
        (r"^decode_head\.conv_seg\.(weight|bias)$", r"decode_head.classifier.\1"),
        (r"^decode_head\.psp_modules\.(\d+)\.1\.conv\.weight$", r"decode_head.ppm.branches.\1.conv.weight"),
        (rf"^decode_head\.psp_modules\.(\d+)\.1\.bn\.{_NORM_FIELDS}$", r"decode_head.ppm.branches.\1.norm.\2"),
        (r"^decode_head\.bottleneck\.conv\.weight$", r"decode_head.bottleneck.conv.weight"),
        (rf"^decode_head\.bottleneck\.bn\.{_NORM_FIELDS}$", r"decode_head.bottleneck.norm.\1"),
        (r"^auxiliary_head\.conv_seg\.(weight|bias)$", r"aux_head.classifier.\1"),
        (r"^auxiliary_head\.convs\.(\d+)\.conv\.weight$", r"aux_head.convs.\1.conv.weight"),
        (rf"^auxiliary_head\.convs\.(\d+)\.bn\.{_NORM_FIELDS}$", r"aux_head.convs.\1.norm.\2"),
    ],
    # hszhao/semseg PSPNet (after the DataParallel "module." prefix is stripped).
    "semseg": [
        (r"^layer0\.(\d+)\.(.*)$", r"backbone.stem.\1.\2"),
        (r"^(layer[1-4]\..*)$", r"backbone.\1"),
        (r"^ppm\.features\.(\d+)\.1\.weight$", r"decode_head.ppm.branches.\1.conv.weight"),
        (rf"^ppm\.features\.(\d+)\.2\.{_NORM_FIELDS}$", r"decode_head.ppm.branches.\1.norm.\2"),
        (r"^cls\.0\.weight$", r"decode_head.bottleneck.conv.weight"),
        (rf"^cls\.1\.{_NORM_FIELDS}$", r"decode_head.bottleneck.norm.\1"),
        (r"^cls\.4\.(weight|bias)$", r"decode_head.classifier.\1"),
        (r"^aux\.0\.weight$", r"aux_head.convs.0.conv.weight"),
        (rf"^aux\.1\.{_NORM_FIELDS}$", r"aux_head.convs.0.norm.\1"),
        (r"^aux\.4\.(weight|bias)$", r"aux_head.classifier.\1"),
    ],
    # torchvision ImageNet ResNets (and mmsegmentation's "R-xxb" backbones): 7x7 stem.
    "torchvision": [
        (r"^(conv1|bn1)\.(.*)$", r"backbone.\1.\2"),
        (r"^(layer[1-4]\..*)$", r"backbone.\1"),
    ],
    # mmsegmentation / mmcv ImageNet ResNetV1c backbones (resnet{18,50,101}_v1c).
    "mmseg_backbone": [
        (r"^(stem\.\d+\..*)$", r"backbone.\1"),
        (r"^(layer[1-4]\..*)$", r"backbone.\1"),
    ],
    # hszhao/semseg ImageNet "deep base" backbones (resnet{50,101,152}_v2.pth).
    "semseg_backbone": [
        (r"^conv1\.(.*)$", r"backbone.stem.0.\1"),
        (r"^bn1\.(.*)$", r"backbone.stem.1.\1"),
        (r"^conv2\.(.*)$", r"backbone.stem.3.\1"),
        (r"^bn2\.(.*)$", r"backbone.stem.4.\1"),
        (r"^conv3\.(.*)$", r"backbone.stem.6.\1"),
        (r"^bn3\.(.*)$", r"backbone.stem.7.\1"),
        (r"^(layer[1-4]\..*)$", r"backbone.\1"),
    ],
}

#: Keys a layout carries that have no counterpart here (ImageNet classifiers).
_IGNORABLE: dict[str, str] = {
    "torchvision": r"^fc\.(weight|bias)$",
    "mmseg_backbone": r"^fc\.(weight|bias)$",
    "semseg_backbone": r"^fc\.(weight|bias)$",
}

FORMATS = tuple(_RULES)

#: What a checkpoint's weights cannot tell about its architecture, per layout.
LAYOUT_DEFAULTS: dict[str, dict[str, Any]] = {
    "pspnet_lib": {},
    "mmseg": {"contract_dilation": True, "align_corners": False},
    "semseg": {"contract_dilation": False, "align_corners": True},
    "torchvision": {"contract_dilation": True, "align_corners": False},
    "mmseg_backbone": {"contract_dilation": True, "align_corners": False},
    "semseg_backbone": {"contract_dilation": False, "align_corners": True},
}

BACKBONE_FORMATS = ("torchvision", "mmseg_backbone", "semseg_backbone")


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Remove a prefix (DataParallel's ``module.``) when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


#: Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel's ``module.``
#: and ``torch.compile``'s ``_orig_mod.`` (nested in either order).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

#: Checkpoint entries holding an exponential moving average of the weights: timm's train script
#: (``state_dict_ema``), generic trainers (``model_ema``, ``ema``) and mmengine's EMAHook
#: (``ema_state_dict``). The average is preferred when present.
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")

#: Bookkeeping tensors of averaging wrappers (torch.optim.swa_utils.AveragedModel, mmengine).
_AVERAGING_COUNTERS = ("n_averaged", "steps")


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove every :data:`WRAPPER_PREFIXES` prefix that all keys carry (``module._orig_mod.x`` -> ``x``)."""
    state = dict(state_dict)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _tensors(mapping: Mapping[Any, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def select_ema(
    checkpoint: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The EMA weights of a checkpoint when it holds them, else ``state`` (both without wrapper prefixes).

    Recognised, in this order: a separate EMA state dict under one of :data:`EMA_KEYS`; copies
    of every parameter prefixed ``ema.`` in ``state`` (an ``ema`` sub-module); and mmcv's
    EMAHook buffers ``ema_<key with dots as underscores>`` (parameters only: BatchNorm statistics
    come from the model). A log line says which was used.
    """
    for key in EMA_KEYS:
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping) and (ema := _tensors(inner)):
            ema = strip_wrappers({k: v for k, v in ema.items() if k not in _AVERAGING_COUNTERS})
            logger.info("%s holds EMA weights under %r: loading those (the averaged model)", source, key)
            return ema
    state = strip_wrappers(state)
    copies = {k: v for k, v in state.items() if k.startswith("ema.")}
    if copies and len(copies) * 2 >= len(state):
        ema = strip_wrappers(
            {k[len("ema.") :]: v for k, v in copies.items() if k[len("ema.") :] not in _AVERAGING_COUNTERS}
        )
        logger.info("%s holds 'ema.' copies of the weights: loading those (the averaged model)", source)
        return ema
    flat = {k: v for k, v in state.items() if k.startswith("ema_")}
    if flat:
        plain = {k: v for k, v in state.items() if not k.startswith("ema_")}
        renamed = {k: flat[f"ema_{k.replace('.', '_')}"] for k in plain if f"ema_{k.replace('.', '_')}" in flat}
        if renamed and len(renamed) == len(flat):
            logger.info("%s holds 'ema_' copies of %d weights (mmcv EMAHook): loading those", source, len(renamed))
            return {**plain, **renamed}
    return state


def detect_format(state_dict: Mapping[str, Any]) -> str:
    """Name the layout of a state dict (see :data:`FORMATS`) from its keys."""
    keys = set(state_dict)

    def has(pattern: str) -> bool:
        rx = re.compile(pattern)
        return any(rx.match(k) for k in keys)

    if has(r"^decode_head\.ppm\.branches\.") or (has(r"^backbone\.") and has(r"^decode_head\.classifier\.")):
        return "pspnet_lib"
    if has(r"^decode_head\.psp_modules\.") or has(r"^decode_head\.conv_seg\."):
        return "mmseg"
    if has(r"^backbone\.(stem|conv1|layer1)\.") and not has(r"^decode_head\."):
        return "pspnet_lib"  # a backbone-only state dict in this library's layout
    if has(r"^layer0\.") and (has(r"^ppm\.features\.") or has(r"^cls\.")):
        return "semseg"
    if has(r"^stem\.\d+\.") and has(r"^layer1\."):
        return "mmseg_backbone"
    if has(r"^conv1\.") and has(r"^conv3\.weight$") and has(r"^layer1\."):
        return "semseg_backbone"
    if has(r"^conv1\.") and has(r"^layer1\."):
        return "torchvision"
    if any(k.startswith(WRAPPER_PREFIXES) for k in keys):
        raise ValueError(
            f"the checkpoint's keys carry wrapper prefixes ({', '.join(WRAPPER_PREFIXES)}) on some keys only "
            f"(first keys: {sorted(keys)[:5]}); save the unwrapped model's state dict (model.module / model._orig_mod)"
        )
    sample = sorted(keys)[:5]
    raise ValueError(
        f"cannot recognise the checkpoint layout from its keys (first keys: {sample}); "
        f"pass format= one of {', '.join(FORMATS)}"
    )


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], format: str) -> dict[str, torch.Tensor]:
    """Rename the keys of ``state_dict`` from ``format`` to this library's layout.

    Raises ``ValueError`` listing keys that no rule maps (a sign of a wrong ``format``).
    """
    if format not in _RULES:
        raise ValueError(f"unknown checkpoint format {format!r}; expected one of {', '.join(FORMATS)}")
    rules = [(re.compile(p), r) for p, r in _RULES[format]]
    ignorable = re.compile(_IGNORABLE[format]) if format in _IGNORABLE else None
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state_dict.items():
        for rx, repl in rules:
            if rx.match(key):
                out[rx.sub(repl, key)] = value
                break
        else:
            if ignorable is None or not ignorable.match(key):
                unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} key(s) of the {format!r} checkpoint have no counterpart in PSPNet, "
            f"e.g. {[printable(k, 120) for k in unmapped[:5]]}; is format={format!r} right? (valid: {', '.join(FORMATS)})"
        )
    return out


def infer_config(state_dict: Mapping[str, torch.Tensor], format: str = "pspnet_lib") -> dict[str, Any]:
    """Read the architecture from a state dict already in this library's layout.

    Returns the :class:`~pspnet_lib.PSPNetConfig` fields the weights determine (depth, stem,
    widths, classes, aux) merged over the ``format``'s defaults for what they cannot
    (``contract_dilation``, ``align_corners``). Head fields are absent for backbone-only weights.
    """
    cfg: dict[str, Any] = dict(LAYOUT_DEFAULTS.get(format, {}))
    sd = state_dict

    def dim(key: str, axis: int) -> int:
        """Size ``axis`` of the convolution weight ``key``; a missing or non-4-D tensor is one line."""
        value = sd.get(key)
        if value is None:
            raise ValueError(f"the weights hold no {key}, which the architecture is read from")
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != 4:
            raise ValueError(
                f"weight {key} has shape {list(shape)}, expected a 4-D convolution weight (out, in, kh, kw): "
                "the file is damaged or not a PSPNet checkpoint of this layout"
            )
        return int(shape[axis])

    def blocks(stage: int) -> int:
        rx = re.compile(rf"^backbone\.layer{stage}\.(\d+)\.")
        return len({int(m.group(1)) for k in sd if (m := rx.match(k))})

    counts = tuple(blocks(i) for i in range(1, 5))
    bottleneck = "backbone.layer1.0.conv3.weight" in sd
    depth_table: dict[tuple[bool, tuple[int, ...]], int] = {
        (False, (2, 2, 2, 2)): 18,
        (False, (3, 4, 6, 3)): 34,
        (True, (3, 4, 6, 3)): 50,
        (True, (3, 4, 23, 3)): 101,
        (True, (3, 8, 36, 3)): 152,
    }
    if (bottleneck, counts) not in depth_table:
        raise ValueError(f"cannot infer the ResNet depth from the weights (blocks per stage {counts})")
    cfg["backbone"] = f"resnet{depth_table[(bottleneck, counts)]}"
    if "backbone.stem.0.weight" in sd:
        cfg["stem"] = "deep"
        cfg["stem_channels"] = dim("backbone.stem.6.weight", 0)
        cfg["in_channels"] = dim("backbone.stem.0.weight", 1)
    elif "backbone.conv1.weight" in sd:
        cfg["stem"] = "standard"
        cfg["stem_channels"] = dim("backbone.conv1.weight", 0)
        cfg["in_channels"] = dim("backbone.conv1.weight", 1)
    else:
        raise ValueError("the weights hold no backbone stem (backbone.stem.* or backbone.conv1.*)")
    if "backbone.layer1.0.conv1.weight" in sd:  # layer1's width: 64 in every published ResNet
        cfg["base_channels"] = dim("backbone.layer1.0.conv1.weight", 0)

    if "decode_head.classifier.weight" in sd:
        cfg["num_classes"] = dim("decode_head.classifier.weight", 0)
        cfg["head_channels"] = dim("decode_head.classifier.weight", 1)
        branches = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^decode_head\.ppm\.branches\.(\d+)\.", k))})
        first = f"decode_head.ppm.branches.{branches[0]}.conv.weight" if branches else ""
        if first in sd:  # the grid sizes themselves leave no trace in the weights: bins stay (1, 2, 3, 6)
            cfg["ppm_channels"] = dim(first, 0)
        cfg["aux"] = "aux_head.classifier.weight" in sd
        if cfg["aux"]:
            cfg["aux_channels"] = dim("aux_head.classifier.weight", 1)
    return cfg
