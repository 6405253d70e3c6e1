"""``InferenceProtocol``: how a model is run at test time, as one validated, frozen object.

The stored form is ``pretrained_cfg["inference"]`` / ``["tta"]`` (see
:mod:`pspnet_lib.core.pretrained_cfg`); the protocol's modes follow mmsegmentation's
``model.test_cfg`` (``whole`` / ``slide``) and its multi-scale + flip test (``SegTTAModel``). The
validation helpers here are shared with :class:`~pspnet_lib.core.pretrained_cfg.PretrainedCfg`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .escape import short_repr
from .geometry import MODES

__all__ = [
    "InferenceProtocol",
    "MAX_SIDE",
    "MAX_SCALE",
    "MAX_SCALES",
    "UNLIMITED_SIDE",
    "protocol_from_keywords",
    "resize_keyword",
]

#: Largest image side a protocol may ask for (resize, crop, stride), in pixels: 4x the largest
#: published protocol (Cityscapes' 2048x1024); ``resize=[100000, 100000]`` would make predicting
#: a 40x56 photo allocate 85 GB.
MAX_SIDE = 8192
#: Largest test-time scale factor (mmsegmentation's multi-scale protocol goes up to 1.75).
MAX_SCALE = 8.0
#: At most this many test-time scales (mmsegmentation's protocol has 6).
MAX_SCALES = 16
#: The long-side limit of a resize that only bounds the short side (``predict(size=512)``): no limit.
UNLIMITED_SIDE = 1 << 30

_PROTOCOL_KEYS = ("mode", "resize", "crop", "stride", "scales", "flip")


def is_int(v: Any) -> bool:
    """True for an integer that is not a bool (Python or NumPy)."""
    if type(v) is int:  # the common case, without the (slow) abstract-class check
        return True
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """True for a finite real number that is not a bool (Python or NumPy)."""
    try:
        if type(v) is float or type(v) is int:
            return math.isfinite(v)
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
    except OverflowError:  # an integer beyond any float (10**400): not a usable number here
        return False


def _copy(value: Any) -> Any:
    """A copy of a JSON-like value (dicts and lists copied, scalars shared): ~10x faster than deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return copy.deepcopy(value)


class StoredValueError:
    """Builds the one-line errors of stored settings: ``<what>: <prefix><key> must be <expected>, got <value>``."""

    def __init__(self, what: str, prefix: str) -> None:
        self.what, self.prefix = what, prefix

    def __call__(self, key: str, expected: str, value: Any) -> ValueError:
        shown = short_repr(value)
        return ValueError(f"{self.what}: {self.prefix}{key} must be {expected}, got {shown}")


# The names the modules of this floor imported before these were public.
_is_int = is_int
_is_number = is_number
_Fail = StoredValueError


def _size(value: Any, key: str, fail: StoredValueError, *, pair_only: bool = False) -> tuple[int, int]:
    """An int (square) or ``[a, b]`` of pixel sizes in ``[1, MAX_SIDE]``, as a pair."""
    expected = f"{'' if pair_only else 'an integer or '}a pair of integers in [1, {MAX_SIDE}]"
    if _is_int(value) and not pair_only:
        items = [value, value]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        items = list(value)
    else:
        raise fail(key, expected, value)
    if not all(_is_int(v) and v >= 1 for v in items):
        raise fail(key, expected, value)
    # A resize may leave its long side unlimited (predict(size=512) bounds the short side only).
    if pair_only and max(items) == UNLIMITED_SIDE and min(items) <= MAX_SIDE:
        return int(items[0]), int(items[1])
    if max(items) > MAX_SIDE:
        raise fail(key, expected, value)
    return int(items[0]), int(items[1])


