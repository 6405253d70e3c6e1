"""Checks on what a weights source says, before anything is allocated or trusted.

Files come from strangers: ``config.json``, safetensors metadata, ``pretrained_cfg`` entries and
the tensors themselves are checked here, for every source (zoo, folders, ``.safetensors``,
``hf-hub:``, ``.pth``), so that a bad value is one line naming the file and the key instead of
an allocator error, a torch overload dump at predict time, or silently wrong predictions.
The architecture itself is checked by :meth:`pspnet_lib.PSPNetConfig.from_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from ..core.escape import printable
from ..core.pretrained_cfg import MAX_SCALE, MAX_SIDE, PretrainedCfg

__all__ = ["MAX_SIDE", "MAX_SCALE", "validate_pretrained_cfg", "check_tensors", "warn_unknown"]

logger = logging.getLogger(__name__)


def warn_unknown(keys: Any, known: Any, source: str, what: str) -> list[str]:
    """Log one warning naming ``source`` and the keys of ``keys`` outside ``known``; returns them."""
    unknown = sorted(str(k) for k in keys if k not in known)
    if unknown:
        shown = ", ".join(printable(k, 80) for k in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        logger.warning("%s: ignoring unknown %s key(s) %s (written by another version or tool?)", source, what, shown)
    return unknown


def validate_pretrained_cfg(cfg: Any, source: str, *, in_channels: int | None = None) -> dict[str, Any]:
    """Check the entries of a ``pretrained_cfg`` that the library uses; returns it as a dict.

    The checks are :meth:`pspnet_lib.core.pretrained_cfg.PretrainedCfg.from_dict`'s: ``mean``/
    ``std`` (finite numbers, as many as the input channels or one, ``std`` positive),
    ``classes`` (strings), ``palette`` (``[r, g, b]`` integers in 0..255), ``ignore_index`` (an
    integer), ``reduce_zero_label`` (a bool), ``inference`` and ``tta`` (``mode``;
    ``resize``/``crop``/``stride`` within ``[1, MAX_SIDE]`` pixels; ``scales`` in
    ``(0, MAX_SCALE]``; ``flip`` a bool; no other keys), provenance strings. Other entries are
    descriptive and kept as they are.

    Raises ``ValueError`` in one line naming ``source``, the key, what was expected and the value.
    """
    if cfg is None:
        return {}
    PretrainedCfg.from_dict(cfg, in_channels, what=source)
    return dict(cfg)


#: Elements checked at a time (bounds the temporary of ``torch.isfinite`` to 1 MiB of booleans).
_CHUNK = 1 << 20


def _count_non_finite(value: torch.Tensor) -> tuple[int, int]:
    """``(non-finite values, values checked)`` over the stored span of ``value`` (see :func:`check_tensors`)."""
    if value.numel() == 0:
        return 0, 0
    span = 1 + sum((size - 1) * stride for size, stride in zip(value.shape, value.stride()))
    # Elements that repeat (expanded, zero strides): check the stored ones. Otherwise a flat view
    # (a copy for a strided view, never larger than the values the storage holds for it).
    flat = value.as_strided((span,), (1,)) if span < value.numel() else value.reshape(-1)
    # A finite sum means no value is NaN or Inf; it reads the values once without allocating. A
    # non-finite one (NaN, Inf, or finite values overflowing the sum) is settled by counting.
    if bool(torch.isfinite(flat.sum()).all()):
        return 0, flat.numel()
    bad = 0
    for start in range(0, flat.numel(), _CHUNK):
        bad += int((~torch.isfinite(flat[start : start + _CHUNK])).sum())
    return bad, flat.numel()


def check_tensors(state_dict: Mapping[str, Any], source: str, *, values: bool = True) -> None:
    """Weights that cannot be right are an error naming them: non-tensors, non-float weights, NaN/Inf.

    Every entry must be a floating-point tensor with only finite values, except BatchNorm's
    ``num_batches_tracked`` counters (integers). Raises ``ValueError`` naming up to 5 tensors.

    The value check reads each tensor's stored values once, in chunks: a view whose strides
    repeat elements (an expanded or zero-stride tensor from a file, whose ``numel`` may be 10^9
    over one stored value) costs what its storage holds, never ``numel``. ``values=False`` checks
    the types only (no value is read): for weights whose values were checked when they entered
    the cache and have not changed since.
    """
    wrong_type, non_finite = [], []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            wrong_type.append(f"{printable(key, 120)} ({type(value).__name__})")
        elif key.endswith("num_batches_tracked"):
            if value.is_floating_point() or value.is_complex():
                wrong_type.append(f"{printable(key, 120)} ({value.dtype}, expected an integer counter)")
        elif not value.is_floating_point():
            wrong_type.append(f"{printable(key, 120)} ({value.dtype})")
        elif values and value.device.type != "meta":
            bad, checked = _count_non_finite(value)
            if bad:
                of = f"{checked} values" if checked == value.numel() else f"{checked} stored values"
                non_finite.append(f"{printable(key, 120)} ({bad} of {of})")
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
