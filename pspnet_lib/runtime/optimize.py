"""``optimize_for_inference``: one call from a trained PSPNet to the fastest exact inference module."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, cast

import torch
import torch.nn as nn

from ..models.pspnet import PSPNet
from .conv import mkldnn_fusion_available
from .model import FastPSPNet
from .precision import native_dtype_support, resolve_dtype
from .tuning import tuning_cache as get_tuning_cache

__all__ = ["optimize_for_inference"]

logger = logging.getLogger(__name__)


def _is_int8(dtype: Any) -> bool:
    return dtype == "int8" or dtype is torch.int8


def optimize_for_inference(
    model: PSPNet,
    dtype: torch.dtype | str = torch.float32,
    *,
    calibration: Any = None,
    backend: str = "auto",
    channels_last: bool = True,
    space_to_batch: bool | str = "auto",
    winograd: bool | int | str = "auto",
    compile: bool = False,
    tuning_cache: bool | str | os.PathLike = True,
) -> nn.Module:
    """Return a new, inference-only module computing ``model(x)`` faster.

    The original model is not modified. What changes:

    * every BatchNorm is folded into the preceding convolution (other norms are kept);
    * weights are stored once in ``dtype`` and channels-last (no casts per call); on CPU they are
      pre-packed for oneDNN and bias/residual/ReLU run inside the convolution kernels;
    * the pyramid pooling module is never concatenated or upsampled at full resolution: the
      bottleneck's pyramid part is computed exactly from the pooled maps (see
      :mod:`pspnet_lib.runtime.head`); dropout and the auxiliary head are dropped;
    * dilated 3x3 convolutions may run as undilated ones on space-to-batch sub-grids;
    * 3x3 convolutions may run as Winograd F(2x2, 3x3) or F(4x4, 3x3) (2.25x or 4x fewer
      multiplications).

    Args:
        model: a :class:`~pspnet_lib.models.PSPNet` in eval mode (``model.eval()``).
        dtype: ``torch.float32`` (matches ``model`` to ~1e-6 relative), ``torch.bfloat16`` (CPUs with
            AVX-512-BF16/AMX, CUDA GPUs with compute capability 8.0+) or ``torch.float16`` (CUDA, CPUs
            with AMX-FP16). A dtype the device cannot run natively falls back to float32 with a warning.
            ``"int8"`` (or ``torch.int8``): a calibrated, static-quantized INT8 model run by
            OpenVINO or ONNX Runtime (:class:`~pspnet_lib.runtime.int8.Int8PSPNet`; needs
            ``calibration``), or the bfloat16 fast path when ``backend="auto"`` measures it faster;
            where no int8 back end is installed or the CPU lacks int8 dot-product instructions
            (VNNI/AMX) it falls back to the bfloat16 fast path with a ``RuntimeWarning``.
        calibration: ``dtype="int8"`` only: normalised images like those you will segment: a batch
            tensor ``(N, 3, H, W)``, a list of ``(3, H, W)`` / ``(N, 3, H, W)`` tensors or a DataLoader
            yielding them (or ``(images, labels)``). 8-32 pictures suffice;
            :func:`pspnet_lib.inference.quantize.calibration_images` makes them from picture files.
        backend: ``dtype="int8"`` only: ``"openvino"`` or ``"onnxruntime"`` (that runtime), or
            ``"auto"``: every installed int8 runtime and the bfloat16 fast path (where the CPU runs
            bf16 natively) are built and timed on the first calibration image, interleaved for
            about 3 s, and the fastest is returned (its ``choice`` names it, ``timings`` holds the
            median seconds of each; the choice is logged). So ``"auto"`` may return the bf16
            :class:`~pspnet_lib.runtime.FastPSPNet`, e.g. on CPUs without AMX (docs/performance.md).
        channels_last: run activations in channels-last memory format (faster on CPU and on
            tensor-core GPUs).
        space_to_batch: ``"auto"`` (time both forms of each dilated segment on the first input of
            each shape and keep the faster; the first call per shape is slower), ``True`` or ``False``.
        winograd: ``"auto"`` (time direct, Winograd F(2x2, 3x3) and F(4x4, 3x3) for each 3x3
            convolution on the first input of each shape and keep the fastest; decisions are shared
            by layers of the same shape), ``4`` or ``True`` (F(4x4, 3x3) wherever it applies: 4x
            fewer multiplications), ``2`` (F(2x2, 3x3): 2.25x fewer, closer to direct arithmetic),
            or ``False`` (direct convolutions only: the closest to ``model``'s own arithmetic).
        tuning_cache: where the ``"auto"`` decisions are remembered across processes, so that only
            the first process per machine and input shape pays for calibration: ``True`` (the
            default file, ``<torch hub dir>/pspnet_lib/tuning.json``, or ``$PSPNET_TUNING_CACHE``),
            a file path, or ``False`` (this process only). See :mod:`pspnet_lib.runtime.tuning`.
        compile: wrap the module in ``torch.compile`` (needs a working compiler toolchain; the first
            call per shape compiles). Only worth it where benchmarks/inference.py shows a gain.

    Returns:
        A module (:class:`~pspnet_lib.runtime.FastPSPNet`, or ``Int8PSPNet`` for int8) whose
        ``forward(x)`` returns float32 logits ``(N, num_classes, H, W)``; it also has ``config``,
        ``pretrained_cfg``, ``num_classes`` and ``predict`` like the source model. For
        ``dtype="int8"`` it also has ``choice`` (what was returned) and ``timings`` (``"auto"``:
        the median seconds per call of every candidate; an explicit backend: None).

    Example::

        model = build_pspnet("resnet50", num_classes=150).eval()
        fast = optimize_for_inference(model, torch.bfloat16)
        logits = fast(images)  # (N, 150, H, W) float32
    """
    if not isinstance(model, PSPNet):
        raise TypeError(
            f"optimize_for_inference expects a pspnet_lib PSPNet, got {type(model).__name__}; "
            "build one with pspnet_lib.build_pspnet or load one with pspnet_lib's hub functions"
        )
    if model.training:
        raise ValueError(
            "optimize_for_inference needs a model in eval mode: BatchNorm is folded using its running "
            "statistics and dropout is removed, which only matches eval-mode behaviour. Call model.eval() first."
        )
    # Identity checks for the booleans: `1 in (True, ...)` would pass.
    if not (space_to_batch is True or space_to_batch is False or space_to_batch == "auto"):
        raise ValueError(f"space_to_batch must be True, False or 'auto', got {space_to_batch!r}")
    if not (
        winograd is True or winograd is False or winograd == "auto" or (type(winograd) is int and winograd in (2, 4))
    ):
        raise ValueError(f"winograd must be True, False, 2, 4 or 'auto', got {winograd!r}")
    if not isinstance(tuning_cache, (bool, str, os.PathLike)):
        raise TypeError(
            f"tuning_cache must be True (the default file), False (memory only) or a file path, got {tuning_cache!r}"
        )
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters")
    device = params[0].device
    fast_path = functools.partial(
        _fast_path,
        model,
        device=device,
        channels_last=channels_last,
        space_to_batch=space_to_batch,
        winograd=winograd,
        compile=compile,
        tuning_cache=tuning_cache,
    )
    if _is_int8(dtype):
        from .int8 import select_int8

        bf16_native = native_dtype_support(torch.bfloat16, device)[0]
        chosen = select_int8(
            model,
            calibration,
            backend,
            (lambda: fast_path(torch.bfloat16)) if bf16_native else None,
        )
        if chosen is not None:
            return chosen
        # select_int8 warned; resolve_dtype may fall further to float32 (and warns)
        dtype = resolve_dtype(torch.bfloat16, device)
        fast = fast_path(dtype)
        # setattr: mypy types nn.Module attributes as Tensor | Module.
        setattr(fast, "choice", f"fallback-{str(dtype).removeprefix('torch.')}")  # noqa: B010
        setattr(fast, "timings", None)  # noqa: B010
        return fast
    if calibration is not None or backend != "auto":
        raise ValueError("calibration and backend apply to dtype='int8' only")
    return fast_path(resolve_dtype(dtype, device))


def _fast_path(
    model: PSPNet,
    dtype: torch.dtype,
    device: torch.device,
    *,
    channels_last: bool,
    space_to_batch: bool | str,
    winograd: bool | int | str,
    compile: bool,
    tuning_cache: bool | str | os.PathLike,
) -> nn.Module:
    conv_backend = "aten"
    if device.type == "cpu" and channels_last and not compile and mkldnn_fusion_available(dtype):
        conv_backend = "mkldnn"
    fast = FastPSPNet(
        model,
        dtype=dtype,
        backend=conv_backend,
        channels_last=channels_last,
        space_to_batch=space_to_batch,
        winograd=winograd,
        tuning=get_tuning_cache(tuning_cache),
    )
    logger.info(
        "optimize_for_inference: %s on %s, backend %s, space_to_batch=%s, winograd=%s",
        dtype,
        device,
        conv_backend,
        space_to_batch,
        winograd,
    )
    if compile:
        # torch.compile of an nn.Module returns an OptimizedModule (an nn.Module); its stubs say Callable.
        return cast(nn.Module, torch.compile(fast))
    return fast
