"""Calibration data for INT8 quantization: pictures -> normalised tensors with the weights' own preprocessing.

:func:`calibration_images` reads a folder (or a list) of pictures and applies the weights' test
resize and mean/std, so that the activation ranges measured during calibration are those the
model meets at inference. The private helpers turn the accepted calibration forms (a batch
tensor, a list of tensors, a DataLoader) into batches and fit them to statically-shaped graphs.
Used by :mod:`pspnet_lib.inference.quantize` and :mod:`pspnet_lib.inference.int8_check`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.bands import normalise
from ..core.images import IMAGE_EXTENSIONS, to_image_tensor
from ..core.inference_protocol import resize_keyword
from ..core.pretrained_cfg import PretrainedCfg
from .export import _require_onnx

__all__ = ["calibration_files", "calibration_images"]

logger = logging.getLogger(__name__)


def calibration_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files (by extension, :data:`~pspnet_lib.core.images.IMAGE_EXTENSIONS`) in ``folder``, sorted.

    Raises ``FileNotFoundError`` (not a folder) or ``ValueError`` (no images in it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder} (expected a folder of pictures)")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"no pictures in {folder} (expected files ending in {', '.join(IMAGE_EXTENSIONS)}); "
            "point the calibration at a folder of images like the ones you will segment"
        )
    return files


def _sample(items: list, count: int | None, seed: int) -> list:
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise ValueError(f"the calibration count must be at least 1, got {count}")
    picked = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picked]


def calibration_images(
    source: str | os.PathLike | Sequence[Any] | torch.Tensor,
    model: nn.Module,
    *,
    count: int | None = None,
    resize: int | Sequence[int] | bool | None = None,
    size: int | Sequence[int] | bool | None = None,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Pictures -> normalised ``(1, C, h, w)`` float32 tensors (C = the model's input channels), with
    the weights' own preprocessing.

    Args:
        source: a folder of pictures, or a list of paths / PIL images / arrays / uint8 tensors
            (anything :func:`~pspnet_lib.core.images.to_image_tensor` accepts: pictures, ``.npy``
            arrays and multi-page TIFFs of the model's channel count).
        model: the model whose ``pretrained_cfg`` gives mean/std (ImageNet by default) and the
            test resize.
        count: use at most this many pictures, sampled reproducibly (``seed``); None = all.
        resize: the resize, as in :func:`~pspnet_lib.inference.predict.predict`: None = the weights'
            protocol (``pretrained_cfg["inference"]["resize"]``; none stored = the picture's own
            size), False = no resize, an int = short side, ``(long, short)`` = limits.
        size: deprecated (0.3) name of ``resize``.

    The resize and normalisation are :func:`pspnet_lib.hub.preprocessing.build_transforms`, the
    pipeline the zoo's ``weights.transforms()`` use, so calibration sees what inference sees. With
    a band spec the stored values are normalised by :func:`pspnet_lib.core.bands.normalise` (what
    ``predict`` and export compute), then resized.
    """
    from ..hub.preprocessing import KeepRatioResize, build_transforms
    from .predict import resolve_protocol

    resize = resize_keyword(resize, size, where="calibration_images")
    if isinstance(source, nn.Module) or not isinstance(model, nn.Module):
        raise TypeError(
            "calibration_images(source, model) takes the pictures first and the model second, got "
            f"({type(source).__name__}, {type(model).__name__})"
        )
    items = calibration_files(source) if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise ValueError("no calibration pictures given")
    items = _sample(items, count, seed)
    cfg = PretrainedCfg.of(model)
    resize = resolve_protocol(model, resize=resize).resize
    transform = build_transforms(resize=resize, mean=cfg.mean, std=cfg.std)
    out = []
    for item in items:
        try:
            # the model's channel count: pictures, .npy arrays and multi-page TIFFs, as predict reads them
            # (stored values of any type when the weights carry a band spec)
            image = to_image_tensor(item, cfg.in_channels, band_spec=cfg.bands)
        except (OSError, ValueError) as exc:  # one unreadable picture should not stop the calibration
            logger.warning(
                "calibration: skipping %s: %s", item if isinstance(item, (str, os.PathLike)) else "a picture", exc
            )
            continue
        if cfg.bands is not None:  # predict's normalisation, then the protocol's resize
            x = normalise(image, cfg)
            out.append((KeepRatioResize(resize)(x) if resize is not None else x).unsqueeze(0).contiguous())
            continue
        if image.dtype != torch.uint8:  # float [0, 1] -> the uint8 the transforms expect
            image = (image * 255.0).round().clamp(0, 255).to(torch.uint8)
        out.append(transform(image).unsqueeze(0).contiguous())
    if not out:
        raise ValueError(f"none of the {len(items)} calibration picture(s) could be read")
    return out


