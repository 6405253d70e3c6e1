"""The generic inference path for backbones the ResNet rewrites do not know (timm encoders).

:func:`~pspnet_lib.runtime.optimize_for_inference` rebuilds a ResNet backbone block by block
(fused oneDNN convolutions, space-to-batch, Winograd: :mod:`~pspnet_lib.runtime.blocks`). Any
other backbone gets what applies to every network:

* timm's own inference re-parameterisation (``timm.utils.reparameterize_model``: RepVGG,
  MobileOne, FastViT, ... branches merged into single convolutions);
* every BatchNorm that directly follows a convolution folded into it (the pairs are read from an
  FX trace with timm's leaf modules; timm's ``BatchNormAct2d`` keeps its activation). A backbone
  that does not trace keeps its norms (logged);
* weights stored once in the compute dtype (bfloat16 / float16 where the device runs them) and
  channels-last activations.

The PSP head gets the exact cheaper pyramid head as for ResNets (:mod:`~pspnet_lib.runtime.head`).
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn

from ..models import FrozenBatchNorm2d
from .fold import can_fold_norm, fold_conv_norm

__all__ = ["GenericEncoder", "fold_batchnorms"]

logger = logging.getLogger(__name__)


class _LeafTracer(torch.fx.Tracer):
    """FX tracer keeping convolutions, norms and timm's untraceable modules as leaves."""

    def __init__(self, leaves: tuple[type, ...], functions: tuple) -> None:
        super().__init__(autowrap_functions=functions)
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _norm_replacement(norm: nn.Module) -> nn.Module | None:
    """What remains of a norm folded into its convolution: nothing, or timm's activation after it."""
    if type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d):
        return nn.Identity()
    try:
        from timm.layers import BatchNormAct2d
    except ImportError:
        return None
    if type(norm) is BatchNormAct2d:  # batch_norm -> drop -> act
        return nn.Sequential(norm.drop, norm.act)
    return None  # a BatchNorm subclass with its own forward: left alone


@torch.no_grad()
def fold_batchnorms(module: nn.Module) -> int:
    """Fold (in place) every eval-mode BatchNorm that directly follows a convolution; returns how many.

    The pairs come from an FX trace (timm's untraceable modules are leaves); a convolution whose
    output is used by anything else, or that runs more than once, keeps its norm. A module that
    cannot be traced is left unchanged (0).
    """
    leaves: tuple[type, ...] = (nn.Conv2d, nn.modules.batchnorm._BatchNorm)
    functions: tuple = ()
    try:
        import timm.models

        leaves += tuple(timm.models.get_notrace_modules())
        functions = tuple(timm.models.get_notrace_functions())
    except ImportError:
        pass
    try:
        graph = _LeafTracer(leaves, functions).trace(module)
    except Exception as exc:  # FX cannot trace every network; folding is an optimisation
        logger.info(
            "optimize_for_inference: %s does not trace with FX (%s); its norms are kept", type(module).__name__, exc
        )
        return 0
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        norm_name, source = str(node.target), node.args[0]
        norm = module.get_submodule(norm_name)
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or source.op != "call_module":
            continue
        conv_name = str(source.target)
        conv = module.get_submodule(conv_name)
        replacement = _norm_replacement(norm)
        if (
            not isinstance(conv, nn.Conv2d)
            or replacement is None
            or not can_fold_norm(norm)
            or len(source.users) != 1
            or calls[conv_name] != 1
            or calls[norm_name] != 1
        ):
            continue
        weight, bias, leftover = fold_conv_norm(conv, norm)
        if leftover is not None:
            continue
        conv.weight.copy_(weight.to(conv.weight.dtype))
        assert bias is not None  # a folded BatchNorm always gives a bias
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
        _set_module(module, norm_name, replacement)
        folded += 1
    return folded


class GenericEncoder(nn.Module):
    """A backbone prepared for inference by the generic path; ``forward(x)`` returns its deepest stage.

    Args:
        encoder: the PSPNet's backbone (not modified: a copy is prepared).
        dtype: compute dtype of the weights and activations.
        channels_last: keep activations channels-last.
    """

    def __init__(self, encoder: nn.Module, *, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        prepared = copy.deepcopy(encoder).eval()
        try:
            from timm.utils.model import reparameterize_model

            prepared = reparameterize_model(prepared)
        except ImportError:
            pass
        target = getattr(prepared, "model", prepared)
        self.folded = fold_batchnorms(target)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder = prepared.to(dtype).to(memory_format=fmt).requires_grad_(False)
        logger.info("optimize_for_inference: generic backbone path, %d BatchNorm(s) folded", self.folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]
