"""Calibrated INT8 models: a static-quantized QDQ ONNX file, calibrated on your own pictures.

One call exports the model with the dynamic-size pooling of :mod:`pspnet_lib.inference.export`,
prepares the graph (``onnxruntime.quantization.quant_pre_process``: shape inference and graph
optimisation) and quantizes it statically (``quantize_static``: QDQ format, unsigned 8-bit
activations with per-tensor scales from the calibration pictures, signed 8-bit weights with one
scale per output channel). The result runs in ONNX Runtime and in OpenVINO, at any batch size,
height and width::

    from pspnet_lib.inference.quantize import export_onnx_int8, check_int8_onnx
    export_onnx_int8(model, "pspnet_int8.onnx", calibration="photos/", calibration_count=16)
    print(check_int8_onnx("pspnet_int8.onnx", model, "held_out_photos/"))

Calibration pictures go through the weights' own preprocessing (``pretrained_cfg``: the test
resize of :func:`~pspnet_lib.inference.predict.resolve_protocol` and mean/std, applied with
:func:`pspnet_lib.hub.preprocessing.build_transforms`), so the activation ranges are those the
model meets at inference. See docs/export.md ("INT8").
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._files import atomic_output
from ..core.agreement import agreement_stats
from ..core.images import IMAGE_EXTENSIONS, load_image, to_rgb_tensor
from ..core.pretrained_cfg import PretrainedCfg
from .export import _require_onnx, export_onnx

__all__ = [
    "CALIBRATION_METHODS",
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


def _require_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImportError(
            "INT8 quantization uses ONNX Runtime's quantization tools: pip install 'pspnet-lib[onnx]'"
        ) from exc
    return quantization


def calibration_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files (by extension, :data:`~pspnet_lib.core.images.IMAGE_EXTENSIONS`) in ``folder``, sorted.

    Raises ``FileNotFoundError`` (not a folder) or ``ValueError`` (no images in it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder} (expected a folder of pictures)")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"no pictures in {folder} (expected files ending in {', '.join(IMAGE_EXTENSIONS)}); "
            "point the calibration at a folder of images like the ones you will segment"
        )
    return files


def _sample(items: list, count: int | None, seed: int) -> list:
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise ValueError(f"the calibration count must be at least 1, got {count}")
    picked = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picked]


def calibration_images(
    source: str | os.PathLike | Sequence[Any] | torch.Tensor,
    model: nn.Module,
    *,
    count: int | None = None,
    size: int | Sequence[int] | bool | None = None,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Pictures -> normalised ``(1, 3, h, w)`` float32 tensors, with the weights' own preprocessing.

    Args:
        source: a folder of pictures, or a list of paths / PIL images / arrays / uint8 tensors
            (anything :func:`~pspnet_lib.core.images.to_rgb_tensor` accepts).
        model: the model whose ``pretrained_cfg`` gives mean/std (ImageNet by default) and the
            test resize.
        count: use at most this many pictures, sampled reproducibly (``seed``); None = all.
        size: the resize, as in :func:`~pspnet_lib.inference.predict.predict`: None = the weights'
            protocol (``pretrained_cfg["inference"]["resize"]``; none stored = the picture's own
            size), False = no resize, an int = short side, ``(long, short)`` = limits.

    The resize and normalisation are :func:`pspnet_lib.hub.preprocessing.build_transforms`, the
    pipeline the zoo's ``weights.transforms()`` use, so calibration sees what inference sees.
    """
    from ..hub.preprocessing import build_transforms
    from .predict import resolve_protocol

    items = calibration_files(source) if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise ValueError("no calibration pictures given")
    items = _sample(items, count, seed)
    cfg = PretrainedCfg.of(model)
    resize = resolve_protocol(model, size=size).resize
    transform = build_transforms(resize=resize, mean=cfg.mean, std=cfg.std)
    out = []
    for item in items:
        try:
            image = to_rgb_tensor(load_image(item) if isinstance(item, (str, os.PathLike)) else item)
        except (OSError, ValueError) as exc:  # one unreadable picture should not stop the calibration
            logger.warning(
                "calibration: skipping %s: %s", item if isinstance(item, (str, os.PathLike)) else "a picture", exc
            )
            continue
        if image.dtype != torch.uint8:  # float [0, 1] -> the uint8 the transforms expect
            image = (image * 255.0).round().clamp(0, 255).to(torch.uint8)
        out.append(transform(image).unsqueeze(0).contiguous())
    if not out:
        raise ValueError(f"none of the {len(items)} calibration picture(s) could be read")
    return out


def _as_batches(calibration: Any) -> list[torch.Tensor]:
    """Normalised float batches ``(N, 3, H, W)`` from a tensor, a list of tensors or a DataLoader."""
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    batches = []
    for index, item in enumerate(calibration):
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            item = item[0]  # (images, labels) from a DataLoader
        if isinstance(item, dict) and isinstance(item.get("image", item.get("images")), torch.Tensor):
            item = item.get("image", item.get("images"))
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"calibration item {index} is a {type(item).__name__}, expected a normalised image tensor")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        if item.ndim != 4 or item.shape[1] != 3 or not item.is_floating_point():
            raise ValueError(
                f"calibration item {index} has shape {tuple(item.shape)} and dtype {item.dtype}; expected normalised "
                "float images (3, H, W) or (N, 3, H, W), i.e. (x / 255 - mean) / std with the weights' mean/std "
                "(pspnet_lib.inference.quantize.calibration_images makes them from pictures)"
            )
        batches.append(item.detach().float().cpu())
    if not batches:
        raise ValueError("the calibration data is empty; give at least one image")
    return batches


