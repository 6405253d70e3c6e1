"""Inference-only ResNet stem, blocks and stages built from a trained backbone's modules."""

from __future__ import annotations

import hashlib
import logging
from typing import cast

import torch
import torch.nn as nn

from ..models.resnet import BasicBlock, Bottleneck, ResNet
from .conv import FusedConv
from .space_to_batch import from_subgrids, to_subgrids, zero_subgrid_padding
from .timing import time_candidates
from .tuning import device_fingerprint, shape_key, tuning_cache

__all__ = ["FastStem", "FastBottleneck", "FastBasicBlock", "FastStage"]

logger = logging.getLogger(__name__)

# A split layout must save at least this fraction of a segment's time to be chosen, so that
# timing noise does not flip decisions between equally fast options.
_MIN_GAIN = 0.05
# Distinct input shapes calibrated per stage; further shapes reuse the closest calibrated one.
_MAX_CALIBRATED_SHAPES = 8


class FastStem(nn.Module):
    """The backbone stem (deep 3x(3x3) or standard 7x7) with folded norms, then the max-pool."""

    def __init__(self, backbone: ResNet, **kw) -> None:
        super().__init__()
        if backbone.stem_type == "standard":
            units = [FusedConv(backbone.conv1, backbone.bn1, relu=True, **kw)]
        else:
            mods = list(backbone.stem)
            convs = [m for m in mods[::3] if isinstance(m, nn.Conv2d)]
            if len(mods) % 3 or len(convs) != len(mods) // 3:
                raise ValueError("unexpected deep-stem layout: expected repeated (Conv2d, norm, ReLU)")
            units = [FusedConv(conv, mods[3 * j + 1], relu=True, **kw) for j, conv in enumerate(convs)]
        self.units = nn.ModuleList(units)
        pool = backbone.maxpool
        self.pool = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return self.pool(x)