def _check_protocol(values: Mapping[str, Any], fail: _Fail) -> dict[str, Any]:
    """Validated, normalised :class:`InferenceProtocol` fields from ``values`` (absent keys: defaults)."""
    out: dict[str, Any] = {}
    mode = values.get("mode")
    mode = "whole" if mode is None else mode
    if mode not in MODES:
        raise fail("mode", f"one of {', '.join(MODES)}", mode)
    out["mode"] = mode
    out["resize"] = None if values.get("resize") is None else _size(values["resize"], "resize", fail, pair_only=True)
    for name in ("crop", "stride"):
        out[name] = None if values.get(name) is None else _size(values[name], name, fail)
    scales = values.get("scales")
    if scales is None:
        scales = (1.0,)
    if not (
        isinstance(scales, (list, tuple))
        and 1 <= len(scales) <= MAX_SCALES
        and all(_is_number(s) and 0 < s <= MAX_SCALE for s in scales)
    ):
        raise fail("scales", f"a list of 1 to {MAX_SCALES} numbers in (0, {MAX_SCALE:g}]", scales)
    out["scales"] = tuple(float(s) for s in scales)
    flip = values.get("flip")
    if flip is not None and not isinstance(flip, bool):
        raise fail("flip", "true or false", flip)
    out["flip"] = bool(flip)
    if mode == "slide":
        for name in ("crop", "stride"):
            if out[name] is None:
                raise fail(
                    name, "a window size for mode 'slide' (set crop and stride, e.g. crop=769, stride=513)", None
                )
        if not all(0 < s <= c for s, c in zip(out["stride"], out["crop"])):
            raise fail("stride", f"at most the crop {list(out['crop'])} so that no pixel is skipped", values["stride"])
    return out


