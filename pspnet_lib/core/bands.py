"""Stored values -> the model's input: :func:`normalise`, the one function every path calls.

The datasets (their transforms), the Trainer and ``evaluate``, ``predict`` and ``pspnet predict``,
the export wrapper's in-graph preprocessing and int8 calibration turn stored values into model
input through this module, so the same stored values give the same input tensor on every path.

Without a band spec (``pretrained_cfg["bands"]``, :class:`~pspnet_lib.core.band_spec.BandSpec`)
the photo rules hold, exactly as before band specs existed: uint8 ``v / 255``, floats as given on
the 0..1 scale, then ``(x - mean) / std``. With one, ``(stored * scale + offset - mean) / std``,
computed as ``stored * a + b`` with ``a = scale / std`` and ``b = (offset - mean) / std``, and band
values equal to ``nodata`` become 0 (the band's mean).

A reader that fetches the values itself calls :func:`normalise` per piece: rasterio's
``src.read(window=w)`` gives ``(bands, rows, cols)``, the layout taken here::

    cfg = PretrainedCfg.of(model)
    x = normalise(src.read(window=window), cfg)[None]      # (1, C, h, w) float32
    labels = model(x).argmax(1)[0]
    labels[nodata_pixels(src.read(window=window), cfg.bands)] = cfg.ignore_index
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .band_spec import BandSpec, check_input_dtype
from .pretrained_cfg import PretrainedCfg

__all__ = [
    "affine_input",
    "band_settings",
    "band_nodata",
    "display_rgb",
    "input_affine",
    "nodata_pixels",
    "normalise",
    "scale_bands",
    "stored_dtype",
    "to_stored",
]


def _tensor(values: Any, what: str) -> torch.Tensor:
    if isinstance(values, np.ndarray):
        if not values.flags.writeable:
            values = values.copy()
        values = torch.from_numpy(np.ascontiguousarray(values))
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{what} must be a tensor or NumPy array of stored values, got {type(values).__name__}")
    if values.ndim not in (3, 4):
        raise ValueError(f"{what} must be (C, H, W) or (N, C, H, W), got shape {tuple(values.shape)}")
    return values


def _per_band(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(-1, 1, 1)


def input_affine(cfg: PretrainedCfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(a, b, nodata, nodata_is_nan)`` of a band spec as ``(C, 1, 1)`` float32 / bool tensors.

    The model's input is ``stored * a + b`` (``a = scale / std``, ``b = (offset - mean) / std``,
    computed in float64 and rounded once); ``nodata`` is None without one. Raises ``ValueError``
    for a cfg without a band spec.
    """
    spec = cfg.bands
    if spec is None:
        raise ValueError("input_affine needs a band spec (pretrained_cfg['bands'])")
    a = tuple(s / d for s, d in zip(spec.scale, cfg.std))
    b = tuple((o - m) / d for o, m, d in zip(spec.offset, cfg.mean, cfg.std))
    shape = (-1, 1, 1)
    nodata = is_nan = None
    if spec.nodata is not None:
        nodata = torch.tensor(spec.nodata, dtype=torch.float32).view(shape)
        is_nan = torch.isnan(nodata)
    return torch.tensor(a).float().view(shape), torch.tensor(b).float().view(shape), nodata, is_nan


def affine_input(
    values: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    nodata: torch.Tensor | None = None,
    nodata_is_nan: torch.Tensor | None = None,
) -> torch.Tensor:
    """``values * a + b`` in float32, band values equal to ``nodata`` set to 0 (see :func:`input_affine`).

    Plain tensor operations, so that ``torch.export``/ONNX graphs compute exactly what eager code does.
    """
    x = values.float()
    out = x * a + b
    if nodata is not None and nodata_is_nan is not None:
        out = out.masked_fill((x == nodata) | (torch.isnan(x) & nodata_is_nan), 0.0)
    return out


def normalise(values: Any, cfg: PretrainedCfg, *, what: str = "the image") -> torch.Tensor:
    """Stored values ``(C, H, W)`` or ``(N, C, H, W)`` (tensor or NumPy array) -> float32 model input.

    Without ``cfg.bands``: uint8 ``(v / 255 - mean) / std``, floating point ``(v - mean) / std``
    (on the 0..1 scale). With it: ``(v * scale + offset - mean) / std``, nodata band values 0.
    ``C`` must be ``cfg.in_channels``.

    Raises ``ValueError`` (wrong shape or channel count; 8-bit values for weights whose spec is
    not 8-bit, or the other way round) or ``TypeError`` (other integer types without a spec),
    naming ``what``.
    """
    x = _tensor(values, what)
    if x.shape[-3] != cfg.in_channels:
        raise ValueError(
            f"{what} has {x.shape[-3]} band(s) (shape {tuple(x.shape)}) but the model takes {cfg.in_channels} "
            "(config.in_channels)"
        )
    if cfg.bands is None:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif x.is_floating_point():
            x = x.float()
        else:
            raise TypeError(
                f"{what} holds {str(x.dtype).replace('torch.', '')} values; these weights take uint8 pictures or "
                "floats on the 0..1 scale. Data in its own units needs a band spec (pretrained_cfg['bands'], "
                "docs/inference.md#bands-in-their-own-units)"
            )
        return (x - _per_band(cfg.mean, x)) / _per_band(cfg.std, x)
    check_input_dtype(x.dtype, cfg.bands, what)
    a, b, nodata, is_nan = (t.to(x.device) if t is not None else None for t in input_affine(cfg))
    assert a is not None and b is not None  # input_affine always gives both
    return affine_input(x, a, b, nodata, is_nan)


