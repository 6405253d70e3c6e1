"""``optimize_for_inference(model, dtype="int8", calibration=...)``: a calibrated INT8 model behind the fast path's call.

The int8 model is the static-quantized QDQ ONNX graph of :mod:`pspnet_lib.inference.quantize`
(per-channel int8 weights, uint8 activations calibrated on the given images, the classifier in
float), run by OpenVINO (``backend="openvino"``) or ONNX Runtime (``backend="onnxruntime"``).
``backend="auto"`` builds every installed one and times them against the bfloat16 fast path on a
calibration image (:func:`choose_fastest`, about 3 s): on a CPU without AMX the bf16 fast path can
be the fastest, and then it is what the call returns.

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
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.constants import input_channels
from ..models.pspnet import PSPNet
from .model import check_input
from .precision import native_int8_support

__all__ = ["INT8_BACKENDS", "Int8PSPNet", "build_int8", "choose_fastest", "int8_backend_available", "select_int8"]

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

    def __init__(self, model: PSPNet, onnx_path: str | Path, backend: str, threads: int, quantization: dict) -> None:
        super().__init__()
        from ..inference.int8_check import load_onnx_runner

        self.config = copy.deepcopy(model.config)
        self.pretrained_cfg: dict[str, Any] = copy.deepcopy(getattr(model, "pretrained_cfg", {}))
        self.backend = backend
        self.dtype = "int8"
        self.threads = threads
        self.quantization = quantization
        #: Set by ``optimize_for_inference``: the candidate returned and, for ``backend="auto"``,
        #: the median seconds per call of every candidate timed (:func:`choose_fastest`).
        self.choice: str = f"{backend}-int8"
        self.timings: dict[str, float] | None = None
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
        check_input(x, self.config.in_channels)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self._run(array))

    def predict(self, images: Any, **kwargs: Any) -> Any:
        """Segment images given as paths, PIL images, arrays or tensors; see :func:`pspnet_lib.predict`."""
        from ..inference.predict import predict

        return predict(self, images, **kwargs)

    def extra_repr(self) -> str:
        return f"backend={self.backend}, classes={self.num_classes}, calibration_images={self.quantization.get('calibration_images')}"


def _int8_backends(backend: str) -> tuple[list[str], str]:
    """The int8 back ends to build for ``backend`` (``"auto"``: every one installed) and, if none, why."""
    if backend != "auto":
        ok, reason = int8_backend_available(backend)
        return ([backend] if ok else []), reason
    found = [name for name in ("openvino", "onnxruntime") if int8_backend_available(name)[0]]
    return found, "" if found else int8_backend_available("onnxruntime")[1]


def build_int8(model: PSPNet, calibration: Any, backend: str = "auto") -> dict[str, Int8PSPNet] | None:
    """The INT8 module(s), one per back end, or None (after a ``RuntimeWarning`` saying why) when none can be built.

    ``calibration``: normalised float images (a batch tensor, a list of tensors or a DataLoader),
    see :func:`pspnet_lib.inference.quantize.quantize_onnx`. ``backend``: ``"openvino"`` or
    ``"onnxruntime"`` (one module), or ``"auto"`` (a module for each one installed: the caller,
    :func:`~pspnet_lib.runtime.optimize_for_inference`, times them against the bf16 fast path and
    keeps the fastest, :func:`choose_fastest`). Both run the same quantized file.
    """
    from ..inference.calibration import as_batches
    from ..inference.export import export_onnx
    from ..inference.quantize import quantize_onnx

    if backend not in INT8_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(INT8_BACKENDS)}, got {backend!r}")
    if calibration is None:
        raise ValueError(
            "dtype='int8' needs calibration images: optimize_for_inference(model, 'int8', calibration=batch), "
            "with normalised images like those you will segment (pspnet_lib.inference.quantize.calibration_images "
            "makes them from pictures)"
        )
    batches = as_batches(calibration, input_channels(model))  # bad calibration data fails here, before any fallback
    device = next(model.parameters()).device
    ok, reason = native_int8_support(device)
    backends: list[str] = []
    if ok:
        backends, reason = _int8_backends(backend)
    if not backends:
        warnings.warn(
            f"optimize_for_inference: int8 requested but {reason}; falling back to the bfloat16 fast path",
            RuntimeWarning,
            stacklevel=4,  # the caller of optimize_for_inference
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
        modules = {name: Int8PSPNet(model, int8, name, torch.get_num_threads(), quantization) for name in backends}
    logger.info(
        "optimize_for_inference: int8 model for %s built in %.1f s", ", ".join(backends), time.perf_counter() - start
    )
    return modules


def choose_fastest(
    candidates: Mapping[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    *,
    budget_s: float = 3.0,
    max_rounds: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[str, dict[str, float]]:
    """Time ``candidates`` on ``x`` interleaved, round by round; return the fastest name and the median seconds.

    Each candidate is called once untimed (first calls compile, pre-pack and tune), then rounds
    that call every candidate once run until ``budget_s`` seconds of timed calls have passed or
    ``max_rounds`` rounds are done (at least one). Interleaving makes a change in machine load hit
    every candidate alike; the medians ignore a disturbed round. A candidate that raises in its
    first call is left out (logged). ``clock`` is injectable for tests.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    working: dict[str, Callable[[torch.Tensor], Any]] = {}
    with torch.inference_mode():
        for name, fn in candidates.items():
            try:
                fn(x)
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this input is simply not chosen
                logger.warning(
                    "optimize_for_inference: %s failed on a %s input (%s); not considered", name, tuple(x.shape), exc
                )
                continue
            working[name] = fn
        if not working:
            raise RuntimeError(f"every candidate failed on a {tuple(x.shape)} input: {', '.join(candidates)}")
        times: dict[str, list[float]] = {name: [] for name in working}
        spent, rounds = 0.0, 0
        while rounds < max_rounds and (rounds == 0 or spent < budget_s):
            for name, fn in working.items():
                start = clock()
                fn(x)
                elapsed = clock() - start
                times[name].append(elapsed)
                spent += elapsed
            rounds += 1
    medians = {name: statistics.median(values) for name, values in times.items()}
    return min(medians, key=medians.__getitem__), medians


