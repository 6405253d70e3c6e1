"""Convolution + folded norm + activation (+ residual), with weights prepared once.

Two back ends compute the same thing:

* ``"mkldnn"`` (CPU): the weight is reordered once into oneDNN's blocked layout and the bias,
  residual addition and ReLU run inside the convolution (``torch.ops.mkldnn._convolution_pointwise``,
  the kernels ``torch.compile`` uses on CPU). This avoids a weight reorder on every call and two
  extra passes over every activation.
* ``"aten"`` (CUDA, ``torch.compile``, or where the fused kernels are missing): ``F.conv2d`` on
  channels-last tensors followed by in-place ``add_``/``relu_``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fold import fold_conv_norm
from .timing import time_candidates
from .tuning import TuningCache, device_fingerprint, shape_key, tuning_cache
from .winograd import winograd_conv3x3, winograd_weight

__all__ = ["FusedConv", "mkldnn_fusion_available"]

logger = logging.getLogger(__name__)

# "auto" only times Winograd for 3x3 convolutions with at least this many input channels: the
# stem's 3/32-channel convolutions make GEMMs too thin to win, and skipping them keeps the first
# call short. (Measured, bf16, 2 cores: 1.25x faster at 256 channels, 1.6x at 512 and 2048.)
WINOGRAD_MIN_CHANNELS = 64
# Input shapes calibrated per convolution; further shapes (e.g. whole-image inference on images of
# many sizes) reuse the decision of the calibrated shape with the closest pixel count.
_MAX_CALIBRATED_SHAPES = 8


def _is_tile(value: object) -> bool:
    return type(value) is int and value in (0, 2, 4)


def _mkldnn_ops_present() -> bool:
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_convolution_pointwise")
        and hasattr(ops, "_convolution_pointwise_")
        and hasattr(ops, "_reorder_convolution_weight")
    )


@functools.cache
def mkldnn_fusion_available(dtype: torch.dtype) -> bool:
    """True when oneDNN's fused convolution kernels exist and agree with ``F.conv2d`` in ``dtype``.

    They are private PyTorch operators, so their presence and results are checked once per dtype
    on a tiny problem instead of assumed.
    """
    if not _mkldnn_ops_present():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 7, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        other = torch.randn(2, 4, 7, 6, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        w = (0.2 * torch.randn(4, 8, 3, 3, generator=g)).to(dtype).contiguous(memory_format=torch.channels_last)
        b = torch.randn(4, generator=g).to(dtype)
        packed = torch.ops.mkldnn._reorder_convolution_weight(w, [2, 2], [1, 1], [2, 2], 1)
        ref = F.conv2d(x.float(), w.float(), b.float(), padding=2, dilation=2)
        y1 = torch.ops.mkldnn._convolution_pointwise(x, packed, b, [2, 2], [1, 1], [2, 2], 1, "relu", [], "")
        y2 = torch.ops.mkldnn._convolution_pointwise_.binary(
            other.clone(), x, packed, b, [2, 2], [1, 1], [2, 2], 1, "add", 1.0, "relu", [], ""
        )
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        scale = ref.abs().max().item() + 1.0
        ok = (y1.float() - ref.relu()).abs().max().item() <= tol * scale and (
            y2.float() - (ref + other.float()).relu()
        ).abs().max().item() <= tol * scale
    except Exception as exc:  # an unsupported build/CPU: fall back to aten, which always works
        logger.info("oneDNN fused convolutions unavailable for %s: %s", dtype, exc)
        return False
    if not ok:
        logger.warning("oneDNN fused convolutions disagree with F.conv2d for %s; using F.conv2d", dtype)
    return ok


class FusedConv(nn.Module):
    """``act(norm(conv(x)) [+ residual])`` with the norm folded into the weights when possible.

    Args:
        conv: the source convolution (not modified).
        norm: the norm after it (folded if it is an eval-mode BatchNorm; otherwise kept and applied
            after the convolution).
        relu: apply ReLU at the end (after the residual addition, if any).
        dtype: compute dtype of weights and activations.
        backend: ``"mkldnn"`` or ``"aten"`` (see the module docstring).
        channels_last: store the weight channels-last (the layout the activations use).
        winograd: how to run 3x3 stride-1 undilated applications (including dilated ones on
            sub-grids): ``False`` (direct), ``2`` (Winograd F(2x2, 3x3)), ``4`` or ``True``
            (F(4x4, 3x3)), or ``"auto"`` (time the three on the first input of each shape and
            keep the fastest).
        tuning: where ``"auto"`` decisions are looked up and recorded (default: in memory only).
            Timing depends on the problem, not on the weights, so one decision serves every
            convolution of the same shape, in every model and (with a file) every process.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        norm: nn.Module | None,
        *,
        relu: bool,
        dtype: torch.dtype,
        backend: str,
        channels_last: bool = True,
        winograd: bool | int | str = False,
        tuning: TuningCache | None = None,
    ) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "optimize_for_inference supports ungrouped convolutions with explicit zero padding; "
                f"got groups={conv.groups}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        weight, bias, leftover = fold_conv_norm(conv, norm)
        self.kernel_size = conv.kernel_size[0]
        self.stride = conv.stride[0]
        self.padding = conv.padding[0]
        self.dilation = conv.dilation[0]
        if (
            conv.kernel_size[0] != conv.kernel_size[1]
            or len(set(conv.stride)) != 1
            or len(set(conv.padding)) != 1
            or len(set(conv.dilation)) != 1
        ):
            raise ValueError(f"optimize_for_inference needs square kernels/strides/padding/dilation, got {conv}")
        self.relu = relu
        self.dtype = dtype
        # A norm that cannot be folded (GroupNorm, ...) runs in float32: its statistics in bfloat16
        # cost several per cent of accuracy, and such models are rare enough not to optimise.
        self.leftover_norm = leftover.float() if leftover is not None else None
        # Fused epilogues cannot run a non-foldable norm between conv and ReLU.
        self.backend = "aten" if leftover is not None else backend
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # Parameters (frozen) rather than buffers so that ``next(model.parameters())`` reports the
        # device and dtype, as code written for ordinary modules expects.
        self.weight = nn.Parameter(weight.to(dtype).contiguous(memory_format=fmt), requires_grad=False)
        self.bias = nn.Parameter(bias.to(dtype), requires_grad=False) if bias is not None else None
        self._packed: dict[tuple[int, int], torch.Tensor] = {}
        if winograd is True:
            winograd = 4
        if not (winograd is False or winograd in (2, 4, "auto")):
            raise ValueError(f"winograd must be False, True, 2, 4 or 'auto', got {winograd!r}")
        self.winograd = winograd if self.kernel_size == 3 and self.stride == 1 and leftover is None else False
        self._winograd_weights: dict[int, torch.Tensor] = {}  # per tile size, made on first use
        self._tiles_in_use: set[int] = set()
        self._tiles_by_shape: dict[tuple, int] = {}  # this layer's decisions, without a cache lookup per call
        self.tuning = tuning if tuning is not None else tuning_cache(False)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def _packed_weight(self, padding: int, dilation: int, input_size: list[int]) -> torch.Tensor:
        # Packed on first use with the real input size: without it oneDNN may pick a blocked
        # layout that its kernels for this shape then reorder again on every call (measured 2-3x
        # slower for ResNet-50's 2048<->512 1x1 convolutions). Later shapes reuse the layout.
        key = (padding, dilation)
        packed = self._packed.get(key)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, [padding] * 2, [self.stride] * 2, [dilation] * 2, 1, input_size
            )
            self._packed[key] = packed
        return packed

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None, *, subgrid_factor: int = 1
    ) -> torch.Tensor:
        """Apply the unit; ``subgrid_factor`` f > 1 means ``x`` is split f-ways (dilation / f remains).

        With ``residual`` given, the result may be written into ``residual`` in place.
        """
        dilation, padding = self.dilation, self.padding
        if subgrid_factor != 1:
            dilation //= subgrid_factor
            padding //= subgrid_factor
        if self.winograd is not False and dilation == 1 and padding == 1:
            tile = self._winograd_tile(x)
            if tile:
                return winograd_conv3x3(x, self._winograd_weight(tile), self.bias, residual, self.relu)
        return self._direct(x, residual, padding, dilation)

    def _winograd_weight(self, tile: int) -> torch.Tensor:
        u = self._winograd_weights.get(tile)
        if u is None:
            u = self._winograd_weights[tile] = winograd_weight(self.weight.detach(), self.dtype, tile=tile)
        return u

    @torch.compiler.disable  # timing and a shared cache: keep out of compiled graphs
    def _winograd_tile(self, x: torch.Tensor) -> int:
        """0 (direct), 2 or 4: how to run this convolution on inputs shaped like ``x``."""
        if self.winograd != "auto":
            return int(self.winograd)  # False, 2 or 4 (__init__ checked)
        if x.shape[1] < WINOGRAD_MIN_CHANNELS:
            return 0
        key = (tuple(x.shape), x.dtype, x.device)
        choice = self._tiles_by_shape.get(key)
        if choice is not None:
            return choice
        section = (
            f"{device_fingerprint(x.device)}|winograd_tile|{x.shape[1]}->{self.out_channels}|{x.dtype}|"
            f"{self.backend}|bias={self.bias is not None}|relu={self.relu}"
        )
        # Values read from a file are used only if they are choices this code makes.
        choice = self.tuning.lookup(section, x.shape, _is_tile, _MAX_CALIBRATED_SHAPES)
        if choice is None:
            with torch.no_grad():

                def winograd_run(tile: int) -> Callable[[], torch.Tensor]:
                    return lambda: winograd_conv3x3(x, self._winograd_weight(tile), self.bias, None, self.relu)

                candidates: list[Callable[[], object]] = [lambda: self._direct(x, None, 1, 1)]
                candidates += [winograd_run(tile) for tile in (2, 4)]
                times = time_candidates(candidates, device=x.device)
            best = min(range(3), key=times.__getitem__)
            # Winograd only when it saves at least 5%: noise must not flip equal options.
            choice = (0, 2, 4)[best] if times[best] < 0.95 * times[0] else 0
            self.tuning.put(section, shape_key(x.shape), choice)
            # Keep only transforms some shape uses (timing made both).
            self._tiles_in_use.add(choice)
            self._winograd_weights = {t: u for t, u in self._winograd_weights.items() if t in self._tiles_in_use}
            logger.debug(
                "Winograd calibration %s -> %d: direct %.2f ms, F(2x2) %.2f ms, F(4x4) %.2f ms -> %s",
                tuple(x.shape),
                self.out_channels,
                *(1e3 * t for t in times),
                f"F({choice}x{choice}, 3x3)" if choice else "direct",
            )
        self._tiles_by_shape[key] = choice
        return choice

    def _direct(self, x: torch.Tensor, residual: torch.Tensor | None, padding: int, dilation: int) -> torch.Tensor:
        if self.backend == "mkldnn":
            w = self._packed_weight(padding, dilation, list(x.shape))
            pad, stride, dil = [padding] * 2, [self.stride] * 2, [dilation] * 2
            act = "relu" if self.relu else "none"
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, pad, stride, dil, 1, act, [], "")
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                residual, x, w, self.bias, pad, stride, dil, 1, "add", 1.0, act if self.relu else None, [], ""
            )
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, dilation)
        if self.leftover_norm is not None:
            y = self.leftover_norm(y.float()).to(y.dtype)
        if residual is not None:
            y = y.add_(residual)
        return y.relu_() if self.relu else y

    def extra_repr(self) -> str:
        o, c = self.weight.shape[:2]
        return (
            f"{c}, {o}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, relu={self.relu}, dtype={self.dtype}, backend={self.backend}, "
            f"winograd={self.winograd}"
        )