def scale_bands(values: torch.Tensor, cfg: PretrainedCfg) -> torch.Tensor:
    """``stored * scale + offset`` in float32 (the spec's units, before mean/std), nodata values set
    to the band's mean (0 once normalised): the first step of the training augmentation, which
    resamples in these units. Requires ``cfg.bands``."""
    spec = cfg.bands
    if spec is None:
        raise ValueError("scale_bands needs a band spec (pretrained_cfg['bands'])")
    check_input_dtype(values.dtype, spec, "the image")
    x = values.float()
    out = x * _per_band(spec.scale, x) + _per_band(spec.offset, x)
    hits = band_nodata(values, spec)
    if hits is not None:
        out = torch.where(hits, _per_band(cfg.mean, x).expand_as(out), out)
    return out


def band_nodata(values: Any, spec: BandSpec | None) -> torch.Tensor | None:
    """Where each band holds its nodata value: bool ``(..., C, H, W)``; None without nodata."""
    if spec is None or spec.nodata is None:
        return None
    x = _tensor(values, "the image").float()
    nodata = _per_band(spec.nodata, x)
    return (x == nodata) | (torch.isnan(x) & torch.isnan(nodata))


def nodata_pixels(values: Any, spec: BandSpec | None) -> torch.Tensor | None:
    """Pixels missing in every band (GDAL's and rasterio's dataset-mask rule): bool ``(..., H, W)``;
    None without nodata. These are labelled ``ignore_index``."""
    hits = band_nodata(values, spec)
    return None if hits is None else hits.all(dim=-3)


def stored_dtype(cfg: PretrainedCfg) -> torch.dtype:
    """The dtype of stored values the weights take: the band spec's, uint8 for photos."""
    return getattr(torch, cfg.bands.dtype) if cfg.bands is not None else torch.uint8


def to_stored(x: torch.Tensor, cfg: PretrainedCfg) -> torch.Tensor:
    """The inverse of :func:`normalise`: model input -> stored values (rounded and clipped for
    integer types), for graphs that take stored values (``preprocess=True``) calibrated from
    normalised tensors. Photos: ``round(255 * (x * std + mean))`` as uint8."""
    x = x.float()
    mean, std = _per_band(cfg.mean, x), _per_band(cfg.std, x)
    if cfg.bands is None:
        return ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
    spec = cfg.bands
    stored = ((x * std + mean) - _per_band(spec.offset, x)) / _per_band(spec.scale, x)
    dtype = stored_dtype(cfg)
    if not dtype.is_floating_point:
        info = np.iinfo(spec.dtype)
        stored = stored.round().clamp(float(info.min), float(info.max)).to(torch.int64)
    return stored.to(dtype)


def display_rgb(values: torch.Tensor, cfg: PretrainedCfg) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of stored values ``(C, H, W)``, for overlays.

    Photos: uint8 as stored, floats ``round(255 * v)``; the first three channels (one channel
    repeated). With a band spec: the bands ``spec.rgb`` (default the first three) in the spec's
    units clipped to 0..1, times 255.
    """
    spec = cfg.bands
    if spec is None:
        image = values
        if image.dtype != torch.uint8:
            image = (image * 255.0).round().clamp(0, 255).to(torch.uint8)
    else:
        scaled = values.float() * _per_band(spec.scale, values) + _per_band(spec.offset, values)
        image = (scaled.nan_to_num(0.0).clamp(0, 1) * 255.0).round().to(torch.uint8)
        if spec.rgb is not None:
            image = image[list(spec.rgb)]
    image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


#: The ``pretrained_cfg`` entries a band settings file holds.
BAND_SETTINGS = ("bands", "mean", "std")


def band_settings(source: str | os.PathLike | Mapping[str, Any], in_channels: int | None = None) -> dict[str, Any]:
    """The ``pretrained_cfg`` entries of a band settings file (JSON) or dict, checked.

    ``{"bands": {"dtype": "uint16", "scale": 0.0001, "nodata": 0}, "mean": [...], "std": [...]}``
    (what ``pspnet stats --out`` writes, with a ``stats`` entry that is not used; pictures' have
    no ``bands``), or a bare band spec ``{"dtype": ...}``. Returns the stored form ``{"bands": ...,
    "mean": ..., "std": ...}`` (those given), to merge into ``model.pretrained_cfg``.

    Raises ``FileNotFoundError``, or ``ValueError`` in one line naming the file and the entry.
    """
    what = f"band settings {source}" if isinstance(source, (str, os.PathLike)) else "the band settings"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"band settings file not found: {path} (write one with pspnet stats --out FILE)")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a JSON band settings file ({exc})") from None
    else:
        data = source
    if isinstance(data, Mapping) and "dtype" in data:
        data = {"bands": data}
    if not isinstance(data, Mapping) or not set(data) & set(BAND_SETTINGS) or set(data) - {*BAND_SETTINGS, "stats"}:
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(
            f"{what}: expected a JSON object with 'bands' (a band spec such as {{'dtype': 'uint16', 'scale': 0.0001}}), "
            f"'mean' and 'std' (and 'stats', which is not used), got {found}"
        )
    settings = {key: data[key] for key in BAND_SETTINGS if key in data}
    PretrainedCfg.from_dict(settings, in_channels, what=what)
    return settings
