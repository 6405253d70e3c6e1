"""Calibrated INT8 models: a static-quantized QDQ ONNX file, calibrated on your own pictures.

One call exports the model with the dynamic-size pooling of :mod:`pspnet_lib.inference.export`,
prepares the graph (``onnxruntime.quantization.quant_pre_process``: shape inference and graph
optimisation) and quantizes it statically (``quantize_static``: QDQ format, unsigned 8-bit
activations with per-tensor scales from the calibration pictures, signed 8-bit weights with one
scale per output channel). The classifier (the last 1x1 convolution) stays in float by default:
on the trained demo model that lifted the argmax agreement with fp32 from 99.2-99.4% to
99.6-99.7% at no measurable latency cost (docs/performance.md, "INT8 accuracy: what was tried").
The result runs in ONNX Runtime and in OpenVINO, at any batch size, height and width::

    from pspnet_lib.inference.quantize import export_onnx_int8, check_int8_onnx
    export_onnx_int8(model, "pspnet_int8.onnx", calibration="photos/", calibration_count=16)
    print(check_int8_onnx("pspnet_int8.onnx", model, "held_out_photos/"))

Calibration pictures go through the weights' own preprocessing (:mod:`pspnet_lib.inference.calibration`);
running and checking a file is :mod:`pspnet_lib.inference.int8_check`. See docs/export.md ("INT8").
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._files import atomic_output
from ..core.bands import to_stored
from ..core.inference_protocol import resize_keyword
from ..core.pretrained_cfg import PretrainedCfg
from .calibration import (
    _as_batches,
    _fit_static,
    _is_picture_source,
    _static_input_shape,
    calibration_files,
    calibration_images,
)
from .export import _require_onnx, export_onnx
from .int8_check import check_int8_onnx, load_onnx_runner

__all__ = [
    "CALIBRATION_METHODS",
    "FLOAT_LAYERS",
    "DEFAULT_FLOAT_LAYERS",
    "calibration_files",
    "calibration_images",
    "quantize_onnx",
    "export_onnx_int8",
    "check_int8_onnx",
    "load_onnx_runner",
]

logger = logging.getLogger(__name__)

#: onnxruntime.quantization.CalibrationMethod names accepted by ``calibrate_method``.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

#: Layers ``float_layers`` can keep in float: ``"classifier"`` (the head's last 1x1 convolution,
#: whose outputs are the logits) and ``"first"`` (the stem's first convolution, on the picture).
FLOAT_LAYERS = ("classifier", "first")
#: What :func:`quantize_onnx` keeps in float unless told otherwise (measured: docs/performance.md).
DEFAULT_FLOAT_LAYERS: tuple[str, ...] = ("classifier",)


def _require_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImportError(
            "INT8 quantization uses ONNX Runtime's quantization tools: pip install 'pspnet-lib[onnx]'"
        ) from exc
    return quantization


def _check_float_layers(float_layers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(float_layers, str):
        float_layers = (float_layers,)
    unknown = [name for name in float_layers if name not in FLOAT_LAYERS]
    if unknown:
        raise ValueError(
            f"unknown float layer(s) {', '.join(map(repr, unknown))}; expected any of {', '.join(FLOAT_LAYERS)} "
            "(or an empty list to quantize every convolution)"
        )
    return tuple(dict.fromkeys(float_layers))


def _float_layer_nodes(model_path: Path, float_layers: Sequence[str]) -> list[str]:
    """The names of the Conv nodes to keep in float, found by position (exporter-independent).

    ONNX graphs are topologically sorted and every convolution of the exported PSPNet lies on the
    path picture -> logits (the auxiliary head is not exported), so the first Conv node is the
    stem's first convolution and the last one the classifier. Unnamed nodes are named in place.
    """
    if not float_layers:
        return []
    onnx = _require_onnx()
    proto = onnx.load(str(model_path))
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    if not convs:
        raise ValueError(f"{model_path} has no Conv node; expected an ONNX file exported from a PSPNet")
    picked = {"first": convs[0], "classifier": convs[-1]}
    renamed = False
    for index, node in enumerate(convs):
        if not node.name:
            node.name, renamed = f"pspnet_conv_{index}", True
    if renamed:
        onnx.save(proto, str(model_path))
    return [picked[name].name for name in float_layers]


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Any,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    float_layers: Sequence[str] = DEFAULT_FLOAT_LAYERS,
    input_uint8: tuple[Sequence[float], Sequence[float]] | PretrainedCfg | None = None,
) -> Path:
    """Statically quantize an fp32 ONNX file (from :func:`~pspnet_lib.inference.export.export_onnx`) to QDQ INT8.

    Args:
        fp32_path: the float model; its ``pspnet_lib.*`` metadata is kept.
        out_path: where to write the INT8 model (atomically).
        calibration: normalised float images: a batch tensor ``(N, 3, H, W)``, a list of tensors
            ``(3, H, W)``/``(N, 3, H, W)`` or a DataLoader yielding them (or ``(images, labels)``);
            sizes may differ between items. Each item is one calibration run.
        per_channel: one weight scale per output channel (recommended for convolutions).
        calibrate_method: ``"minmax"`` (ranges of all calibration activations; the default),
            ``"entropy"`` or ``"percentile"`` (clip outliers; slower). On the trained demo model
            they agreed with fp32 no better than MinMax (docs/performance.md).
        float_layers: convolutions kept in float (``nodes_to_exclude``), any of
            :data:`FLOAT_LAYERS`: ``"classifier"`` (the default; the logits' own layer, where 8-bit
            steps flip the argmax of close classes) and ``"first"``; ``()`` quantizes every one.
        input_uint8: ``(mean, std)`` when the graph takes uint8 pictures (``preprocess=True``):
            the calibration tensors are turned back into uint8 with them; or the model's
            :class:`~pspnet_lib.core.pretrained_cfg.PretrainedCfg` for a graph that takes stored
            values (pictures, or a band spec's type: :func:`pspnet_lib.core.bands.to_stored`).

    Activations are unsigned 8-bit with per-tensor asymmetric scales, weights signed 8-bit
    symmetric (ONNX Runtime's recommended U8S8 on x86; OpenVINO runs the same QDQ file).
    """
    q = _require_quantization()
    onnx = _require_onnx()
    if calibrate_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {calibrate_method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    float_layers = _check_float_layers(float_layers)
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    shape = _static_input_shape(fp32_path)
    batches = _fit_static(_as_batches(calibration, shape[1]), shape)
    if input_uint8 is not None:
        stored_cfg = (
            input_uint8
            if isinstance(input_uint8, PretrainedCfg)
            else PretrainedCfg(in_channels=len(input_uint8[0]), mean=tuple(input_uint8[0]), std=tuple(input_uint8[1]))
        )
        batches = [to_stored(b, stored_cfg) for b in batches]
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    reader_base: Any = q.CalibrationDataReader  # onnxruntime is imported lazily (an optional extra)

    class _Reader(reader_base):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch.numpy()}

        def rewind(self) -> None:
            self._it = iter(batches)

    method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[calibrate_method]
    with tempfile.TemporaryDirectory(prefix="pspnet_int8_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference + graph optimisation first (quantize_static needs value shapes, and
        # fused graphs quantize to fewer Q/DQ pairs). ONNX Runtime's symbolic shape inference is
        # skipped: it took ~40% of the time and produced the identical quantized graph here.
        q.shape_inference.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        excluded = _float_layer_nodes(prepared, float_layers)
        with atomic_output(out_path) as target:
            q.quantize_static(
                str(prepared),
                str(target),
                _Reader(),
                quant_format=q.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=excluded,
                calibration_providers=["CPUExecutionProvider"],
            )
            proto = onnx.load(str(target))
            props = {p.key: p.value for p in proto.metadata_props}
            props["pspnet_lib.quantization"] = json.dumps(
                {
                    "format": "QDQ",
                    "activations": "uint8, per-tensor, asymmetric",
                    "weights": "int8, " + ("per-channel" if per_channel else "per-tensor") + ", symmetric",
                    "calibrate_method": calibrate_method,
                    "float_layers": list(float_layers),
                    "calibration_images": int(sum(b.shape[0] for b in batches)),
                    "calibration_sizes": sorted({f"{b.shape[2]}x{b.shape[3]}" for b in batches}),
                }
            )
            onnx.helper.set_model_props(proto, props)
            onnx.save(proto, str(target))
    return out_path


def export_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike,
    calibration: Any,
    *,
    calibration_count: int | None = None,
    resize: int | Sequence[int] | bool | None = None,
    size: int | Sequence[int] | bool | None = None,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    float_layers: Sequence[str] = DEFAULT_FLOAT_LAYERS,
    dynamic: bool = True,
    opset: int | None = None,
    height: int = 512,
    width: int = 512,
    batch_size: int = 2,
    preprocess: bool = False,
    output: str = "logits",
    exporter: str = "auto",
    seed: int = 0,
) -> Path:
    """Export ``model`` as a static-quantized (calibrated) INT8 QDQ ONNX file, in one call.

    Args:
        model: a PSPNet in eval mode.
        path: the ``.onnx`` file to write (atomically).
        calibration: a folder of pictures or a list of pictures (paths, PIL images, arrays, uint8
            tensors), preprocessed with the weights' resize and mean/std
            (:func:`calibration_images`); or already-normalised float tensors / a DataLoader of
            them, used as given.
        calibration_count: calibrate on at most this many pictures (a reproducible sample, ``seed``).
            Picture folders only; tensors are used as given.
        resize: the resize of the calibration pictures (see :func:`calibration_images`);
            ``size`` is its deprecated (0.3) name.
        per_channel, calibrate_method, float_layers: see :func:`quantize_onnx`.
        dynamic, opset, height, width, batch_size, preprocess, output, exporter: as for
            :func:`~pspnet_lib.inference.export.export_onnx`; the INT8 file is dynamic in batch,
            height and width like the fp32 one. With ``dynamic=False`` the calibration images are
            resized to ``height x width`` and grouped by ``batch_size``.

    Returns ``path``. The file runs in ONNX Runtime (``CPUExecutionProvider``) and OpenVINO
    (``core.read_model(path)``); :func:`check_int8_onnx` compares it with the fp32 model.
    """
    resize = resize_keyword(resize, size, where="export_onnx_int8")
    if _is_picture_source(calibration):
        batches: Any = calibration_images(calibration, model, count=calibration_count, resize=resize, seed=seed)
    else:
        batches = calibration
    cfg = PretrainedCfg.of(model)
    input_uint8 = cfg if preprocess else None  # the graph takes the stored values
    with tempfile.TemporaryDirectory(prefix="pspnet_int8_") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(
            model,
            fp32,
            dynamic=dynamic,
            opset=opset,
            height=height,
            width=width,
            batch_size=batch_size,
            preprocess=preprocess,
            output=output,
            exporter=exporter,
        )
        return quantize_onnx(
            fp32,
            path,
            batches,
            per_channel=per_channel,
            calibrate_method=calibrate_method,
            float_layers=float_layers,
            input_uint8=input_uint8,
        )
