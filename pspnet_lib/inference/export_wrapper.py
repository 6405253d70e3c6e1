"""What every export route traces: :class:`ExportWrapper` (preprocessing inside the graph, the output
kind), its example input and the input's description stored with the exported file.

Preprocessing inside the graph is :mod:`pspnet_lib.core.bands`'s: pictures take uint8
``(x - 255 mean) / (255 std)``; weights with a band spec take their stored values (uint16, int16,
float ...) and compute :func:`~pspnet_lib.core.bands.affine_input` with the buffers of
:func:`~pspnet_lib.core.bands.input_affine`, the very operations ``predict``, the datasets and
calibration run, so the same stored values give the same input tensor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..core.bands import affine_input, input_affine, stored_dtype
from ..core.constants import input_channels
from ..core.pretrained_cfg import PretrainedCfg

__all__ = ["OUTPUTS", "ExportWrapper", "example_input", "input_description", "preprocesses", "wrap_for_export"]

OUTPUTS = ("logits", "probs", "labels")


class ExportWrapper(nn.Module):
    """What gets exported: ``images -> logits | probs | labels`` as one tensor.

    Args:
        model: a PSPNet (or any module mapping a normalised batch to logits).
        preprocess: take ``uint8`` batches ``(N, C, H, W)`` (0..255, C = ``config.in_channels``)
            and normalise them inside the graph with the weights' mean/std (``pretrained_cfg``, one
            value per channel; ImageNet by default for RGB). ``ValueError`` if their length is not C.
            Weights with a band spec take their stored values instead (``bands.dtype``: uint16,
            int16, float ...), scaled and normalised as :func:`pspnet_lib.core.bands.normalise`
            does (nodata values 0). Without it the input is the normalised float batch that
            ``model(x)`` takes.
        output: ``"logits"`` ``(N, K, H, W)``, ``"probs"`` (softmax of the logits) or ``"labels"``
            ``(N, H, W)`` int64 class indices (with a band spec's ``nodata``: pixels missing in every
            band ``ignore_index``, as ``predict`` gives them).
    """

    mean: torch.Tensor
    std: torch.Tensor
    band_a: torch.Tensor
    band_b: torch.Tensor
    band_nodata: torch.Tensor
    band_nodata_nan: torch.Tensor

    def __init__(self, model: nn.Module, *, preprocess: bool = False, output: str = "logits") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; expected one of {', '.join(OUTPUTS)}")
        self.model = model
        self.preprocess = bool(preprocess)
        self.output = output
        cfg = PretrainedCfg.of(model)
        mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.stored_input = cfg.bands is not None  # a band spec: the graph takes its stored values
        self.nodata = cfg.bands is not None and cfg.bands.nodata is not None
        self.ignore_index = cfg.ignore_index
        if self.stored_input:
            a, b, nodata, is_nan = input_affine(cfg)
            self.register_buffer("band_a", a, persistent=False)
            self.register_buffer("band_b", b, persistent=False)
            if nodata is not None and is_nan is not None:
                self.register_buffer("band_nodata", nodata, persistent=False)
                self.register_buffer("band_nodata_nan", is_nan, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.preprocess:
            x = images
        elif self.stored_input:
            nodata = (self.band_nodata, self.band_nodata_nan) if self.nodata else (None, None)
            x = affine_input(images, self.band_a, self.band_b, *nodata)
        else:
            x = (images.float() - self.mean) / self.std
        logits = self.model(x)
        if self.output == "labels":
            labels = logits.argmax(dim=1)
            if self.preprocess and self.nodata:
                values = images.float()
                missing = ((values == self.band_nodata) | (torch.isnan(values) & self.band_nodata_nan)).all(dim=1)
                labels = labels.masked_fill(missing, self.ignore_index)
            return labels
        if self.output == "probs":
            return logits.softmax(dim=1)
        return logits


def wrap_for_export(model: nn.Module, preprocess: bool, output: str) -> ExportWrapper:
    """The :class:`ExportWrapper` of an eval-mode model (``ValueError`` for one in training mode)."""
    if model.training:
        raise ValueError(
            "the model is in training mode (dropout active, BatchNorm using batch statistics); "
            "call model.eval() before exporting"
        )
    return ExportWrapper(model, preprocess=preprocess, output=output).eval()


def example_input(
    model: nn.Module,
    preprocess: bool,
    batch_size: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random input of the exported graph's type on the model's device: normalised float32, or
    with ``preprocess`` uint8 pictures (0..255) / stored values of the band spec's dtype (integers
    0..10000 within the type's range, floats 0..1)."""
    channels = input_channels(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if min(batch_size, height, width) < 1:
        raise ValueError(f"the example input needs positive sizes, got batch {batch_size}, {height}x{width}")
    shape = (batch_size, channels, height, width)
    if not preprocess:
        return torch.randn(*shape, generator=generator).to(device)
    dtype = stored_dtype(PretrainedCfg.of(model))
    if dtype.is_floating_point:
        return torch.rand(*shape, generator=generator).to(device=device, dtype=dtype)
    high = 256 if dtype == torch.uint8 else min(10001, int(np.iinfo(str(dtype).replace("torch.", "")).max) + 1)
    return torch.randint(0, high, shape, generator=generator).to(device=device, dtype=dtype)


def input_description(model: nn.Module, preprocess: bool) -> str:
    """The ``pspnet_lib.input`` metadata of an exported file (read back by :func:`preprocesses`)."""
    channels = input_channels(model)
    layout = "RGB (N, 3, H, W)" if channels == 3 else f"(N, {channels}, H, W)"
    cfg = PretrainedCfg.of(model)
    if preprocess and cfg.bands is not None:
        return f"{cfg.bands.dtype} {layout}, stored values; scaled by the band spec and normalised inside the graph"
    if preprocess:
        return f"uint8 {layout}, 0..255; normalised inside the graph"
    return f"float32 {layout}, (x / 255 - mean) / std with pretrained_cfg mean/std"


def preprocesses(description: str) -> bool:
    """Whether an exported file's ``pspnet_lib.input`` metadata says it normalises inside the graph."""
    return "inside the graph" in description
