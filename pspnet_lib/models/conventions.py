"""The hooks timm's and segmentation_models.pytorch's users reach for, on :class:`~pspnet_lib.models.PSPNet`.

``freeze_backbone`` / ``unfreeze_backbone`` (smp's ``freeze_encoder``), ``forward_intermediates``
(timm's stage-feature access), ``num_features`` / ``head_hidden_size``, ``no_weight_decay`` and
``group_matcher`` (read by ``timm.optim.create_optimizer_v2`` and its layer-wise learning-rate
decay), and a one-sentence refusal of ``torch.jit.script``. Every method works for the ResNet and
the timm backbones alike: the backbone answers for its own parameters (``group_matcher`` /
``no_weight_decay`` with a name prefix), the heads count as the last, undecayed group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

__all__ = ["BackboneConventions", "JIT_SCRIPT_REFUSAL"]

#: Why ``torch.jit.script(model)`` is refused, and what to use instead (docs/export.md).
JIT_SCRIPT_REFUSAL = (
    "torch.jit.script cannot compile PSPNet (its input checks, pyramid and timm backbones use Python that TorchScript "
    "does not support, and TorchScript is deprecated): export with torch.export.export(model.eval(), (x,), "
    "dynamic_shapes=...) or pspnet_lib.inference.export.export_program, or trace with torch.jit.trace(model.eval(), x) "
    "or pspnet_lib.inference.export.export_torchscript (docs/export.md)"
)


class BackboneConventions(nn.Module):
    """Mixin of :class:`~pspnet_lib.models.PSPNet`: needs ``self.backbone``, ``self.config`` and ``forward_features``."""

    backbone: Any  # an encoder (pspnet_lib.models.encoders): ResNet or TimmEncoder
    config: Any
    _backbone_frozen: bool = False

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError  # PSPNet's

    # ------------------------------------------------------------------ freezing (smp's freeze_encoder)
    def freeze_backbone(self) -> None:
        """Stop training the backbone: its parameters get ``requires_grad=False`` and it stays in eval mode.

        Eval mode means its BatchNorm layers normalise with, and no longer update, their running
        statistics (and stochastic depth / dropout inside a timm backbone are off), also after
        ``model.train()``, until :meth:`unfreeze_backbone`. The heads train as before. Build the
        optimiser after freezing (or filter ``requires_grad``), as with smp's ``freeze_encoder``.
        """
        self.backbone.requires_grad_(False)
        self._backbone_frozen = True
        self.backbone.train(False)

    def unfreeze_backbone(self) -> None:
        """Undo :meth:`freeze_backbone`: backbone parameters trainable, its mode follows the model's again."""
        self.backbone.requires_grad_(True)
        self._backbone_frozen = False
        self.backbone.train(self.training)

    @property
    def backbone_frozen(self) -> bool:
        """Whether :meth:`freeze_backbone` is in effect."""
        return self._backbone_frozen

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.train(False)
        return self

    # ------------------------------------------------------------------ timm's feature access
    @property
    def num_features(self) -> int:
        """Channels of the deepest backbone stage, the pyramid's input (timm's ``num_features``)."""
        return int(self.backbone.feature_info[-1]["num_chs"])

    @property
    def head_hidden_size(self) -> int:
        """Channels of the PSP head's features before dropout and classifier (``forward_head(..., pre_logits=True)``)."""
        return int(self.config.head_channels)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the backbone's stage features.

        Args:
            x: the normalised input ``(N, in_channels, H, W)``.
            indices: which stages of :attr:`feature_info` (None: all; an int ``n``: the last ``n``;
                a sequence: those indices, negative ones counting from the end).
            norm, stop_early: timm's options; the stages here have no extra final norm, and every
                stage is computed, so only False is accepted.
            output_fmt: ``"NCHW"`` or ``"NHWC"`` (channels last, as a permuted view).
            intermediates_only: return the list only.

        Returns ``(final, intermediates)``: ``final`` is the deepest stage (the pyramid's input,
        ``(N, num_features, H / output_stride, W / output_stride)``; ``model.forward_head(final)``
        gives the logits at that size), ``intermediates`` the selected stages, shallow to deep.
        Raises ``ValueError`` for an index outside the stages or an unsupported option.
        """
        if norm or stop_early:
            raise ValueError("forward_intermediates: norm=True and stop_early=True are not supported by PSPNet")
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        count = len(self.backbone.feature_info)
        if isinstance(indices, bool):
            raise ValueError(f"indices must be None, an int or a sequence of ints, got {indices!r}")
        if indices is None:
            chosen = list(range(count))
        elif isinstance(indices, int):
            if not 1 <= indices <= count:
                raise ValueError(f"indices={indices} asks for the last {indices} stages; the backbone has {count}")
            chosen = list(range(count - indices, count))
        else:
            chosen = []
            for i in indices:
                if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count:
                    raise ValueError(f"stage index {i!r} is outside the backbone's {count} stages (0..{count - 1})")
                chosen.append(i % count)
        features = self.forward_features(x)
        selected = [features[i] for i in chosen]
        if output_fmt == "NHWC":
            selected = [f.permute(0, 2, 3, 1) for f in selected]
        if intermediates_only:
            return selected
        return features[-1], selected

    # ------------------------------------------------------------------ optimiser hooks
    def no_weight_decay(self) -> set[str]:
        """Names of parameters timm's optimiser factory keeps out of weight decay, besides every 1-D one.

        The backbone's own (a timm family's position embeddings, ...; none for ResNets), with the
        ``backbone.`` prefix. (``timm.optim.create_optimizer_v2`` already exempts norms and biases.)
        """
        own = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{name}" for name in own()} if callable(own) else set()

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter grouping for layer-wise learning-rate decay, shallow to deep.

        ``{"stem": regex, "blocks": [(regex, ordinal) ...]}`` over the parameter names: the stem
        first, then each backbone stage (``coarse=True``) or block; parameters it does not match
        (the decode and auxiliary heads) form the last group, which layer decay leaves at the full
        learning rate. ``timm.optim.create_optimizer_v2(model, "adamw", layer_decay=0.75)`` reads it.
        """
        return self.backbone.group_matcher(coarse, prefix="backbone.")

    # ------------------------------------------------------------------ TorchScript
    def __prepare_scriptable__(self) -> Any:
        # torch.jit.script calls this hook first: refuse in one sentence instead of an attribute
        # error from deep inside the compiler.
        raise RuntimeError(JIT_SCRIPT_REFUSAL)
