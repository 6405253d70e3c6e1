"""Typed views of ``model.pretrained_cfg``: :class:`PretrainedCfg` and :class:`InferenceProtocol`.

``model.pretrained_cfg`` stays the plain JSON-ready dict that ``config.json``, the safetensors
metadata, the zoo cache and the Trainer's checkpoints store. These frozen dataclasses are how the
library *reads* it: :meth:`PretrainedCfg.from_dict` validates a stored dict (every value bounded
before anything is allocated; one-line errors naming the source, key, expectation and value) and
holds the defaults in one place (ImageNet mean/std for 3 input channels, :data:`GENERIC_MEAN` /
:data:`GENERIC_STD` otherwise, ignore index 255, the whole-image protocol); :meth:`to_dict` gives
back exactly the stored form, so existing files round-trip byte for byte.

:class:`InferenceProtocol` lives in :mod:`pspnet_lib.core.inference_protocol` (re-exported here).

The stored keys and their sources:

* ``mean``/``std``: per input channel on the 0..1 scale (mmsegmentation's data preprocessor
  uses ``mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]`` on 0..255: ImageNet's),
  or in the units of the band spec when there is one;
* ``bands``: the radiometric spec of bands stored in their own units (dtype, scale/offset or
  range, nodata), a :class:`~pspnet_lib.core.band_spec.BandSpec`; absent for photos;
* ``classes``, ``palette`` (``[r, g, b]`` in 0..255), ``ignore_index``, ``reduce_zero_label``:
  the dataset's conventions (mmsegmentation's ``BaseSegDataset.METAINFO`` and loaders);
* ``inference``: the test protocol of the published single-scale number, ``tta``: the multi-scale
  + flip one (mmsegmentation's ``test_pipeline`` / ``tta_pipeline`` and ``model.test_cfg``),
  each an :class:`InferenceProtocol`;
* provenance: ``name``, ``url``, ``sha256``, ``task``, ``dataset``, ``license``, ``source``,
  ``metrics``; anything else is kept untouched in :attr:`PretrainedCfg.extra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .band_spec import BandSpec, check_nodata_label
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
from .inference_protocol import (
    MAX_SCALE,
    MAX_SIDE,
    UNLIMITED_SIDE,
    InferenceProtocol,
    _copy,
    _Fail,
    _is_int,
    _is_number,
    _replace,
)

__all__ = ["InferenceProtocol", "PretrainedCfg", "MAX_SIDE", "MAX_SCALE", "UNLIMITED_SIDE"]

#: "Not given: use the default". ``__post_init__`` replaces it, so a PretrainedCfg's ``mean``,
#: ``std``, ``ignore_index``, ``reduce_zero_label`` and ``protocol`` always hold values; typed Any
#: so that those fields can be typed by what they hold rather than as optional.
_DEFAULT: Any = None

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
            sees ``(x / 255 - mean) / std``), or in the band spec's units (``(stored * scale +
            offset - mean) / std``). Default: ImageNet's for 3 channels, else
            :data:`~pspnet_lib.core.constants.GENERIC_MEAN`/``GENERIC_STD`` repeated.
        bands: the :class:`~pspnet_lib.core.band_spec.BandSpec` of inputs stored in their own
            units (multispectral rasters), or None (pictures: the photo rules of docs/inference.md).
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

    mean: tuple[float, ...] = _DEFAULT
    std: tuple[float, ...] = _DEFAULT
    in_channels: int = 3
    bands: BandSpec | None = None
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = _DEFAULT
    reduce_zero_label: bool = _DEFAULT
    protocol: InferenceProtocol = _DEFAULT
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
        if self.bands is not None:
            if not isinstance(self.bands, BandSpec):
                raise fail("bands", "a BandSpec", self.bands)
            if self.bands.bands != n:
                raise fail("bands", f"a BandSpec of {n} bands (config.in_channels)", self.bands)
            check_nodata_label(self.bands, self.ignore_index, self.num_classes, "PretrainedCfg")

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
                positive; ``bands`` invalid (see :meth:`BandSpec.from_dict`) or, with ``nodata``,
                labelling missing pixels with an ``ignore_index`` that is a class value; ``classes`` not strings; ``palette`` not ``[r, g, b]`` in 0..255;
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
        bands = None
        if d.get("bands") is not None:  # one value for every band: as many bands as the statistics say
            guess = in_channels if in_channels is not None else max((len(v) for v in stats.values()), default=None)
            bands = BandSpec.from_dict(d["bands"], guess, what=what)
        if in_channels is None:
            lengths = [len(v) for v in stats.values()] + ([bands.bands] if bands is not None else [])
            in_channels = max(lengths, default=3)
            stats = {k: v * in_channels if len(v) == 1 else v for k, v in stats.items()}
        values: dict[str, Any] = dict(stats)
        if bands is not None:
            values["bands"] = bands
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
        classes_count = len(values["classes"]) if "classes" in values else None
        check_nodata_label(bands, values.get("ignore_index", IGNORE_INDEX), classes_count, what)
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
    if isinstance(value, (InferenceProtocol, BandSpec)):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return _copy(value)
