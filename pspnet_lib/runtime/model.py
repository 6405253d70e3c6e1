"""The inference-only PSPNet produced by :func:`~pspnet_lib.runtime.optimize_for_inference`."""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn as nn

from ..models.pspnet import PSPNet
from ..models.resnet import ResNet
from .blocks import FastStage, FastStem
from .generic import GenericEncoder
from .head import FastPSPHead
from .tuning import TuningCache, tuning_cache

__all__ = ["FastPSPNet"]


def check_input(x: Any, in_channels: int) -> None:
    """Raise a one-line ``TypeError``/``ValueError`` unless ``x`` is a floating-point
    ``(N, in_channels, H, W)`` tensor with N, H, W >= 1 (the optimised modules' input contract)."""
    in_ch = in_channels
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (N, {in_ch}, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"expected an input of shape (N, {in_ch}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input (normalised image), got {x.dtype}")
    if x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"expected N, H, W >= 1, got shape {tuple(x.shape)}")


class FastPSPNet(nn.Module):
    """A PSPNet rebuilt for inference: folded norms, prepared weights, no concatenation.

    ``model(x)`` returns float32 logits ``(N, num_classes, H, W)`` at the input's size, like
    :class:`~pspnet_lib.models.PSPNet` in eval mode (the auxiliary head is dropped). Inputs of any
    floating dtype are accepted and converted. The module is inference-only: it builds no autograd
    graph, ``train()`` raises, and it cannot be moved to another device or dtype (optimise the
    moved model instead). Its weights are not a state dict to save: save the original model.

    A ResNet backbone is rebuilt block by block (``stem``, ``stages``: fused convolutions,
    space-to-batch, Winograd); any other backbone (a timm encoder) goes through the generic path
    (``encoder``: :class:`~pspnet_lib.runtime.generic.GenericEncoder`). The head is the same.
    """

    def __init__(
        self,
        model: PSPNet,
        *,
        dtype: torch.dtype,
        backend: str,
        channels_last: bool,
        space_to_batch: bool | str,
        winograd: bool | int | str = False,
        tuning: TuningCache | None = None,
    ) -> None:
        super().__init__()
        self.tuning = tuning if tuning is not None else tuning_cache(False)
        kw: dict[str, Any] = {
            "dtype": dtype,
            "backend": backend,
            "channels_last": channels_last,
            "winograd": winograd,
            "tuning": self.tuning,
        }
        self.config = copy.deepcopy(model.config)
        self.pretrained_cfg: dict[str, Any] = copy.deepcopy(getattr(model, "pretrained_cfg", {}))
        self.dtype = dtype
        self.channels_last = channels_last
        self.backend = backend
        self.encoder: GenericEncoder | None = None
        self.stem: FastStem | None = None
        self.stages = nn.ModuleList()
        if isinstance(model.backbone, ResNet):
            self.stem = FastStem(model.backbone, **kw)
            self.stages.extend(
                FastStage(getattr(model.backbone, f"layer{i}"), space_to_batch, **kw) for i in range(1, 5)
            )
        else:
            self.encoder = GenericEncoder(model.backbone, dtype=dtype, channels_last=channels_last)
        self.head = FastPSPHead(model.decode_head, model.config.align_corners, **kw)
        device = next(model.parameters()).device
        self.device = device
        super().train(False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def train(self, mode: bool = True) -> FastPSPNet:
        if mode:
            raise RuntimeError(
                "the module returned by optimize_for_inference is inference-only (BatchNorm is folded "
                "into the weights); train the original model and optimise it again afterwards"
            )
        return super().train(False)

    def _apply(self, fn, recurse: bool = True):
        # a weight in the compute dtype: casting or moving it shows whether fn would change anything
        if self.stem is not None:
            probe = self.stem.units[0].weight
        else:
            assert self.encoder is not None
            probe = next(self.encoder.parameters())
        if fn(probe) is probe:  # e.g. .to(its own device): nothing to do
            return self
        raise RuntimeError(
            "the module returned by optimize_for_inference is bound to the device and dtype it was "
            "built for; move or cast the original model and call optimize_for_inference on it again"
        )

    def _check_input(self, x: Any) -> None:
        check_input(x, self.config.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        size = (x.shape[2], x.shape[3])
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.no_grad():
            x = x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=fmt)
            if self.encoder is not None:
                x = self.encoder(x)
            else:
                assert self.stem is not None
                x = self.stem(x)
                for stage in self.stages:
                    x = stage(x)
            out = self.head(x, size)
        self.tuning.flush()  # persist any decisions this call calibrated (no-op otherwise)
        return out

    def space_to_batch_plans(self) -> list[dict]:
        """The split factors chosen so far, per stage and input shape (for benchmarks and debugging)."""
        stages = [cast(FastStage, stage) for stage in self.stages]  # nn.ModuleList is not generic
        return [{str(k[0]): list(v) for k, v in stage.plans.items()} for stage in stages]

    def predict(self, images: Any, **kwargs: Any) -> Any:
        """Segment images given as paths, PIL images, arrays or tensors; see :func:`pspnet_lib.predict`."""
        from ..inference.predict import predict

        return predict(self, images, **kwargs)
