"""``optimize_for_inference(model, dtype="int8", calibration=...)``: a calibrated INT8 model behind the fast path's call.

The int8 model is the static-quantized QDQ ONNX graph of :mod:`pspnet_lib.inference.quantize`
(per-channel int8 weights, uint8 activations calibrated on the given images), run by OpenVINO
(``backend="openvino"``, chosen by ``"auto"``) or ONNX Runtime (``backend="onnxruntime"``).

Why a runtime and not PyTorch's own int8 kernels: measured on the benchmark CPU (docs/performance.md,
"INT8"), OpenVINO's int8 model was the fastest CPU PSPNet, PyTorch's eager quantized tensors
(``torch.ops.quantized.conv2d``) are deprecated as of torch 2.14, and the pt2e/X86InductorQuantizer
route needs an Inductor compilation per input shape. Where the back end or int8 instructions are
missing the call falls back to the bfloat16 fast path with a ``RuntimeWarning``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models.pspnet import PSPNet
from .model import FastPSPNet
from .precision import native_int8_support

__all__ = ["INT8_BACKENDS", "Int8PSPNet", "build_int8", "int8_backend_available"]

logger = logging.getLogger(__name__)

INT8_BACKENDS = ("auto", "openvino", "onnxruntime")


def int8_backend_available(backend: str) -> tuple[bool, str]:
    """Whether ``backend`` (``"openvino"`` or ``"onnxruntime"``) and the quantization tools are installed."""
    needed = {"onnx": "onnx", "onnxruntime": "onnxruntime"}
    if backend == "openvino":
        needed["openvino"] = "openvino"
    missing = [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        extra = "pspnet-lib[onnx,openvino]" if backend == "openvino" else "pspnet-lib[onnx]"
        return False, f"{', '.join(missing)} not installed (pip install '{extra}')"
    return True, f"{backend} installed"


class Int8PSPNet(nn.Module):
    """A calibrated INT8 PSPNet run by OpenVINO or ONNX Runtime, with the fast path's call contract.

    ``model(x)`` takes a normalised float batch ``(N, 3, H, W)`` of any size and returns float32
    logits ``(N, num_classes, H, W)`` on the CPU, like :class:`~pspnet_lib.runtime.FastPSPNet`.
    It has ``config``, ``pretrained_cfg``, ``num_classes``, ``predict``; ``backend`` names the
    runtime and ``quantization`` the settings. Inference only: ``train()`` and moving/casting raise.
    """

    _check_input = FastPSPNet._check_input

    def __init__(self, model: PSPNet, onnx_path: str | Path, backend: str, threads: int, quantization: dict) -> None:
        super().__init__()
        from ..inference.quantize import load_onnx_runner

        self.config = copy.deepcopy(model.config)
        self.pretrained_cfg: dict[str, Any] = copy.deepcopy(getattr(model, "pretrained_cfg", {}))
        self.backend = backend
        self.dtype = "int8"
        self.threads = threads
        self.quantization = quantization
        self.device = torch.device("cpu")
        self._run = load_onnx_runner(onnx_path, backend, threads=threads)
        super().train(False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def train(self, mode: bool = True) -> Int8PSPNet:
        if mode:
            raise RuntimeError(
                "the int8 module returned by optimize_for_inference is inference-only; train the original model "
                "and optimise it again afterwards"
            )
        return super().train(False)

    def _apply(self, fn, recurse: bool = True):
        raise RuntimeError(
            "the int8 module returned by optimize_for_inference runs in "
            f"{self.backend} on the CPU and cannot be moved or cast; optimise the original model again instead"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self._run(array))

    def predict(self, images: Any, **kwargs: Any) -> Any:
        """Segment images given as paths, PIL images, arrays or tensors; see :func:`pspnet_lib.predict`."""
        from ..inference.predict import predict

        return predict(self, images, **kwargs)

    def extra_repr(self) -> str:
        return f"backend={self.backend}, classes={self.num_classes}, calibration_images={self.quantization.get('calibration_images')}"


def build_int8(model: PSPNet, calibration: Any, backend: str = "auto") -> Int8PSPNet | None:
    """The INT8 module, or None (after a ``RuntimeWarning`` saying why) when it cannot be built here.

    ``calibration``: normalised float images (a batch tensor, a list of tensors or a DataLoader),
    see :func:`pspnet_lib.inference.quantize.quantize_onnx`. ``backend``: ``"auto"`` (OpenVINO when
    installed; ONNX Runtime's int8 was slower than the bfloat16 fast path in the measurements, so
    it is not chosen automatically), ``"openvino"`` or ``"onnxruntime"``.
    """
    from ..inference.export import export_onnx
    from ..inference.quantize import _as_batches, quantize_onnx

    if backend not in INT8_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(INT8_BACKENDS)}, got {backend!r}")
    if calibration is None:
        raise ValueError(
            "dtype='int8' needs calibration images: optimize_for_inference(model, 'int8', calibration=batch), "
            "with normalised images like those you will segment (pspnet_lib.inference.quantize.calibration_images "
            "makes them from pictures)"
        )
    batches = _as_batches(calibration)  # bad calibration data fails here, before any fallback
    device = next(model.parameters()).device
    chosen = "openvino" if backend == "auto" else backend
    ok, reason = native_int8_support(device)
    if ok:
        ok, reason = int8_backend_available(chosen)
    if not ok:
        warnings.warn(
            f"optimize_for_inference: int8 requested but {reason}; falling back to the bfloat16 fast path",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pspnet_int8_") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the TorchScript-based exporter's deprecation notice
            try:  # the TorchScript-based exporter traces ~5x faster than dynamo; same graph numerically
                export_onnx(model, fp32, height=64, width=64, exporter="torchscript")
            except Exception as exc:  # noqa: BLE001 - e.g. a torch without it: the dynamo exporter is equivalent
                logger.info("TorchScript-based ONNX export failed (%s); using the default exporter", exc)
                export_onnx(model, fp32, height=64, width=64)
        quantize_onnx(fp32, int8, batches)
        import onnx

        props = {p.key: p.value for p in onnx.load(str(int8), load_external_data=False).metadata_props}
        quantization = json.loads(props.get("pspnet_lib.quantization", "{}"))
        module = Int8PSPNet(model, int8, chosen, torch.get_num_threads(), quantization)
    logger.info("optimize_for_inference: int8 model for %s built in %.1f s", chosen, time.perf_counter() - start)
    return module
