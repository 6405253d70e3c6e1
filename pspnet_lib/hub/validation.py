"""Checks on what a weights source says, before anything is allocated or trusted.

Files come from strangers: ``config.json``, safetensors metadata, ``pretrained_cfg`` entries and
the tensors themselves are checked here, for every source (zoo, folders, ``.safetensors``,
``hf-hub:``, ``.pth``), so that a bad value is one line naming the file and the key instead of
an allocator error, a torch overload dump at predict time, or silently wrong predictions.
The architecture itself is checked by :meth:`pspnet_lib.PSPNetConfig.from_dict`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from ..core.geometry import MODES
from ..models.config import MAX_IN_CHANNELS, MAX_NUM_CLASSES

__all__ = ["MAX_SIDE", "validate_pretrained_cfg", "check_tensors", "warn_unknown"]

logger = logging.getLogger(__name__)

#: Largest image side a stored protocol may ask for (resize, crop, stride), in pixels: 4x the
#: largest published protocol (Cityscapes' 2048x1024); ``resize=[100000, 100000]`` would make
#: predicting a 40x56 photo allocate 85 GB.
MAX_SIDE = 8192
#: Largest test-time scale factor (mmsegmentation's multi-scale protocol goes up to 1.75).
MAX_SCALE = 8.0


def warn_unknown(keys: Any, known: Any, source: str, what: str) -> list[str]:
    """Log one warning naming ``source`` and the keys of ``keys`` outside ``known``; returns them."""
    unknown = sorted(str(k) for k in keys if k not in known)
    if unknown:
        logger.warning("%s: ignoring unknown %s key(s) %s (written by another version or tool?)", source, what, unknown)
    return unknown


def _fail(source: str, key: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ValueError(f"{source}: pretrained_cfg {key} must be {expected}, got {shown}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _size(value: Any, key: str, source: str, *, pair_only: bool = False) -> Any:
    """An int or ``[a, b]`` of pixel sizes in ``[1, MAX_SIDE]``."""
    expected = f"{'' if pair_only else 'an integer or '}a pair of integers in [1, {MAX_SIDE}]"
    if _is_int(value) and not pair_only:
        items = [value]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        items = list(value)
    else:
        raise _fail(source, key, expected, value)
    if not all(_is_int(v) and 1 <= v <= MAX_SIDE for v in items):
        raise _fail(source, key, expected, value)
    return value


def _scales(value: Any, key: str, source: str) -> Any:
    if value is None:
        return None
    if not (
        isinstance(value, (list, tuple))
        and 1 <= len(value) <= 16
        and all(_is_number(s) and 0 < s <= MAX_SCALE for s in value)
    ):
        raise _fail(source, key, f"a list of 1 to 16 numbers in (0, {MAX_SCALE:g}]", value)
    return value


def _protocol(value: Any, key: str, source: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _fail(source, key, "a mapping", value)
    mode = value.get("mode")
    if mode is not None and mode not in MODES:
        raise _fail(source, f"{key}.mode", f"one of {', '.join(MODES)}", mode)
    if value.get("resize") is not None:
        _size(value["resize"], f"{key}.resize", source, pair_only=True)
    for name in ("crop", "stride"):
        if value.get(name) is not None:
            _size(value[name], f"{key}.{name}", source)
    _scales(value.get("scales"), f"{key}.scales", source)
    if value.get("flip") is not None and not isinstance(value["flip"], bool):
        raise _fail(source, f"{key}.flip", "true or false", value["flip"])


def validate_pretrained_cfg(cfg: Any, source: str, *, in_channels: int | None = None) -> dict[str, Any]:
    """Check the entries of a ``pretrained_cfg`` that the library uses; returns it as a dict.

    Checked: ``mean``/``std`` (finite numbers, as many as the input channels or one, ``std``
    positive), ``classes`` (strings), ``palette`` (``[r, g, b]`` integers in 0..255),
    ``ignore_index`` (an integer), ``reduce_zero_label`` (a bool), ``inference`` and ``tta``
    (``mode``; ``resize``/``crop``/``stride`` within ``[1, MAX_SIDE]`` pixels; ``scales`` in
    ``(0, MAX_SCALE]``; ``flip`` a bool). Other entries are descriptive and kept as they are.

    Raises ``ValueError`` in one line naming ``source``, the key, what was expected and the value.
    """
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{source}: pretrained_cfg must be a JSON object / mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    stats = {}
    for key in ("mean", "std"):
        value = cfg.get(key)
        if value is None:
            continue
        if not (
            isinstance(value, (list, tuple))
            and 1 <= len(value) <= MAX_IN_CHANNELS
            and all(_is_number(v) for v in value)
        ):
            raise _fail(source, key, "a list of finite numbers (one per input channel, on the 0..1 scale)", value)
        if in_channels is not None and len(value) not in (1, in_channels):
            raise _fail(source, key, f"{in_channels} numbers (one per input channel)", value)
        stats[key] = value
    if "std" in stats and not all(v > 0 for v in stats["std"]):
        raise _fail(source, "std", "positive numbers (the input is divided by them)", stats["std"])
    if len(stats) == 2 and len(stats["mean"]) != len(stats["std"]):
        raise ValueError(
            f"{source}: pretrained_cfg mean and std must have the same length, got {len(stats['mean'])} and {len(stats['std'])}"
        )
    classes = cfg.get("classes")
    if classes is not None and not (
        isinstance(classes, (list, tuple))
        and len(classes) <= MAX_NUM_CLASSES
        and all(isinstance(c, str) for c in classes)
    ):
        raise _fail(source, "classes", "a list of class names (strings)", classes)
    palette = cfg.get("palette")
    if palette is not None and not (
        isinstance(palette, (list, tuple))
        and len(palette) <= MAX_NUM_CLASSES
        and all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        raise _fail(source, "palette", "a list of [r, g, b] colours with integers in 0..255", palette)
    if cfg.get("ignore_index") is not None and not _is_int(cfg["ignore_index"]):
        raise _fail(source, "ignore_index", "an integer", cfg["ignore_index"])
    if cfg.get("reduce_zero_label") is not None and not isinstance(cfg["reduce_zero_label"], bool):
        raise _fail(source, "reduce_zero_label", "true or false", cfg["reduce_zero_label"])
    for key in ("inference", "tta"):
        _protocol(cfg.get(key), key, source)
    return cfg


def check_tensors(state_dict: Mapping[str, Any], source: str) -> None:
    """Weights that cannot be right are an error naming them: non-tensors, non-float weights, NaN/Inf.

    Every entry must be a floating-point tensor with only finite values, except BatchNorm's
    ``num_batches_tracked`` counters (integers). Raises ``ValueError`` naming up to 5 tensors.
    """
    wrong_type, non_finite = [], []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            wrong_type.append(f"{key} ({type(value).__name__})")
        elif key.endswith("num_batches_tracked"):
            if value.is_floating_point() or value.is_complex():
                wrong_type.append(f"{key} ({value.dtype}, expected an integer counter)")
        elif not value.is_floating_point():
            wrong_type.append(f"{key} ({value.dtype})")
        elif value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            non_finite.append(f"{key} ({bad} of {value.numel()} values)")
    if wrong_type:
        more = f" and {len(wrong_type) - 5} more" if len(wrong_type) > 5 else ""
        raise ValueError(
            f"{source}: {len(wrong_type)} weight tensor(s) are not floating point: {', '.join(wrong_type[:5])}{more}; "
            "the file's dtypes are wrong (damaged, or a header that lies): re-export the weights"
        )
    if non_finite:
        more = f" and {len(non_finite) - 5} more" if len(non_finite) > 5 else ""
        raise ValueError(
            f"{source}: {len(non_finite)} weight tensor(s) hold NaN or Inf: {', '.join(non_finite[:5])}{more}; "
            "these weights cannot predict anything (a diverged training run or a damaged file)"
        )
