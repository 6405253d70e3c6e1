"""``Segmenter``: one picklable predictor to hand to Ray Data, Spark and Dask.

    seg = Segmenter("pspnet_r50-d8_ade20k")                      # nothing loaded yet: cheap to pickle
    ds.map_batches(Segmenter, fn_constructor_kwargs={"weights": "pspnet_r50-d8_ade20k"},
                   batch_size=16, concurrency=4, num_gpus=1)      # Ray Data: one model per actor
    da.map_overlap(seg, image, depth=(64, 64, 0), drop_axis=2, dtype=np.uint8, boundary="reflect")  # Dask

The weights are loaded on the first call, once per process (a process-wide cache keyed by the
weights, device and ``prepare``: Dask unpickles a function once per task), with the weights'
stored preprocessing (mean/std, channels) and protocol, exactly as :func:`~pspnet_lib.predict`
applies them; masks equal ``predict``'s. The batch forms (docs/scale.md has the table):

* a dict of NumPy arrays (Ray's default batch format): the pictures in column ``image``
  (``read_images``; ``(N, H, W, C)`` or a sequence of ``(H, W, C)``), ``bytes``
  (``read_binary_files``: encoded files) or ``path``; returns the dict with ``mask`` ``(N, H, W)``
  (an object array of ``(H, W)`` masks when sizes differ) and, with ``confidence``, ``confidence``;
* a NumPy array ``(N, H, W, C)`` -> ``(N, H, W)``; one picture ``(H, W, C)`` or ``(H, W)`` ->
  ``(H, W)`` (a Dask block);
* a 1-D NumPy array of paths or encoded bytes (Spark's ``predict_batch_udf`` on a string column)
  -> a list of rows ``{"mask": (H*W,) int32, "height": H, "width": W}``, the row form
  ``predict_batch_udf`` takes for a struct return type (its array fields must be 1-D);
* a pandas Series (Spark's ``pandas_udf``, e.g. over ``binaryFile``'s ``content``) -> a DataFrame;
  a pandas DataFrame or pyarrow Table (Ray's ``"pandas"``/``"pyarrow"`` formats) -> the same
  with columns ``mask`` (the paletted PNG that ``pspnet predict`` writes, as bytes), ``height``,
  ``width``: tabular engines cannot hold 2-D arrays of varying size in a column.

Masks are ``uint8`` for models of up to 256 classes, else ``int32`` (:attr:`Segmenter.mask_dtype`).
Anything else is one ``TypeError`` naming the forms taken.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.images import decode_image, to_image_tensor
from ..core.inference_protocol import resize_keyword
from ..core.pretrained_cfg import PretrainedCfg
from .confidence import check_kind, scaled, uncertainty
from .pipeline import one_line
from .predict import Prediction, model_num_classes, predict, resolve_protocol

__all__ = ["Segmenter", "BATCH_FORMS"]

#: What a Segmenter takes, for its TypeError.
BATCH_FORMS = (
    "a dict of NumPy arrays with column 'image' (N, H, W, C), 'bytes' or 'path' (Ray Data), a NumPy array "
    "(N, H, W, C), (H, W, C) or (H, W) (Dask blocks), a 1-D NumPy array of paths or encoded bytes (Spark "
    "predict_batch_udf), a pandas Series of paths or bytes (Spark pandas_udf), a pandas DataFrame or a pyarrow Table"
)
_COLUMNS = ("image", "bytes", "path")
_MODELS: dict[tuple[str, str, str], nn.Module] = {}
_MODELS_LOCK = threading.Lock()


class Segmenter:
    """A picklable callable segmenting batches in the forms batch engines pass (module docstring).

    Args:
        weights: anything :func:`~pspnet_lib.load_pretrained` takes (loaded lazily, once per
            process), or a model (pickled with the Segmenter).
        device: where to run; default ``cuda`` when available (each Ray GPU actor sees its GPU
            as ``cuda``), else ``cpu``.
        confidence: ``"maxprob"``, ``"margin"`` or ``"entropy"``: also return the map (dict
            forms), or its mean and the picture's uncertainty (row and table forms).
        column: the column holding the pictures in dict/table batches (default: the first of
            ``image``, ``bytes``, ``path`` present).
        mode, resize, crop, stride, scales, flip: the protocol, as :func:`~pspnet_lib.predict`
            (default: the weights').
        batch_size: pictures per forward pass.
        prepare: ``prepare(model) -> model`` applied once after loading, e.g.
            ``functools.partial(pspnet_lib.optimize_for_inference, dtype=torch.bfloat16)``.
        errors: ``"raise"`` (default) or ``"record"``: a picture that cannot be read gets an empty
            mask and its reason in an ``error`` column (dict, row and table forms) instead of
            failing the whole batch.
    """

    def __init__(
        self,
        weights: str | os.PathLike | nn.Module,
        *,
        device: str | None = None,
        confidence: str | None = None,
        column: str | None = None,
        mode: str | None = None,
        resize: int | Sequence[int] | bool | None = None,
        crop: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        batch_size: int = 8,
        prepare: Callable[[nn.Module], nn.Module] | None = None,
        errors: str = "raise",
        size: int | Sequence[int] | bool | None = None,
    ) -> None:
        if errors not in ("raise", "record"):
            raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.weights = weights
        self.device = device
        self.confidence = check_kind(confidence)
        self.column = column
        self.protocol_options: dict[str, Any] = dict(
            mode=mode,
            resize=resize_keyword(resize, size, where="Segmenter"),
            crop=crop,
            stride=stride,
            scales=tuple(scales),
            flip=flip,
        )
        self.batch_size = batch_size
        self.prepare = prepare
        self.errors = errors
        self._model: nn.Module | None = weights if isinstance(weights, nn.Module) else None
        self._lock = threading.Lock()

    # -- pickling: the configuration travels, a loaded model does not (unless it was given) -------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        if not isinstance(self.weights, nn.Module):
            state["_model"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        weights = type(self.weights).__name__ if isinstance(self.weights, nn.Module) else os.fspath(self.weights)
        return f"Segmenter({weights!r}, device={self.device!r}, confidence={self.confidence!r})"

    @property
    def model(self) -> nn.Module:
        """The model, loaded on first use (once per process for the same weights, device and ``prepare``)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> nn.Module:
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (os.fspath(self.weights), str(device), repr(self.prepare))  # type: ignore[arg-type]  # not a module here
        with _MODELS_LOCK:
            if key not in _MODELS:
                from ..hub.loading import load_pretrained

                loaded: nn.Module = load_pretrained(self.weights, device=device)  # type: ignore[arg-type]  # not a module here
                model = self.prepare(loaded) if self.prepare is not None else loaded
                resolve_protocol(model, **self.protocol_options)  # a bad protocol fails at load, once
                _MODELS[key] = model.eval()
            return _MODELS[key]

    @property
    def mask_dtype(self) -> np.dtype:
        """``uint8`` for models of up to 256 classes, else ``int32`` (loads the model)."""
        return np.dtype(np.uint8) if (model_num_classes(self.model) or 0) <= 256 else np.dtype(np.int32)

    # -- the forms ---------------------------------------------------------------------------------
    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            return self._dict(batch)
        if isinstance(batch, np.ndarray):
            return self._array(batch)
        package = type(batch).__module__.split(".")[0]
        kind = type(batch).__name__ if package == "builtins" else f"{package}.{type(batch).__name__}"
        if kind == "pandas.Series":
            return self._table_columns(list(batch), "pandas")
        if kind == "pandas.DataFrame":
            column = self._column(list(batch.columns))
            result = batch.copy()
            for name, values in self._table_columns(list(batch[column]), None).items():
                result[name] = values
            return result
        if kind == "pyarrow.Table":
            column = self._column(list(batch.column_names))
            table = batch
            for name, values in self._table_columns(batch.column(column).to_pylist(), None).items():
                table = table.append_column(name, _arrow_array(values))
            return table
        raise TypeError(f"Segmenter cannot take a {kind}; it takes {BATCH_FORMS}")

    def _column(self, names: Sequence[str]) -> str:
        if self.column is not None:
            if self.column not in names:
                raise TypeError(f"the batch has no column {self.column!r} (columns: {', '.join(map(str, names))})")
            return self.column
        for name in _COLUMNS:
            if name in names:
                return name
        raise TypeError(
            f"the batch has none of the columns {', '.join(_COLUMNS)} (columns: {', '.join(map(str, names))}); "
            "pass column=... naming the one with the pictures"
        )

    def _predict(self, items: Sequence[Any]) -> list[Prediction | str]:
        """A Prediction per item, or its one-line error (``errors="record"``) ."""
        cfg = PretrainedCfg.of(self.model)
        channels = cfg.in_channels
        tensors: list[torch.Tensor | str] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, (bytes, bytearray, memoryview)):
                    array = decode_image(item, channels, what=f"picture {index} of the batch (encoded bytes)")
                    tensors.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))
                else:
                    tensors.append(
                        to_image_tensor(item, channels, band_spec=cfg.bands, what=f"picture {index} of the batch")
                    )
            except (OSError, ValueError, TypeError) as exc:
                if self.errors == "raise":
                    raise
                tensors.append(one_line(exc))
        good = [t for t in tensors if isinstance(t, torch.Tensor)]
        results: list[Prediction] = []
        if good:
            out = predict(
                self.model,
                good,
                **self.protocol_options,
                batch_size=self.batch_size,
                confidence=self.confidence,
            )
            assert isinstance(out, list)  # a list of pictures gives a list
            results = out
        found = iter(results)
        return [t if isinstance(t, str) else next(found) for t in tensors]

    def _mask(self, result: Prediction | str) -> np.ndarray:
        if isinstance(result, str):
            return np.zeros((0, 0), dtype=self.mask_dtype)
        return result.mask.numpy().astype(self.mask_dtype)

    def _dict(self, batch: dict[str, Any]) -> dict[str, Any]:
        column = self._column(list(batch))
        results = self._predict(_items(batch[column]))
        out = dict(batch)
        out["mask"] = _stack([self._mask(r) for r in results])
        if self.confidence is not None:
            maps = [np.zeros((0, 0), np.float32) if isinstance(r, str) else _confidence(r) for r in results]
            out["confidence"] = _stack(maps)
        if self.errors == "record":
            out["error"] = np.array([r if isinstance(r, str) else "" for r in results], dtype=object)
        return out

    def _array(self, batch: np.ndarray) -> Any:
        if batch.ndim == 1 and batch.dtype.kind in "OSU":  # Spark's predict_batch_udf on a string column
            return [self._row(r) for r in self._predict(list(batch))]
        if batch.dtype.kind not in "uif" or batch.ndim not in (2, 3, 4):
            raise TypeError(
                f"Segmenter cannot take a NumPy array of shape {batch.shape}, dtype {batch.dtype}; it takes {BATCH_FORMS}"
            )
        if batch.size == 0:  # Dask's probe of the output type: answer without loading the model
            shape = batch.shape[:-1] if batch.ndim >= 3 else batch.shape
            return np.zeros(shape, dtype=np.uint8)
        if batch.ndim == 4:
            results = self._predict(list(batch))
            return np.stack([self._mask(r) for r in results])
        return self._mask(self._predict([batch])[0])

    def _row(self, result: Prediction | str) -> dict[str, Any]:
        if isinstance(result, str):
            row: dict[str, Any] = {"mask": np.zeros(0, np.int32), "height": 0, "width": 0}
        else:
            height, width = result.mask.shape
            row = {"mask": result.mask.numpy().astype(np.int32).ravel(), "height": int(height), "width": int(width)}
        row.update(self._scores(result))
        if self.errors == "record":
            row["error"] = result if isinstance(result, str) else ""
        return row

    def _scores(self, result: Prediction | str) -> dict[str, float]:
        if self.confidence is None:
            return {}
        if isinstance(result, str) or result.confidence is None:
            return {"confidence_mean": float("nan"), "uncertainty": float("nan")}
        mean = float(scaled(result.confidence, self.confidence, model_num_classes(self.model) or 0).double().mean())
        return {"confidence_mean": mean, "uncertainty": uncertainty(mean, self.confidence)}

    def _table_columns(self, items: list[Any], frame: str | None) -> Any:
        results = self._predict(items)
        columns: dict[str, list[Any]] = {"mask": [], "height": [], "width": []}
        for result in results:
            png = b"" if isinstance(result, str) else _png(result)
            height, width = (0, 0) if isinstance(result, str) else tuple(result.mask.shape)
            columns["mask"].append(png)
            columns["height"].append(int(height))
            columns["width"].append(int(width))
            for name, value in self._scores(result).items():
                columns.setdefault(name, []).append(value)
            if self.errors == "record":
                columns.setdefault("error", []).append(result if isinstance(result, str) else "")
        if frame == "pandas":
            import pandas as pd

            return pd.DataFrame(columns)
        return columns


def _items(values: Any) -> list[Any]:
    """The pictures of a column: rows of a 4-D array, or the elements of a sequence / object array."""
    if isinstance(values, np.ndarray) and values.dtype != object and values.ndim == 4:
        return list(values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "SU":
        return values.tolist()  # str paths ('U') or encoded pictures ('S')
    return list(values)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """One ``(N, H, W)`` array when the shapes agree, else an object array of the arrays."""
    if arrays and len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def _confidence(result: Prediction) -> np.ndarray:
    assert result.confidence is not None  # asked for
    return result.confidence.numpy()


def _png(result: Prediction) -> bytes:
    buffer = io.BytesIO()
    result.colorize().save(buffer, format="PNG")
    return buffer.getvalue()


def _arrow_array(values: list[Any]) -> Any:
    import pyarrow as pa

    return pa.array(values)
