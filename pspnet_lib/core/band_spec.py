"""``BandSpec``: how the stored values of each input band become the model's units (``pretrained_cfg["bands"]``).

Photos need none: 8-bit pictures are read on the 0..1 scale (``v / 255``) and 16-bit ones by
``round(v / 257)`` first (docs/inference.md). Satellite and aerial bands are stored in their own
units (uint16 reflectance 0..10,000, int16, float radiance), with a nodata value; a band spec
says, per band:

* ``dtype``: the stored type the weights were trained on (``"uint16"`` ...). Inputs must agree on
  8 bits or not (a uint16 file given to 8-bit weights is an error, and the other way round);
  otherwise any integer or float type goes in as stored.
* ``scale`` / ``offset`` (or ``range``: ``[low, high]``, the same as ``scale = 1 / (high - low)``,
  ``offset = -low / (high - low)``): the value the model's statistics are in is
  ``stored * scale + offset`` (e.g. ``scale=1e-4`` for Sentinel-2 L2A reflectance, as torchgeo
  and the Sentinel-2 products document it). Values outside the range are not clipped.
* ``nodata``: the stored value of missing data (one for every band, or one per band; ``"nan"``
  for float bands). Missing values enter the model as the band's mean (0 after normalisation);
  pixels missing in every band (GDAL's and rasterio's dataset-mask rule) are labelled
  ``ignore_index``: not scored in training, ``ignore_index`` in predictions.
* ``names`` (optional): one name per band; ``rgb`` (optional): the band positions shown as red,
  green and blue in overlays (default: the first three).

The mean/std after scaling are ``pretrained_cfg["mean"]``/``["std"]``, one per band. The one
function that applies all of it is :func:`pspnet_lib.core.bands.normalise`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import MAX_IN_CHANNELS
from .inference_protocol import StoredValueError, is_int, is_number

__all__ = ["BAND_DTYPES", "BandSpec", "check_input_dtype", "check_nodata_label"]

#: The stored types a band spec may name (NumPy's names).
BAND_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64")
_KEYS = ("dtype", "scale", "offset", "range", "nodata", "names", "rgb")


@dataclass(frozen=True)
class BandSpec:
    """The radiometric spec of a model's input bands (see the module's docstring).

    Attributes:
        dtype: the stored type, one of :data:`BAND_DTYPES`.
        scale, offset: one per band; the model's units are ``stored * scale + offset``.
        nodata: the stored value of missing data per band (``nan`` allowed for float types), or None.
        names: one name per band, or None.
        rgb: three band positions shown as red, green, blue, or None (the first three).

    Build one with :meth:`from_dict` (the stored form, checked) or directly (checked as well).
    """

    dtype: str
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    nodata: tuple[float, ...] | None = None
    names: tuple[str, ...] | None = None
    rgb: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        fail = StoredValueError("BandSpec", "")
        if self.dtype not in BAND_DTYPES:
            raise fail("dtype", f"one of {', '.join(BAND_DTYPES)}", self.dtype)
        n = len(self.scale)
        if not (1 <= n <= MAX_IN_CHANNELS) or len(self.offset) != n:
            raise fail("offset", f"{n} numbers (one per band, as scale)", self.offset)
        for key in ("nodata", "names"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise fail(key, f"{n} values (one per band)", value)
        if self.rgb is not None and not (len(self.rgb) == 3 and all(is_int(i) and 0 <= i < n for i in self.rgb)):
            raise fail("rgb", f"three band positions in 0..{n - 1}", self.rgb)

    @property
    def bands(self) -> int:
        """The number of bands the spec describes."""
        return len(self.scale)

    @property
    def eight_bit(self) -> bool:
        """Whether the weights take 8-bit stored values."""
        return self.dtype == "uint8"

    @classmethod
    def from_dict(cls, d: Any, in_channels: int | None, *, what: str = "the model", key: str = "bands") -> BandSpec:
        """Parse and check the stored form (``pretrained_cfg["bands"]``).

        ``{"dtype": "uint16", "scale": 0.0001, "offset": 0, "nodata": 0, "names": [...]}``, or
        ``"range": [0, 10000]`` instead of scale/offset; numbers may be one for every band or one
        per band. Default scale ``1 / 255`` for uint8 (the photos' rule), else 1; offset 0.

        Raises:
            ValueError: in one line naming ``what``, ``pretrained_cfg <key>.<entry>``, what was
                expected and the value: an unknown entry, a dtype not in :data:`BAND_DTYPES`,
                per-band lists whose length is not ``in_channels`` (the model's input bands,
                ``config.in_channels``), scale zero or not finite, a range with ``high <= low``,
                a nodata that the dtype cannot store.
        """
        fail = StoredValueError(what, f"pretrained_cfg {key}.")
        if not isinstance(d, Mapping):
            raise StoredValueError(what, "pretrained_cfg ")(
                key, "a mapping such as {'dtype': 'uint16', 'scale': 1e-4}", d
            )
        unknown = sorted(str(k) for k in d if k not in _KEYS)
        if unknown:
            raise fail(unknown[0], f"one of the entries {', '.join(_KEYS)} (unknown entry)", d[unknown[0]])
        dtype = d.get("dtype")
        if dtype not in BAND_DTYPES:
            raise fail("dtype", f"the stored type, one of {', '.join(BAND_DTYPES)}", dtype)
        lengths = [len(v) for k, v in d.items() if k in ("scale", "offset", "nodata", "names") and isinstance(v, list)]
        if isinstance(d.get("range"), (list, tuple)) and d["range"] and isinstance(d["range"][0], (list, tuple)):
            lengths.append(len(d["range"]))
        n = in_channels if in_channels is not None else max(lengths, default=1)

        def per_band(entry: str, value: Any, check: Any, expected: str) -> tuple[Any, ...]:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(items) not in (1, n):
                raise ValueError(
                    f"{what}: pretrained_cfg {key}.{entry} has {len(items)} values but the model takes {n} input "
                    f"band(s) (config.in_channels): give one value for every band or {n} values"
                )
            if not all(check(v) for v in items):
                raise fail(entry, expected, d.get(entry))
            return tuple(items) * (n if len(items) == 1 else 1)

        if "range" in d and ("scale" in d or "offset" in d):
            raise fail("range", "given instead of scale/offset, not with them", d["range"])
        if "range" in d:
            value = d["range"]
            pairs = (
                value if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)) else [value]
            )
            ranges = per_band("range", pairs, _is_range, "[low, high] with finite low < high")
            scale = tuple(1.0 / (float(hi) - float(lo)) for lo, hi in ranges)
            offset = tuple((0.0 - float(lo)) / (float(hi) - float(lo)) for lo, hi in ranges)
        else:
            default = 1.0 / 255.0 if dtype == "uint8" else 1.0
            nonzero = lambda v: is_number(v) and v != 0
            scale = tuple(
                float(v) for v in per_band("scale", d.get("scale", default), nonzero, "non-zero finite numbers")
            )
            offset = tuple(float(v) for v in per_band("offset", d.get("offset", 0.0), is_number, "finite numbers"))
        nodata = None
        if d.get("nodata") is not None:
            expected = f"a value a {dtype} band can store" + (" (or 'nan')" if dtype.startswith("float") else "")
            nodata = tuple(float(v) for v in per_band("nodata", d["nodata"], lambda v: _storable(v, dtype), expected))
        names = None
        if d.get("names") is not None:
            if not isinstance(d["names"], (list, tuple)) or len(d["names"]) != n:
                raise fail("names", f"{n} band names (one per input band)", d["names"])
            names = per_band("names", d["names"], lambda v: isinstance(v, str), "strings")
        rgb = d.get("rgb")
        if rgb is not None and not (
            isinstance(rgb, (list, tuple)) and len(rgb) == 3 and all(is_int(i) and 0 <= i < n for i in rgb)
        ):
            raise fail("rgb", f"three band positions in 0..{n - 1} (red, green, blue)", rgb)
        positions = (int(rgb[0]), int(rgb[1]), int(rgb[2])) if rgb is not None else None
        return cls(dtype, scale, offset, nodata, names, positions)

    def to_dict(self) -> dict[str, Any]:
        """The stored (JSON) form; one number stands for every band when all bands share it."""

        def compact(values: Sequence[Any]) -> Any:
            items = ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]
            return items[0] if len(set(map(str, items))) == 1 else list(items)

        out: dict[str, Any] = {"dtype": self.dtype, "scale": compact(self.scale), "offset": compact(self.offset)}
        if self.nodata is not None:
            out["nodata"] = compact([int(v) if float(v).is_integer() else v for v in self.nodata])
        if self.names is not None:
            out["names"] = list(self.names)
        if self.rgb is not None:
            out["rgb"] = list(self.rgb)
        return out


def _is_range(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(is_number(v) for v in value)
        and float(value[1]) > float(value[0])
    )


def _storable(value: Any, dtype: str) -> bool:
    if dtype.startswith("float"):
        return (isinstance(value, str) and value.lower() == "nan") or is_number(value)
    if not (is_int(value) or (is_number(value) and float(value).is_integer())):
        return False
    info = np.iinfo(dtype)
    return info.min <= int(value) <= info.max


def check_input_dtype(dtype: Any, spec: BandSpec | None, what: str, fix: str = "") -> None:
    """Refuse stored values whose bit depth the weights were not trained on.

    ``dtype``: the input's NumPy or torch dtype. Without a spec the photo rules apply (checked
    elsewhere). With one, 8-bit inputs need an 8-bit spec and other inputs a spec of another
    type: a 16-bit file given to 8-bit weights would be read in the wrong units.

    Raises ``ValueError`` in one line naming ``what``, both types and ``fix`` (e.g. the flag).
    """
    if spec is None:
        return
    name = str(dtype).replace("torch.", "")
    if (name == "uint8") == spec.eight_bit:
        return
    hint = fix or "pass the stored values the weights were trained on, or train weights for this data"
    raise ValueError(
        f"{what} holds {name} values but the band spec takes {spec.dtype} (pretrained_cfg bands.dtype): "
        f"{'8-bit' if name == 'uint8' else 'not 8-bit'} data would be read in the wrong units; {hint}"
    )


def check_nodata_label(spec: BandSpec | None, ignore_index: int, num_classes: int | None, what: str) -> None:
    """Refuse a nodata spec whose label for missing pixels (``ignore_index``) is a valid class value.

    Raises ``ValueError`` in one line naming ``what``, the class count and the fix.
    """
    if spec is None or spec.nodata is None or num_classes is None:
        return
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"{what}: pixels of nodata (pretrained_cfg bands.nodata {spec.to_dict()['nodata']!r}) are labelled "
            f"ignore_index={ignore_index}, which is a valid class value (0..{num_classes - 1}); set ignore_index "
            f"to a value outside the classes (e.g. 255; CLI: --ignore-index 255)"
        )