def _replace(obj: Any, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that keeps the stored form of the fields left unchanged."""
    # Defaults that were filled in are filled in again (they may depend on a changed in_channels).
    refill = {k: None for k in getattr(obj, "_defaulted", ()) if k not in changes}
    new = dataclasses.replace(obj, **refill, **changes)
    object.__setattr__(new, "_raw", {k: v for k, v in obj._raw.items() if k not in obj._stored_keys(changes)})
    object.__setattr__(new, "_order", obj._order)
    return new


@dataclass(frozen=True, init=False)
class InferenceProtocol:
    """How a model is run at test time: the keyword arguments of :func:`pspnet_lib.inference.modes.infer`.

    Attributes:
        mode: ``"whole"`` (one forward pass per image) or ``"slide"`` (overlapping ``crop``
            windows every ``stride`` pixels, logits averaged: mmsegmentation's ``slide_inference``).
        resize: keep-ratio resize limits ``(long, short)`` in pixels applied first (mmcv's
            ``Resize(scale=..., keep_ratio=True)``, e.g. ``(2048, 512)`` for ADE20K), or None.
        crop, stride: sliding-window size and step ``(h, w)`` in pixels (``mode="slide"``, with
            ``stride <= crop``), e.g. ``(769, 769)`` / ``(513, 513)`` for Cityscapes 769x769.
        scales: scale factors relative to the resized size (mmsegmentation's multi-scale test
            uses ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``), each in ``(0, 8]``, at most 16.
        flip: also run on the horizontally mirrored image (probabilities averaged).

    Sizes are at most :data:`MAX_SIDE` (8192) pixels; a resize's long side may be
    :data:`UNLIMITED_SIDE` (only the short side bounded). Invalid values raise ``ValueError``
    in one line naming the field, what was expected and the value.

    Stored in ``pretrained_cfg["inference"]`` / ``["tta"]`` as a JSON object with only the keys
    that were set (``{"mode": "whole", "resize": [2048, 512]}``); :meth:`from_dict` and
    :meth:`to_dict` convert, keeping the stored form exactly.
    """

    mode: str = "whole"
    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    _raw: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _order: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    # Written out (not generated) so that the arguments may be what users pass (lists, one int for
    # a square crop) while the attributes are always the normalised tuples.
    def __init__(
        self,
        mode: str = "whole",
        resize: Sequence[int] | None = None,
        crop: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> None:
        given = {"mode": mode, "resize": resize, "crop": crop, "stride": stride, "scales": scales, "flip": flip}
        for name, value in _check_protocol(given, _Fail("InferenceProtocol", "")).items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_raw", {})
        object.__setattr__(self, "_order", ())

    @classmethod
    def from_dict(
        cls, mapping: Mapping[str, Any], *, what: str = "inference protocol", key: str = ""
    ) -> InferenceProtocol:
        """The protocol a stored dict describes (absent keys take the defaults).

        Args:
            mapping: e.g. ``{"mode": "slide", "resize": [2049, 1025], "crop": [769, 769],
                "stride": [513, 513]}``; ``crop``/``stride`` may be one int (square).
            what: the source named in errors (a file, ``"the pretrained_cfg argument"``).
            key: where the dict is stored (``"inference"``, ``"tta"``), named in errors.

        Raises:
            ValueError: not a mapping, unknown keys (named), or a value out of bounds.
        """
        prefix = f"pretrained_cfg {key}." if key else ""
        if not isinstance(mapping, Mapping):
            raise _Fail(what, "pretrained_cfg " if key else "")(key or "protocol", "a mapping", mapping)
        unknown = sorted(str(k) for k in mapping if k not in _PROTOCOL_KEYS)
        if unknown:
            raise ValueError(
                f"{what}: {f'pretrained_cfg {key}' if key else 'the protocol'} has unknown key(s) {unknown}; "
                f"expected only {', '.join(_PROTOCOL_KEYS)}: remove or rename them"
            )
        values = _check_protocol(mapping, _Fail(what, prefix))
        protocol = cls(**values)
        object.__setattr__(protocol, "_raw", _copy(dict(mapping)))
        object.__setattr__(protocol, "_order", tuple(mapping))
        return protocol

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The JSON form: the stored dict for one read by :meth:`from_dict` (keys and values as
        they were), else ``mode`` and the fields that differ from the defaults (``full``: all six)."""
        out: dict[str, Any] = {}
        for name in (*self._order, *_PROTOCOL_KEYS):
            if name in out:
                continue
            value = getattr(self, name)
            if name in self._raw:
                out[name] = _copy(self._raw[name])
            elif full or name == "mode" or value != _PROTOCOL_DEFAULTS[name]:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def infer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pspnet_lib.inference.modes.infer` (all six)."""
        return {name: getattr(self, name) for name in _PROTOCOL_KEYS}

    def replace(self, **changes: Any) -> InferenceProtocol:
        """A copy with ``changes`` applied (validated again)."""
        return _replace(self, changes)

    @staticmethod
    def _stored_keys(changes: Mapping[str, Any]) -> set[str]:
        return set(changes)

    @property
    def runs(self) -> int:
        """Forward passes per image (scales x flips): more than one averages probabilities."""
        return len(self.scales) * (2 if self.flip else 1)


_PROTOCOL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(InferenceProtocol) if f.init}


def protocol_from_keywords(
    protocol: InferenceProtocol | None, keywords: Mapping[str, Any], *, where: str, stacklevel: int = 3
) -> InferenceProtocol:
    """The protocol of a call that takes ``protocol=InferenceProtocol(...)``, with the protocol's
    fields still accepted as keywords (deprecated since 0.3, removed in the next release).

    Args:
        protocol: the object the caller passed, or None.
        keywords: the field keywords (``mode``, ``resize``, ``crop``, ``stride``, ``scales``,
            ``flip``) as passed; a value of None means "not given".
        where: the function's name, for the warning and the errors (``"infer"``).
        stacklevel: passed to ``warnings.warn`` (3: the caller of the function calling this).

    Returns ``protocol``, or one built from the keywords (``InferenceProtocol()`` when neither).
    Raises ``TypeError`` for a ``protocol`` that is not an :class:`InferenceProtocol`,
    ``ValueError`` when both are given or a keyword is invalid. Warns ``DeprecationWarning`` when
    keywords are given.
    """
    given = {name: value for name, value in keywords.items() if value is not None}
    if protocol is not None:
        if not isinstance(protocol, InferenceProtocol):
            raise TypeError(f"{where}: protocol must be an InferenceProtocol, got {type(protocol).__name__}")
        if given:
            raise ValueError(
                f"{where}: pass the protocol either as protocol=InferenceProtocol(...) or as keyword arguments "
                f"({', '.join(given)}), not both"
            )
        return protocol
    if not given:
        return InferenceProtocol()
    warnings.warn(
        f"{where}({', '.join(f'{k}=' for k in given)}...) is deprecated; pass "
        f"protocol=InferenceProtocol({', '.join(f'{k}=...' for k in given)}) instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    if "scales" in given:
        given["scales"] = tuple(given["scales"])
    return InferenceProtocol(**given)


def resize_keyword(resize: Any, size: Any, *, where: str, stacklevel: int = 3) -> Any:
    """``resize``, or the deprecated ``size`` keyword of the same meaning (0.3; removed in the
    next release) with a ``DeprecationWarning``; ``ValueError`` when both are given."""
    if size is None:
        return resize
    if resize is not None:
        raise ValueError(f"{where}: pass resize= only (size= is its deprecated old name), not both")
    warnings.warn(
        f"{where}(size=...) is deprecated; pass resize=... instead", DeprecationWarning, stacklevel=stacklevel
    )
    return size
