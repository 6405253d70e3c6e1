"""Typed views of ``model.pretrained_cfg``: :class:`PretrainedCfg` and :class:`InferenceProtocol`.

``model.pretrained_cfg`` stays the plain JSON-ready dict that ``config.json``, the safetensors
metadata, the zoo cache and the Trainer's checkpoints store. These frozen dataclasses are how the
library *reads* it: :meth:`PretrainedCfg.from_dict` validates a stored dict (every value bounded
before anything is allocated; one-line errors naming the source, key, expectation and value) and
holds the defaults in one place (ImageNet mean/std for 3 input channels, :data:`GENERIC_MEAN` /
:data:`GENERIC_STD` otherwise, ignore index 255, the whole-image protocol); :meth:`to_dict` gives
back exactly the stored form, so existing files round-trip byte for byte.

The stored keys and their sources:

* ``mean``/``std``: per input channel on the 0..1 scale (mmsegmentation's data preprocessor
  uses ``mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]`` on 0..255: ImageNet's);
* ``classes``, ``palette`` (``[r, g, b]`` in 0..255), ``ignore_index``, ``reduce_zero_label``:
  the dataset's conventions (mmsegmentation's ``BaseSegDataset.METAINFO`` and loaders);
* ``inference``: the test protocol of the published single-scale number, ``tta``: the multi-scale
  + flip one (mmsegmentation's ``test_pipeline`` / ``tta_pipeline`` and ``model.test_cfg``),
  each an :class:`InferenceProtocol`;
* provenance: ``name``, ``url``, ``sha256``, ``task``, ``dataset``, ``license``, ``source``,
  ``metrics``; anything else is kept untouched in :attr:`PretrainedCfg.extra`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .constants import (
    GENERIC_MEAN,
    GENERIC_STD,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IN_CHANNELS,
    MAX_NUM_CLASSES,
    input_channels,
)
from .geometry import MODES

__all__ = ["InferenceProtocol", "PretrainedCfg", "MAX_SIDE", "MAX_SCALE", "UNLIMITED_SIDE"]

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


def _is_int(v: Any) -> bool:
    if type(v) is int:  # the common case, without the (slow) abstract-class check
        return True
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if type(v) is float or type(v) is int:
        return math.isfinite(v)
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


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


class _Fail:
    """Builds the one-line errors: ``<what>: <prefix><key> must be <expected>, got <value>``."""

    def __init__(self, what: str, prefix: str) -> None:
        self.what, self.prefix = what, prefix

    def __call__(self, key: str, expected: str, value: Any) -> ValueError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return ValueError(f"{self.what}: {self.prefix}{key} must be {expected}, got {shown}")


def _size(value: Any, key: str, fail: _Fail, *, pair_only: bool = False) -> tuple[int, int]:
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


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        fields = {name: getattr(self, name) for name in _PROTOCOL_KEYS}
        for name, value in _check_protocol(fields, _Fail("InferenceProtocol", "")).items():
            object.__setattr__(self, name, value)

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

# PretrainedCfg field -> stored key (the rest are stored under their own names).
_STORED_NAME = {"protocol": "inference"}
_PROVENANCE = ("name", "url", "sha256", "task", "dataset", "license", "source")


def _stats(value: Any, key: str, in_channels: int | None, fail: _Fail, what: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not (1 <= len(items) <= MAX_IN_CHANNELS and all(_is_number(v) for v in items)):
        raise fail(key, "a list of finite numbers (one per input channel, on the 0..1 scale)", value)
    if in_channels is not None and len(items) not in (1, in_channels):
        raise ValueError(
            f"{what}: pretrained_cfg {key} must be {in_channels} numbers (one per input channel), got {list(items)}; "
            f"the model takes {in_channels} input channel(s) (config.in_channels) but pretrained_cfg[{key!r}] has "
            f"{len(items)} values: set it to {in_channels} values on the 0..1 scale"
        )
    values = tuple(float(v) for v in items)
    if in_channels is not None and len(values) == 1:
        values = values * in_channels  # one stored value serves every channel
    if key == "std" and not all(v > 0 for v in values):
        raise fail("std", "positive numbers (the input is divided by them)", value)
    return values


@dataclass(frozen=True)
class PretrainedCfg:
    """What a user of weights needs besides the architecture, typed (``model.pretrained_cfg``).

    Attributes:
        mean, std: input normalisation, one value per input channel on the 0..1 scale (the model
            sees ``(x / 255 - mean) / std``). Default: ImageNet's for 3 channels, else
            :data:`~pspnet_lib.core.constants.GENERIC_MEAN`/``GENERIC_STD`` repeated.
        in_channels: the model's input channels the statistics are for (not stored).
        classes: class names in index order, or None when the weights carry none.
        palette: one ``(r, g, b)`` colour (0..255) per class, or None.
        ignore_index: label value of unscored pixels (default 255).
        reduce_zero_label: whether label 0 is "other" and labels are shifted down by one (ADE20K,
            LoveDA: mmsegmentation's ``reduce_zero_label``); default False.
        protocol: the test protocol of the published single-scale number (stored as
            ``"inference"``); default :class:`InferenceProtocol()` (whole image, own size).
        tta: the multi-scale + flip protocol, or None.
        name, url, sha256, task, dataset, license, source: provenance strings (zoo name, download
            address, leading hex digits of the file's sha256, ``"semantic-segmentation"`` or
            ``"backbone"``, dataset key, licence, where the numbers come from), or None.
        metrics: published numbers, e.g. ``{"mIoU": 77.85, "split": "val", "source": ...}``.
        extra: every other stored key (``crop_size``, ``num_params``, ``adapted_from``, ...),
            kept as stored.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    in_channels: int = 3
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int | None = None
    reduce_zero_label: bool | None = None
    protocol: InferenceProtocol | None = None
    tta: InferenceProtocol | None = None
    name: str | None = None
    url: str | None = None
    sha256: str | None = None
    task: str | None = None
    dataset: str | None = None
    license: str | None = None
    source: str | None = None
    metrics: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _raw: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _order: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _defaulted: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fail = _Fail("PretrainedCfg", "")
        n = self.in_channels
        if not (_is_int(n) and 1 <= n <= MAX_IN_CHANNELS):
            raise fail("in_channels", f"an integer in [1, {MAX_IN_CHANNELS}]", n)
        defaults = {
            "mean": IMAGENET_MEAN if n == 3 else (GENERIC_MEAN,) * n,
            "std": IMAGENET_STD if n == 3 else (GENERIC_STD,) * n,
            "ignore_index": IGNORE_INDEX,
            "reduce_zero_label": False,
            "protocol": InferenceProtocol(),
        }
        defaulted = set()
        for key, default in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
                defaulted.add(key)
        object.__setattr__(self, "_defaulted", frozenset(defaulted))
        for key in ("mean", "std"):
            if key not in defaulted:
                object.__setattr__(self, key, _stats(getattr(self, key), key, n, fail, "PretrainedCfg"))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.palette is not None:
            object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        for key in ("protocol", "tta"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, InferenceProtocol):
                raise fail(key, "an InferenceProtocol", value)

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any] | None, in_channels: int | None = 3, *, what: str = "the model"
    ) -> PretrainedCfg:
        """Parse and validate a stored ``pretrained_cfg`` dict; absent entries take the defaults.

        Args:
            d: the dict (``model.pretrained_cfg``, ``config.json["pretrained_cfg"]``, ...); None = {}.
            in_channels: the model's input channels (``config.in_channels``); None when unknown
                (then the stored ``mean`` gives it, else 3).
            what: the source named in errors (a file, ``--weights x``).

        Raises:
            ValueError: in one line naming ``what``, the key, what was expected and the value:
                ``mean``/``std`` not finite numbers, not one per channel (or one), ``std`` not
                positive; ``classes`` not strings; ``palette`` not ``[r, g, b]`` in 0..255;
                ``ignore_index`` not an integer; ``reduce_zero_label`` not a bool; ``inference``
                / ``tta`` invalid (see :class:`InferenceProtocol`); provenance not strings.
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ValueError(f"{what}: pretrained_cfg must be a JSON object / mapping, got {type(d).__name__}")
        fail = _Fail(what, "pretrained_cfg ")
        stats = {key: _stats(d[key], key, in_channels, fail, what) for key in ("mean", "std") if d.get(key) is not None}
        if len(stats) == 2 and len(stats["mean"]) != len(stats["std"]):
            raise ValueError(
                f"{what}: pretrained_cfg mean and std must have the same length, got {len(stats['mean'])} and {len(stats['std'])}"
            )
        if in_channels is None:
            in_channels = max((len(v) for v in stats.values()), default=3)
            stats = {k: v * in_channels if len(v) == 1 else v for k, v in stats.items()}
        values: dict[str, Any] = dict(stats)
        classes = d.get("classes")
        if classes is not None:
            if not (
                isinstance(classes, (list, tuple))
                and len(classes) <= MAX_NUM_CLASSES
                and all(isinstance(c, str) for c in classes)
            ):
                raise fail("classes", "a list of class names (strings)", classes)
            values["classes"] = classes
        palette = d.get("palette")
        if palette is not None:
            if not (
                isinstance(palette, (list, tuple))
                and len(palette) <= MAX_NUM_CLASSES
                and all(
                    isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
                    for c in palette
                )
            ):
                raise fail("palette", "a list of [r, g, b] colours with integers in 0..255", palette)
            values["palette"] = palette
        if d.get("ignore_index") is not None:
            if not _is_int(d["ignore_index"]):
                raise fail("ignore_index", "an integer", d["ignore_index"])
            values["ignore_index"] = int(d["ignore_index"])
        if d.get("reduce_zero_label") is not None:
            if not isinstance(d["reduce_zero_label"], bool):
                raise fail("reduce_zero_label", "true or false", d["reduce_zero_label"])
            values["reduce_zero_label"] = d["reduce_zero_label"]
        for attr, key in (("protocol", "inference"), ("tta", "tta")):
            if d.get(key) is not None:
                values[attr] = InferenceProtocol.from_dict(d[key], what=what, key=key)
        for key in _PROVENANCE:
            if d.get(key) is not None:
                if not isinstance(d[key], str):
                    raise fail(key, "a string", d[key])
                values[key] = d[key]
        if d.get("metrics") is not None:
            if not isinstance(d["metrics"], Mapping):
                raise fail("metrics", "a mapping of metric names to values", d["metrics"])
            values["metrics"] = _copy(dict(d["metrics"]))
        typed = {_STORED_NAME.get(k, k) for k in _typed_fields()}
        extra = {k: _copy(v) for k, v in d.items() if k not in typed}
        cfg = cls(in_channels=in_channels, extra=extra, **values)
        stored = {k: _CANONICAL if _is_canonical(k, v) else _copy(v) for k, v in d.items() if k in typed}
        object.__setattr__(cfg, "_raw", stored)
        object.__setattr__(cfg, "_order", tuple(d))
        return cfg

    @classmethod
    def of(cls, model: Any, *, what: str = "the model") -> PretrainedCfg:
        """The typed ``model.pretrained_cfg`` (``in_channels`` from ``model.config``; {} when absent)."""
        return cls.from_dict(getattr(model, "pretrained_cfg", None) or {}, input_channels(model), what=what)

    def to_dict(self) -> dict[str, Any]:
        """The stored (JSON) form: for a cfg read by :meth:`from_dict`, exactly the dict it was
        read from (same keys, order and values); defaults that were filled in are not written."""
        out: dict[str, Any] = {}
        names = {_STORED_NAME.get(k, k): k for k in _typed_fields()}
        for key in (*self._order, *names, *self.extra):
            if key in out:
                continue
            if key not in names:
                if key in self.extra:
                    out[key] = _copy(self.extra[key])
                continue
            attr = names[key]
            if key in self._raw and self._raw[key] is not _CANONICAL:
                out[key] = _copy(self._raw[key])
            elif key in self._raw:
                out[key] = _json_value(getattr(self, attr))
            elif attr not in self._defaulted and getattr(self, attr) is not None:
                out[key] = _json_value(getattr(self, attr))
        return out

    def replace(self, **changes: Any) -> PretrainedCfg:
        """A copy with ``changes`` applied (field names; validated again)."""
        return _replace(self, changes)

    @staticmethod
    def _stored_keys(changes: Mapping[str, Any]) -> set[str]:
        return {_STORED_NAME.get(k, k) for k in changes}

    def is_set(self, name: str) -> bool:
        """Whether field ``name`` holds a stored (or given) value rather than a filled-in default or None."""
        return name not in self._defaulted and getattr(self, name) is not None

    @property
    def num_classes(self) -> int | None:
        """``len(classes)``, or None without class names."""
        return None if self.classes is None else len(self.classes)


#: Stands for a stored value that the typed one writes back exactly (lists of strings / of colour
#: lists): not copied when parsing, which keeps ``PretrainedCfg.of(model)`` cheap for 150+ classes.
_CANONICAL = object()


def _is_canonical(key: str, value: Any) -> bool:
    if key == "classes":
        return type(value) is list
    if key == "palette":
        return type(value) is list and all(type(c) is list and all(type(v) is int for v in c) for c in value)
    return False


def _typed_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(PretrainedCfg) if f.init and f.name not in ("in_channels", "extra"))


def _json_value(value: Any) -> Any:
    if isinstance(value, InferenceProtocol):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return _copy(value)
