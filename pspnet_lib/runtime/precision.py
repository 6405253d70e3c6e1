"""Which reduced-precision dtypes a device runs natively, and the fallback when it does not."""

from __future__ import annotations

import logging
import warnings

import torch

__all__ = ["SUPPORTED_DTYPES", "native_dtype_support", "native_int8_support", "resolve_dtype"]

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _cpu_has(name: str) -> bool:
    # torch.cpu._is_*_supported are private but stable since 2.3; a missing one means "unknown = no".
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # pragma: no cover - defensive: a probe failing must not break inference
        return False


def native_dtype_support(dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` computes convolutions in ``dtype`` in hardware, and a one-line reason.

    On CPU, bfloat16 needs AVX-512-BF16 or AMX (oneDNN emulates it on plain AVX-512, slower than
    float32) and float16 needs AMX-FP16/AVX-512-FP16 (as reported by oneDNN). On CUDA, bfloat16
    needs compute capability 8.0+ and float16 always works.
    """
    device = torch.device(device)
    if dtype == torch.float32:
        return True, "float32 is always supported"
    if dtype not in SUPPORTED_DTYPES:
        return False, f"unsupported dtype {dtype}"
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, "this GPU has no native bfloat16 (needs compute capability 8.0+)"
        return True, f"CUDA {dtype}"
    if device.type != "cpu":
        return True, f"{device.type} {dtype} (not checked)"
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (mkldnn), which runs reduced-precision CPU convolutions"
    if dtype == torch.bfloat16:
        if _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported"):
            return True, "CPU has AVX-512-BF16/AMX"
        return False, "this CPU has neither AVX-512-BF16 nor AMX, so bfloat16 convolutions are emulated (slow)"
    fp16_ok = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)
    if fp16_ok is not None and fp16_ok():
        return True, "CPU has native float16 (AVX-512-FP16/AMX-FP16)"
    return False, "this CPU has no native float16 convolutions (needs AVX-512-FP16 or AMX-FP16)"


def native_int8_support(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` has int8 dot-product units for quantized convolutions, and a one-line reason.

    INT8 inference pays off on CPUs with VNNI (AVX-512-VNNI or AVX-VNNI: 4 int8 products per
    32-bit lane and instruction) or AMX-INT8; without them int8 convolutions are emulated with
    16-bit multiplies and are no faster than bfloat16/float32. Only CPUs are considered: the int8
    back ends behind ``optimize_for_inference(dtype="int8")`` are CPU runtimes.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return False, f"the int8 back ends (OpenVINO, ONNX Runtime) run on the CPU, not on {device.type}"
    if _cpu_has("_is_amx_tile_supported"):
        return True, "CPU has AMX"
    if _cpu_has("_is_vnni_supported"):
        return True, "CPU has VNNI int8 dot products"
    return False, "this CPU has neither VNNI nor AMX int8 instructions, so int8 convolutions would be slow"


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str) -> torch.dtype:
    """``dtype`` if ``device`` supports it natively, else float32 with a warning saying why."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of torch.float32, torch.bfloat16, torch.float16, got {dtype!r}")
    ok, reason = native_dtype_support(dtype, device)
    if ok:
        return dtype
    hint = (
        " Use dtype=torch.bfloat16 on this CPU."
        if dtype == torch.float16 and native_dtype_support(torch.bfloat16, device)[0]
        else ""
    )
    warnings.warn(
        f"optimize_for_inference: {dtype} requested on {torch.device(device)}, but {reason}; "
        f"falling back to torch.float32.{hint}",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch.float32