def _static_input_shape(onnx_path: str | os.PathLike) -> list[int | None]:
    """The graph input's ``(N, C, H, W)``, None for symbolic dimensions."""
    onnx = _require_onnx()
    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _fit_static(batches: list[torch.Tensor], shape: Sequence[int | None]) -> list[torch.Tensor]:
    """Make images fit a graph exported with ``dynamic=False``: resized to its H x W, grouped in its batch size.

    Resizing after normalisation equals resizing before it (bilinear interpolation commutes with
    the per-channel affine normalisation). A last incomplete batch repeats its final image.
    """
    import torch.nn.functional as F

    n, _, h, w = (list(shape) + [None] * 4)[:4]
    images = [img.unsqueeze(0) for b in batches for img in b]
    if h is not None and w is not None:
        images = [
            img if img.shape[-2:] == (h, w) else F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
            for img in images
        ]
    elif n is None:
        return batches
    n = n or 1
    grouped = []
    for start in range(0, len(images), n):
        chunk = images[start : start + n]
        chunk += [chunk[-1]] * (n - len(chunk))
        grouped.append(torch.cat(chunk))
    return grouped


def _to_uint8(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    # The inverse of the normalisation, for graphs that normalise inside (preprocess=True).
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((batch * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Any,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    input_uint8: tuple[Sequence[float], Sequence[float]] | None = None,
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
            ``"entropy"`` or ``"percentile"`` (clip outliers; slower).
        input_uint8: ``(mean, std)`` when the graph takes uint8 pictures (``preprocess=True``):
            the calibration tensors are turned back into uint8 with them.

    Activations are unsigned 8-bit with per-tensor asymmetric scales, weights signed 8-bit
    symmetric (ONNX Runtime's recommended U8S8 on x86; OpenVINO runs the same QDQ file).
    """
    q = _require_quantization()
    onnx = _require_onnx()
    if calibrate_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration method {calibrate_method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    batches = _fit_static(_as_batches(calibration), _static_input_shape(fp32_path))
    if input_uint8 is not None:
        batches = [_to_uint8(b, *input_uint8) for b in batches]
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class _Reader(q.CalibrationDataReader):
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
    size: int | Sequence[int] | bool | None = None,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
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
        size: the resize of the calibration pictures (see :func:`calibration_images`).
        per_channel, calibrate_method: see :func:`quantize_onnx`.
        dynamic, opset, height, width, batch_size, preprocess, output, exporter: as for
            :func:`~pspnet_lib.inference.export.export_onnx`; the INT8 file is dynamic in batch,
            height and width like the fp32 one. With ``dynamic=False`` the calibration images are
            resized to ``height x width`` and grouped by ``batch_size``.

    Returns ``path``. The file runs in ONNX Runtime (``CPUExecutionProvider``) and OpenVINO
    (``core.read_model(path)``); :func:`check_int8_onnx` compares it with the fp32 model.
    """
    if _is_picture_source(calibration):
        batches: Any = calibration_images(calibration, model, count=calibration_count, size=size, seed=seed)
    else:
        batches = calibration
    cfg = PretrainedCfg.of(model)
    input_uint8 = (list(cfg.mean), list(cfg.std)) if preprocess else None
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
            fp32, path, batches, per_channel=per_channel, calibrate_method=calibrate_method, input_uint8=input_uint8
        )


def _is_picture_source(calibration: Any) -> bool:
    if isinstance(calibration, (str, os.PathLike)):
        return True
    if isinstance(calibration, (list, tuple)) and calibration:
        first = calibration[0]
        return not (isinstance(first, torch.Tensor) and first.is_floating_point())
    return False


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
    size: int | Sequence[int] | bool | None = None,
) -> dict[str, float]:
    """Compare an INT8 file with the fp32 PyTorch ``model`` on held-out pictures.

    ``images`` is a folder / list of pictures (preprocessed like :func:`calibration_images`) or
    normalised float tensors. Returns :func:`~pspnet_lib.runtime.agreement_stats` aggregated over
    all pictures: ``argmax_agreement`` (pixel-weighted fraction of pixels whose class agrees),
    ``max_rel_err`` (worst ``max|int8 - fp32| / max|fp32|`` of the logits), ``mean_abs_err``,
    ``pixels``. For an ``output="labels"`` file only the agreement is meaningful (errors are 0);
    uint8-input files (``preprocess=True``) are fed the pictures' uint8 values.
    """
    from .export import ExportWrapper

    onnx = _require_onnx()
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    preprocess = props.get("pspnet_lib.input", "").startswith("uint8")
    output = props.get("pspnet_lib.output", "logits")
    batches = _as_batches(
        calibration_images(images, model, count=count, size=size) if _is_picture_source(images) else images
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
        feed = _to_uint8(x, cfg.mean, cfg.std) if preprocess else x
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