class FastBottleneck(nn.Module):
    """1x1 -> 3x3 (dilated) -> 1x1 with the residual addition and last ReLU fused into conv3."""

    def __init__(self, block: Bottleneck, **kw) -> None:
        super().__init__()
        self.conv1 = FusedConv(block.conv1, block.bn1, relu=True, **kw)
        self.conv2 = FusedConv(block.conv2, block.bn2, relu=True, **kw)
        self.conv3 = FusedConv(block.conv3, block.bn3, relu=True, **kw)
        self.downsample = _downsample(block.downsample, **kw)
        self.dilation = self.conv2.dilation
        # Split layouts need per-pixel norms (folded); a GroupNorm would see each sub-grid alone.
        self.splittable = (
            self.conv2.stride == 1
            and self.conv2.padding == self.dilation * (self.conv2.kernel_size // 2)
            and all(
                c.leftover_norm is None for c in (self.conv1, self.conv2, self.conv3, self.downsample) if c is not None
            )
        )

    def forward(self, x: torch.Tensor, factor: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``factor`` > 1: ``x`` is split ``factor``-ways from a map of ``size`` (stage layout)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(x)
        if factor != 1:
            assert size is not None, "a split layout comes with the size of the map it was split from"
            zero_subgrid_padding(out, factor, *size)
        out = self.conv2(out, subgrid_factor=factor)
        return self.conv3(out, residual=identity)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _conv_output_shape(self.conv3, _conv_output_shape(self.conv2, _conv_output_shape(self.conv1, shape)))


class FastBasicBlock(nn.Module):
    """3x3 (dilated) -> 3x3 with the residual addition and last ReLU fused into conv2.

    Only conv1 is dilated, so a split layout is entered and left around conv1 alone.
    """

    def __init__(self, block: BasicBlock, **kw) -> None:
        super().__init__()
        self.conv1 = FusedConv(block.conv1, block.bn1, relu=True, **kw)
        self.conv2 = FusedConv(block.conv2, block.bn2, relu=True, **kw)
        self.downsample = _downsample(block.downsample, **kw)
        self.dilation = self.conv1.dilation
        self.splittable = (
            self.conv1.stride == 1
            and self.conv1.padding == self.dilation * (self.conv1.kernel_size // 2)
            and self.conv1.leftover_norm is None
        )

    def forward(self, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if factor != 1:
            h, w = x.shape[-2:]
            out = from_subgrids(self.conv1(to_subgrids(x, factor), subgrid_factor=factor), factor, h, w)
        else:
            out = self.conv1(x)
        return self.conv2(out, residual=identity)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _conv_output_shape(self.conv2, _conv_output_shape(self.conv1, shape))


def _conv_output_shape(conv: FusedConv, shape: tuple[int, ...]) -> tuple[int, ...]:
    n, _, h, w = shape
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return (n, conv.out_channels, (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1)


def _downsample(module: nn.Module | None, **kw) -> FusedConv | None:
    if module is None:
        return None
    mods = list(module) if isinstance(module, nn.Sequential) else [module]
    if not mods or not isinstance(mods[0], nn.Conv2d) or len(mods) > 2:
        raise ValueError(f"unexpected downsample layout {module}; expected Sequential(Conv2d, norm)")
    return FusedConv(mods[0], mods[1] if len(mods) == 2 else None, relu=False, **kw)


class FastStage(nn.Module):
    """A ResNet stage whose dilated blocks may run on space-to-batch sub-grids.

    Args:
        stage: the source ``nn.Sequential`` of blocks.
        space_to_batch: ``True`` (split every splittable dilated block), ``False`` (never), or
            ``"auto"``: on the first input of each shape, time the dilated convolution directly
            and on sub-grids (including the cost of splitting and merging) and keep the faster.
        **kw: passed to every :class:`FusedConv` (``dtype``, ``backend``, ``channels_last``,
            ``winograd``, ``tuning``: the :class:`~pspnet_lib.runtime.tuning.TuningCache` that also
            holds this stage's ``"auto"`` decisions).
    """

    def __init__(self, stage: nn.Sequential, space_to_batch: bool | str, **kw) -> None:
        super().__init__()
        self.tuning = kw.get("tuning") or tuning_cache(False)
        blocks: list[FastBottleneck | FastBasicBlock] = []
        for block in stage:
            if isinstance(block, Bottleneck):
                blocks.append(FastBottleneck(block, **kw))
            elif isinstance(block, BasicBlock):
                blocks.append(FastBasicBlock(block, **kw))
            else:
                raise ValueError(
                    f"optimize_for_inference supports BasicBlock/Bottleneck stages, got {type(block).__name__}"
                )
        self.blocks = nn.ModuleList(blocks)
        self.space_to_batch = space_to_batch
        # Runs of consecutive Bottlenecks sharing a dilation share one split layout.
        self.segments: list[list[int]] = []
        for i, block in enumerate(blocks):
            same = (
                self.segments
                and isinstance(block, FastBottleneck)
                and isinstance(blocks[self.segments[-1][-1]], FastBottleneck)
                and block.splittable
                and blocks[self.segments[-1][-1]].splittable
                and block.dilation == blocks[self.segments[-1][-1]].dilation
            )
            if same:
                self.segments[-1].append(i)
            else:
                self.segments.append([i])
        self.plans: dict[tuple, tuple[int, ...]] = {}
        # Identifies the stage's structure (channels, dilations, dtype, back end, Winograd mode) in
        # the tuning cache: identical stages of any model share their decisions.
        self._signature = hashlib.sha1(repr(self.blocks).encode()).hexdigest()[:16]

    def _valid_plan(self, plan: object) -> bool:
        return (
            isinstance(plan, (list, tuple))
            and len(plan) == len(self.blocks)
            and all(
                type(f) is int and (f == 1 or (self._candidate(i) and f == self._block(i).dilation))
                for i, f in enumerate(plan)
            )
        )

    def _block(self, i: int) -> FastBottleneck | FastBasicBlock:
        return cast("FastBottleneck | FastBasicBlock", self.blocks[i])  # nn.ModuleList is not generic

    def _candidate(self, i: int) -> bool:
        block = self._block(i)
        return block.splittable and block.dilation > 1

    @torch.compiler.disable  # calibration times eager kernels and fills a cache
    def plan_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """Per-block split factor (1 = direct) for inputs shaped like ``x``."""
        if self.space_to_batch is False or not any(self._candidate(i) for i in range(len(self.blocks))):
            return (1,) * len(self.blocks)
        if self.space_to_batch is True:
            return tuple(self._block(i).dilation if self._candidate(i) else 1 for i in range(len(self.blocks)))
        key = (tuple(x.shape), x.dtype, x.device)
        plan = self.plans.get(key)
        if plan is not None:
            return plan
        section = f"{device_fingerprint(x.device)}|space_to_batch|{self._signature}|{x.dtype}"
        # Plans read from a file are used only if they are plans this stage could have made.
        plan = self.tuning.lookup(section, x.shape, self._valid_plan, _MAX_CALIBRATED_SHAPES)
        if plan is None:
            plan = self._calibrate(x)
            self.tuning.put(section, shape_key(x.shape), list(plan))
        plan = tuple(plan)
        self.plans[key] = plan
        return plan

    @torch.no_grad()
    def _calibrate(self, x: torch.Tensor) -> tuple[int, ...]:
        """Time the direct and split forms of each dilated segment on tensors shaped like its input."""
        plan = [1] * len(self.blocks)
        inputs = []
        shape = tuple(x.shape)
        for i in range(len(self.blocks)):
            inputs.append(shape)
            shape = self._block(i).output_shape(shape)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

        def rand(shape):
            return torch.randn(shape, device=x.device).to(x.dtype).contiguous(memory_format=fmt)

        for seg in self.segments:
            if not self._candidate(seg[0]):
                continue
            first = self._block(seg[0])
            d = first.dilation
            n, _, h, w = inputs[seg[0]]
            if isinstance(first, FastBottleneck):
                conv = first.conv2
                mid = rand((n, first.conv1.out_channels, h, w))
                mid_split = to_subgrids(mid, d)
                seg_in = rand(inputs[seg[0]])
                t_direct, t_split, t_layout = time_candidates(
                    [
                        lambda: conv(mid),
                        lambda: conv(zero_subgrid_padding(mid_split, d, h, w), subgrid_factor=d),
                        lambda: from_subgrids(to_subgrids(seg_in, d), d, h, w),
                    ],
                    device=x.device,
                )
                gain = len(seg) * (t_direct - t_split) - t_layout
                total = len(seg) * t_direct
            else:  # BasicBlock: split and merge around conv1 of every block
                conv = first.conv1
                block_in = rand(inputs[seg[0]])
                t_direct, t_split = time_candidates(
                    [
                        lambda: conv(block_in),
                        lambda: from_subgrids(conv(to_subgrids(block_in, d), subgrid_factor=d), d, h, w),
                    ],
                    device=x.device,
                )
                gain, total = t_direct - t_split, t_direct
            chosen = d if gain > _MIN_GAIN * total else 1
            logger.debug(
                "space-to-batch calibration: blocks %s, dilation %d, input %s: direct %.2f ms, split %.2f ms -> %s",
                seg,
                d,
                tuple(inputs[seg[0]]),
                1e3 * t_direct,
                1e3 * (t_direct - gain / len(seg)),
                "split" if chosen > 1 else "direct",
            )
            for i in seg:
                plan[i] = chosen
        return tuple(plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan_for(x)
        factor, size = 1, None
        for block, f in zip(self.blocks, plan):
            if isinstance(block, FastBasicBlock):
                if factor != 1:
                    x, factor = _merge(x, factor, size), 1
                x = block(x, f)
                continue
            if f != factor:
                if factor != 1:
                    x = _merge(x, factor, size)
                if f != 1:
                    size = (x.shape[2], x.shape[3])
                    x = to_subgrids(x, f)
                factor = f
            x = block(x, factor, size)
        if factor != 1:
            x = _merge(x, factor, size)
        return x


def _merge(x: torch.Tensor, factor: int, size: tuple[int, int] | None) -> torch.Tensor:
    """Undo a ``factor``-way split layout of a map of ``size`` (recorded when it was split)."""
    assert size is not None, "a split layout is always recorded with the size of its map"
    return from_subgrids(x, factor, *size)
