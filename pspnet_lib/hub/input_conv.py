"""RGB weights on N bands: adapting the first convolution of a checkpoint to the model's input channels.

A model built for ``in_channels`` N (multispectral bands, grey pictures) can start from RGB
weights (ImageNet backbones, zoo models). Only the first convolution depends on the channel
count; :func:`adapt_input_conv` turns its RGB weight ``(O, 3, kH, kW)`` into ``(O, N, kH, kW)`` by
one of two documented rules, and :func:`adapt_state_dict` applies it to the state dict being
loaded, finding the convolution by name in the model (:func:`input_conv_key`), whatever the
backbone: the first ``nn.Conv2d`` (in module order) that takes the model's input channels.

* timm's rule (``timm.models.adapt_input_conv``, used by ``timm.create_model(..., in_chans=N)``):
  one band: the sum of the RGB weights (a grey picture ``g`` gives what RGB ``(g, g, g)`` gave);
  N bands: the RGB weights repeated (R, G, B, R, ...) and scaled by ``3 / N`` (N equal bands give
  what an RGB picture of that value gave).
* ``rgb_bands=(r, g, b)``: the RGB weights copied into those band positions (0-based; e.g.
  ``(3, 2, 1)`` for Sentinel-2's 13 bands B01..B12, whose red, green and blue are B04, B03, B02),
  the other bands' weights zero: the model first sees the RGB bands exactly as the RGB weights
  did, and training gives the other bands their weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..core.constants import GENERIC_MEAN, GENERIC_STD, input_channels

__all__ = [
    "adapt_input_conv",
    "adapt_loaded_input_conv",
    "adapt_state_dict",
    "adapted_input_stats",
    "check_rgb_bands",
    "input_conv_key",
]


def check_rgb_bands(rgb_bands: Sequence[int] | None, in_channels: int) -> tuple[int, int, int] | None:
    """``rgb_bands`` as a tuple, checked: three distinct band positions in ``0..in_channels - 1``.

    Raises ``ValueError`` naming the setting (and the CLI flag ``--rgb-bands``).
    """
    if rgb_bands is None:
        return None
    items = list(rgb_bands) if isinstance(rgb_bands, (list, tuple)) else []
    if not (
        len(items) == 3
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < in_channels for i in items)
        and len(set(items)) == 3
    ):
        raise ValueError(
            f"rgb_bands must be three different band positions (red, green, blue) in 0..{in_channels - 1} for a "
            f"model of {in_channels} input channels, got {rgb_bands!r} (CLI: --rgb-bands 3,2,1)"
        )
    return items[0], items[1], items[2]


def adapt_input_conv(
    weight: torch.Tensor, in_channels: int, rgb_bands: Sequence[int] | None = None
) -> tuple[torch.Tensor, str]:
    """An RGB first-convolution weight ``(O, 3, kH, kW)`` for ``in_channels`` inputs, and what was done.

    See the module's docstring for the two rules. Raises ``ValueError`` for a weight that does not
    take 3 channels, or bad ``rgb_bands``.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(
            f"only RGB weights (a first convolution of 3 input channels) can be adapted to {in_channels} bands, "
            f"got a weight of shape {list(weight.shape)}"
        )
    bands = check_rgb_bands(rgb_bands, in_channels)
    dtype = weight.dtype
    source = weight.float()
    if bands is not None:
        adapted = source.new_zeros(source.shape[0], in_channels, *source.shape[2:])
        adapted[:, list(bands)] = source
        others = in_channels - 3
        how = f"RGB weights copied into bands {bands} (red, green, blue) of {in_channels}" + (
            f", the other {others} band(s) zero (rgb_bands)" if others else " (rgb_bands)"
        )
    elif in_channels == 1:
        adapted = source.sum(dim=1, keepdim=True)
        how = "RGB weights summed into 1 band (timm's adapt_input_conv rule)"
    else:
        repeats = math.ceil(in_channels / 3)
        adapted = source.repeat(1, repeats, 1, 1)[:, :in_channels] * (3.0 / in_channels)
        how = f"RGB weights repeated over {in_channels} bands and scaled by 3/{in_channels} (timm's adapt_input_conv rule)"
    return adapted.to(dtype).contiguous(), how


