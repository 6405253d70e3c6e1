"""Fast inference (``optimize_for_inference``) and the tools to check its accuracy.

See docs/performance.md for measured speed-ups, and benchmarks/ for the scripts that measure them.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from ..core.agreement import agreement_stats
from .accuracy import compare_models
from .model import FastPSPNet
from .optimize import optimize_for_inference
from .precision import native_dtype_support, native_int8_support

__all__ = [
    "FastPSPNet",
    "agreement_stats",
    "compare_models",
    "native_dtype_support",
    "native_int8_support",
    "optimize_for_inference",
]

# 0.1 exported its test tooling and the sub-grid internals here; they moved out of the public API
# (issue 11). Old imports keep working for one release, with a DeprecationWarning.
_MOVED = {
    "randomize_batchnorm_": "pspnet_lib._testing",
    "smooth_image": "pspnet_lib._testing",
    "from_subgrids": "pspnet_lib.runtime.space_to_batch",
    "to_subgrids": "pspnet_lib.runtime.space_to_batch",
    "space_to_batch_conv2d": "pspnet_lib.runtime.space_to_batch",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"pspnet_lib.runtime.{name} is not public API any more (test tooling / internals); "
            f"import it from {_MOVED[name]} if you must (it may change without notice)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
