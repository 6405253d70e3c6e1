"""Small building blocks shared by the model files."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.utils.checkpoint

NormLayer = Callable[[int], nn.Module]

NORM_TYPES = ("batch", "syncbatch", "group", "frozenbatch")


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics.

    Unlike ``torchvision.ops.FrozenBatchNorm2d`` it keeps BatchNorm2d's state-dict keys
    (including ``num_batches_tracked``) so checkpoints load unchanged, and it stays in
    eval mode whatever ``model.train()`` says. Its affine parameters can still be
    trained; set ``requires_grad_(False)`` to freeze them too.
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def make_norm_layer(norm: str, groups: int = 32) -> NormLayer:
    """Return a factory ``channels -> nn.Module`` for the named normalisation.

    Args:
        norm: one of ``"batch"`` (BatchNorm2d), ``"syncbatch"`` (SyncBatchNorm, for
            multi-process training), ``"group"`` (GroupNorm, batch-size independent) or
            ``"frozenbatch"`` (BatchNorm2d fixed to its running statistics).
        groups: number of groups for GroupNorm; reduced to the largest divisor of the
            channel count when a layer has fewer channels.
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "syncbatch":
        return nn.SyncBatchNorm
    if norm == "frozenbatch":
        return FrozenBatchNorm2d
    if norm == "group":

        def group_norm(channels: int) -> nn.Module:
            g = min(groups, channels)
            while channels % g:
                g -= 1
            return nn.GroupNorm(g, channels)

        return group_norm
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORM_TYPES)}")


class ConvNormAct(nn.Module):
    """Conv2d (no bias) -> norm -> ReLU, with the key names ``conv`` and ``norm``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm_layer: NormLayer,
        padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


def _norms_with_running_stats(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]


class _FreezeRunningStats:
    """Keeps BatchNorm running statistics unchanged while a checkpointed block recomputes.

    Without it the recomputation in the backward pass would apply the momentum update a
    second time, and a checkpointed model would drift from a plain one.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[nn.modules.batchnorm._BatchNorm, float | None, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        for m in _norms_with_running_stats(self.module):
            tracked = m.num_batches_tracked
            self.saved.append((m, m.momentum, tracked.clone() if tracked is not None else None))
            m.momentum = 0.0

    def __exit__(self, *exc) -> None:
        for m, momentum, tracked in self.saved:
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        self.saved.clear()


def checkpoint_module(
    module: nn.Module, *args: torch.Tensor, fn: Callable[..., torch.Tensor] | None = None
) -> torch.Tensor:
    """Run ``fn(*args)`` (default ``module(*args)``) under activation checkpointing.

    BatchNorm running statistics inside ``module`` are updated once, as without checkpointing.
    """
    return torch.utils.checkpoint.checkpoint(
        fn if fn is not None else module,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _FreezeRunningStats(module)),
    )


def _freeze_stats_if_recomputing(norm: nn.modules.batchnorm._BatchNorm, args: object) -> None:
    if norm.training and norm.track_running_stats and torch._C._current_graph_task_id() != -1:
        tracked = norm.num_batches_tracked
        norm.__dict__["_recompute_saved"] = (norm.momentum, tracked.clone() if tracked is not None else None)
        norm.momentum = 0.0


def _restore_stats_after_recompute(norm: nn.modules.batchnorm._BatchNorm, args: object, output: object) -> None:
    saved = norm.__dict__.pop("_recompute_saved", None)
    if saved is not None:
        norm.momentum = saved[0]
        if saved[1] is not None and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.copy_(saved[1])


def guard_running_stats_in_recompute(module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Keep BatchNorm running statistics from being updated again when checkpointing recomputes.

    For modules checkpointed by code that is not ours (timm's ``set_grad_checkpointing``), where
    :func:`checkpoint_module`'s context cannot be passed: every BatchNorm inside ``module`` gets
    hooks that, when it runs inside a backward pass (a recomputation: autograd's current graph
    task is set), set its momentum to 0 for that call and restore momentum and
    ``num_batches_tracked`` afterwards. Needs the recomputation to run whole blocks (no early
    stop: ``torch.utils.checkpoint.set_checkpoint_early_stop(False)`` around the forward pass).
    Module-level hook functions keep the model picklable. Returns the hooks' handles (``.remove()``).
    """
    handles = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(_freeze_stats_if_recomputing))
            handles.append(m.register_forward_hook(_restore_stats_after_recompute))
    return handles


def is_capturing_graph() -> bool:
    """torch.compile / torch.export (and torch.onnx.export(dynamo=True), built on it) or
    torch.jit.trace (and the TorchScript-based ONNX exporter, built on it) is recording the call."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def is_symbolic_tracing() -> bool:
    """Whether ``torch.fx.symbolic_trace`` is running: shapes are then proxies, so eager-only
    input checks are skipped (``torch.export`` and ``torch.compile`` still run them)."""
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing

    return is_fx_symbolic_tracing()