def _as_batches(calibration: Any, channels: int | None = 3) -> list[torch.Tensor]:
    """Normalised float batches ``(N, C, H, W)`` from a tensor, a list of tensors or a DataLoader.

    ``channels``: the model's input channels (None: not checked here, e.g. left to the ONNX graph).
    """
    if isinstance(calibration, (str, os.PathLike)):
        raise TypeError(
            f"calibration={str(calibration)!r} is a path; pass normalised image tensors, e.g. "
            f"calibration=calibration_images({str(calibration)!r}, model) "
            "(from pspnet_lib.inference.quantize import calibration_images)"
        )
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    batches = []
    for index, item in enumerate(calibration):
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            item = item[0]  # (images, labels) from a DataLoader
        if isinstance(item, dict) and isinstance(item.get("image", item.get("images")), torch.Tensor):
            item = item.get("image", item.get("images"))
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"calibration item {index} is a {type(item).__name__}, expected a normalised image tensor")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        c = "C" if channels is None else channels
        if item.ndim != 4 or (channels is not None and item.shape[1] != channels) or not item.is_floating_point():
            raise ValueError(
                f"calibration item {index} has shape {tuple(item.shape)} and dtype {item.dtype}; expected normalised "
                f"float images ({c}, H, W) or (N, {c}, H, W), i.e. (x / 255 - mean) / std with the weights' mean/std "
                "(pspnet_lib.inference.quantize.calibration_images makes them from pictures)"
            )
        batches.append(item.detach().float().cpu())
    if not batches:
        raise ValueError("the calibration data is empty; give at least one image")
    return batches


def _static_input_shape(onnx_path: str | os.PathLike) -> list[int | None]:
    """The graph input's ``(N, C, H, W)``, None for symbolic dimensions."""
    onnx = _require_onnx()
    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _fit_static(batches: list[torch.Tensor], shape: Sequence[int | None]) -> list[torch.Tensor]:
    """Make images fit a graph exported with ``dynamic=False``: resized to its H x W, grouped in its batch size.

    Resizing after normalisation equals resizing before it (bilinear interpolation commutes with
    the per-channel affine normalisation). A last incomplete batch repeats its final image.
    """
    import torch.nn.functional as F

    n, _, h, w = (list(shape) + [None] * 4)[:4]
    images = [img.unsqueeze(0) for b in batches for img in b]
    if h is not None and w is not None:
        images = [
            img if img.shape[-2:] == (h, w) else F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
            for img in images
        ]
    elif n is None:
        return batches
    n = n or 1
    grouped = []
    for start in range(0, len(images), n):
        chunk = images[start : start + n]
        chunk += [chunk[-1]] * (n - len(chunk))
        grouped.append(torch.cat(chunk))
    return grouped


def _is_picture_source(calibration: Any) -> bool:
    if isinstance(calibration, (str, os.PathLike)):
        return True
    if isinstance(calibration, (list, tuple)) and calibration:
        first = calibration[0]
        return not (isinstance(first, torch.Tensor) and first.is_floating_point())
    return False
