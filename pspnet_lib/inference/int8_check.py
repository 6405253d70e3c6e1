"""Running an ONNX file in ONNX Runtime or OpenVINO, and checking an INT8 file against the fp32 model.

:func:`load_onnx_runner` gives one callable for either runtime (the same thread count PyTorch
uses); :func:`check_int8_onnx` measures the argmax agreement and logit error of a quantized file
against the PyTorch model on held-out pictures (the ``--check`` of ``pspnet export --int8``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..core.agreement import agreement_stats
from ..core.bands import to_stored
from ..core.inference_protocol import resize_keyword
from ..core.pretrained_cfg import PretrainedCfg
from .calibration import (
    _as_batches,
    _fit_static,
    _is_picture_source,
    _static_input_shape,
    calibration_images,
)
from .export import _require_onnx
from .export_wrapper import preprocesses

__all__ = ["load_onnx_runner", "check_int8_onnx"]

logger = logging.getLogger(__name__)


def load_onnx_runner(
    path: str | os.PathLike, runtime: str = "onnxruntime", *, threads: int | None = None, precision: str | None = None
):
    """A callable ``runner(x: np.ndarray) -> np.ndarray`` (first output) for an ONNX file.

    Args:
        runtime: ``"onnxruntime"`` (CPUExecutionProvider) or ``"openvino"`` (CPU plugin, latency hint).
        threads: intra-op threads (default: ``torch.get_num_threads()``, so both runtimes use what
            PyTorch would).
        precision: OpenVINO only: ``"f32"`` or ``"bf16"`` for the float parts of the graph
            (``INFERENCE_PRECISION_HINT``); None = OpenVINO's default (bf16 on CPUs with
            AVX-512-BF16/AMX).
    """
    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError("the OpenVINO runtime is not installed: pip install 'pspnet-lib[openvino]'") from exc
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})[0].copy()
    raise ValueError(f"unknown runtime {runtime!r}; expected 'onnxruntime' or 'openvino'")


def check_int8_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    images: Any,
    *,
    runtime: str = "onnxruntime",
    count: int | None = None,
    resize: int | Sequence[int] | bool | None = None,
    size: int | Sequence[int] | bool | None = None,
) -> dict[str, float]:
    """Compare an INT8 file with the fp32 PyTorch ``model`` on held-out pictures.

    ``images`` is a folder / list of pictures (preprocessed like :func:`calibration_images`) or
    normalised float tensors (``resize``: their resize, as there; ``size`` is its deprecated
    0.3 name). Returns :func:`~pspnet_lib.runtime.agreement_stats` aggregated over
    all pictures: ``argmax_agreement`` (pixel-weighted fraction of pixels whose class agrees),
    ``max_rel_err`` (worst ``max|int8 - fp32| / max|fp32|`` of the logits), ``mean_abs_err``,
    ``pixels``. For an ``output="labels"`` file only the agreement is meaningful (errors are 0);
    uint8-input files (``preprocess=True``) are fed the pictures' uint8 values (weights with a band
    spec: the stored values, :func:`pspnet_lib.core.bands.to_stored`).
    """
    resize = resize_keyword(resize, size, where="check_int8_onnx")
    from .export import ExportWrapper

    onnx = _require_onnx()
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    preprocess = preprocesses(props.get("pspnet_lib.input", ""))
    output = props.get("pspnet_lib.output", "logits")
    batches = _as_batches(
        calibration_images(images, model, count=count, resize=resize) if _is_picture_source(images) else images,
        PretrainedCfg.of(model).in_channels,
    )
    batches = _fit_static(batches, _static_input_shape(path))
    run = load_onnx_runner(path, runtime)
    cfg = PretrainedCfg.of(model)
    reference = ExportWrapper(model, output="logits").eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total = {"max_rel_err": 0.0, "mean_abs_err": 0.0, "argmax_agreement": 0.0, "pixels": 0}
    for x in batches:
        with torch.no_grad():
            ref = reference(x.to(device)).float().cpu()
        feed = to_stored(x, cfg) if preprocess else x  # uint8 pictures or the band spec's stored values
        got = torch.from_numpy(run(feed.numpy()))
        if output == "labels":
            agree = (got == ref.argmax(1)).float()
            stats = {
                "max_rel_err": 0.0,
                "mean_abs_err": 0.0,
                "argmax_agreement": float(agree.mean()),
                "pixels": agree.numel(),
            }
        else:
            stats = agreement_stats(ref.softmax(1) if output == "probs" else ref, got)
        n = stats["pixels"]
        total["max_rel_err"] = max(total["max_rel_err"], stats["max_rel_err"])
        for key in ("mean_abs_err", "argmax_agreement"):
            total[key] = (total[key] * total["pixels"] + stats[key] * n) / (total["pixels"] + n)
        total["pixels"] += n
    logger.info("INT8 (%s) vs fp32: %s", runtime, total)
    return total
