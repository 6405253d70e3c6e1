"""The value checks shared by core's readers of stored settings (``InferenceProtocol``, ``PretrainedCfg``).

Package-internal (the leading ``_``): the typed readers in :mod:`~pspnet_lib.core.inference_protocol`
and :mod:`~pspnet_lib.core.pretrained_cfg` use these to check a stored file's values and to copy
and replace their stored form; nothing else should need them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from typing import Any

from .escape import short_repr

__all__ = ["Fail", "copy_value", "is_int", "is_number", "replace_fields"]


def is_int(v: Any) -> bool:
    if type(v) is int:  # the common case, without the (slow) abstract-class check
        return True
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    try:
        if type(v) is float or type(v) is int:
            return math.isfinite(v)
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
    except OverflowError:  # an integer beyond any float (10**400): not a usable number here
        return False


def copy_value(value: Any) -> Any:
    """A copy of a JSON-like value (dicts and lists copied, scalars shared): ~10x faster than deepcopy."""
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, tuple):
        return tuple(copy_value(v) for v in value)
    return copy.deepcopy(value)


class Fail:
    """Builds the one-line errors: ``<what>: <prefix><key> must be <expected>, got <value>``."""

    def __init__(self, what: str, prefix: str) -> None:
        self.what, self.prefix = what, prefix

    def __call__(self, key: str, expected: str, value: Any) -> ValueError:
        shown = short_repr(value)
        return ValueError(f"{self.what}: {self.prefix}{key} must be {expected}, got {shown}")


def replace_fields(obj: Any, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that keeps the stored form of the fields left unchanged."""
    # Defaults that were filled in are filled in again (they may depend on a changed in_channels).
    refill = {k: None for k in getattr(obj, "_defaulted", ()) if k not in changes}
    new = dataclasses.replace(obj, **refill, **changes)
    object.__setattr__(new, "_raw", {k: v for k, v in obj._raw.items() if k not in obj._stored_keys(changes)})
    object.__setattr__(new, "_order", obj._order)
    return new