def input_conv_key(model: nn.Module) -> str | None:
    """The state-dict key of the model's first convolution: the first ``nn.Conv2d`` (module order)
    taking the model's input channels (``config.in_channels``); None when there is none."""
    channels = input_channels(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == channels:
            return f"{name}.weight" if name else "weight"
    return None


def adapt_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, rgb_bands: Sequence[int] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state_dict`` with the model's first convolution adapted from RGB, and ``{key: what was done}``.

    Adapts when the checkpoint's first convolution takes 3 channels and the model another count,
    or whenever ``rgb_bands`` is given; anything else is returned unchanged (a mismatch left for
    the loader to report). Raises ``ValueError`` when ``rgb_bands`` is given but the checkpoint
    holds no RGB first convolution for the model, or ``rgb_bands`` is invalid.
    """
    key = input_conv_key(model)
    weight = state_dict.get(key) if key is not None else None
    channels = input_channels(model)
    rgb = weight is not None and weight.ndim == 4 and weight.shape[1] == 3
    if rgb_bands is not None:
        check_rgb_bands(rgb_bands, channels)
        if not rgb:
            found = "no such key" if weight is None else f"shape {list(weight.shape)}"
            raise ValueError(
                f"rgb_bands={tuple(rgb_bands)!r} needs RGB weights for the model's first convolution {key} "
                f"({found} in the checkpoint): load RGB (3-channel) weights, or leave rgb_bands out"
            )
    elif not rgb or channels == 3:
        return dict(state_dict), {}
    assert key is not None and weight is not None  # rgb implies both
    out = dict(state_dict)
    out[key], how = adapt_input_conv(weight, channels, rgb_bands)
    return out, {key: how}


def adapt_loaded_input_conv(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], rgb_bands: Sequence[int] | None = None
) -> dict[str, str]:
    """The model's first convolution set from the RGB weight in ``state_dict`` by the rules above,
    for encoders whose own loader placed the weights (timm's, which adapts RGB weights by the same
    rule but knows no ``rgb_bands``). The RGB weight is found by shape: the one ``(O, 3, kH, kW)``
    tensor matching the model's first convolution (the names differ: ``stem.0`` / ``stem_0``).

    Returns ``{key: what was done}`` ({} for an RGB model without ``rgb_bands``). Raises
    ``ValueError`` when ``rgb_bands`` is given but no single RGB weight fits, or ``rgb_bands`` is invalid.
    """
    key, channels = input_conv_key(model), input_channels(model)
    target = dict(model.named_parameters()).get(key or "")
    if target is None or (channels == 3 and rgb_bands is None):
        return {}
    shape = (target.shape[0], 3, *target.shape[2:])
    sources = [v for v in state_dict.values() if tuple(v.shape) == shape]
    if len(sources) != 1:
        if rgb_bands is not None:
            raise ValueError(
                f"rgb_bands={tuple(rgb_bands)!r} needs one RGB weight of shape {list(shape)} for the model's first "
                f"convolution {key}; the weights hold {len(sources)}: load RGB (3-channel) weights, or leave rgb_bands out"
            )
        return {}
    weight, how = adapt_input_conv(sources[0], channels, rgb_bands)
    with torch.no_grad():
        target.copy_(weight)
    return {key or "weight": how}


def adapted_input_stats(
    pretrained_cfg: Mapping[str, Any], in_channels: int, rgb_bands: Sequence[int] | None = None
) -> dict[str, list[float]]:
    """The stored RGB ``mean``/``std`` of adapted weights, for ``in_channels`` bands, by the rule the
    weights were adapted with: ``rgb_bands`` keeps them at those positions (the others take
    :data:`~pspnet_lib.core.constants.GENERIC_MEAN`/``GENERIC_STD``); timm's rule repeats them
    (R, G, B, R, ...) or, for 1 band, averages them. Entries that are not three numbers are left out.
    A band spec's own statistics (``pretrained_cfg`` argument, ``--band-spec``) replace these.
    """
    out: dict[str, list[float]] = {}
    for key, generic in (("mean", GENERIC_MEAN), ("std", GENERIC_STD)):
        values = pretrained_cfg.get(key)
        if not (isinstance(values, (list, tuple)) and len(values) == 3):
            continue
        rgb = [float(v) for v in values]
        if rgb_bands is not None:
            stats = [generic] * in_channels
            for position, value in zip(rgb_bands, rgb):
                stats[position] = value
        elif in_channels == 1:
            stats = [sum(rgb) / 3]
        else:
            stats = [rgb[i % 3] for i in range(in_channels)]
        out[key] = stats
    return out