def select_int8(
    model: PSPNet,
    calibration: Any,
    backend: str = "auto",
    fast_bf16: Callable[[], nn.Module] | None = None,
    *,
    budget_s: float = 3.0,
) -> nn.Module | None:
    """What ``optimize_for_inference(model, "int8", calibration=..., backend=...)`` returns, or None to fall back.

    An explicit ``backend`` returns its :class:`Int8PSPNet`. ``"auto"`` builds one per installed
    back end plus ``fast_bf16()`` (the bfloat16 fast path, when the caller passes it: the CPU runs
    bf16 natively), times them on the first calibration image (:func:`choose_fastest`,
    ``budget_s``) and returns the fastest; the winner's ``choice`` names it (``"openvino-int8"``,
    ``"onnxruntime-int8"`` or ``"fast-bf16"``) and ``timings`` holds every candidate's median
    seconds. None (after a ``RuntimeWarning``) when no int8 back end can run here.
    """
    from ..inference.calibration import as_batches

    if backend not in INT8_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(INT8_BACKENDS)}, got {backend!r}")
    if calibration is None:
        build_int8(model, calibration, backend)  # raises the "needs calibration images" error
    # read once: a one-shot iterable serves both the build and the timing
    batches = as_batches(calibration, input_channels(model))
    built = build_int8(model, batches, backend)
    if built is None:
        return None
    if backend != "auto":
        return built[backend]
    candidates: dict[str, nn.Module] = {f"{name}-int8": module for name, module in built.items()}
    if fast_bf16 is not None:
        candidates["fast-bf16"] = fast_bf16()
    example = batches[0][:1]
    choice, timings = choose_fastest(candidates, example, budget_s=budget_s)
    winner = candidates[choice]
    # Every candidate (Int8PSPNet, FastPSPNet) reports what was chosen; nn.Module's typing hides them.
    setattr(winner, "choice", choice)
    setattr(winner, "timings", timings)
    logger.info(
        "optimize_for_inference(int8, backend='auto'): chose %s; median ms per call at %dx%d: %s",
        choice,
        example.shape[-2],
        example.shape[-1],
        ", ".join(f"{name} {1e3 * t:.1f}" for name, t in timings.items()),
    )
    return winner
