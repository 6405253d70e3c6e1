"""Fast inference (``optimize_for_inference``) and the tools to check its accuracy.

See docs/performance.md for measured speed-ups, and benchmarks/ for the scripts that measure them.
"""

from .accuracy import agreement_stats, compare_models, randomize_batchnorm_, smooth_image
from .model import FastPSPNet
from .optimize import optimize_for_inference
from .precision import native_dtype_support, native_int8_support
from .space_to_batch import from_subgrids, space_to_batch_conv2d, to_subgrids

__all__ = [
    "FastPSPNet",
    "agreement_stats",
    "compare_models",
    "from_subgrids",
    "native_dtype_support",
    "native_int8_support",
    "optimize_for_inference",
    "randomize_batchnorm_",
    "smooth_image",
    "space_to_batch_conv2d",
    "to_subgrids",
]
