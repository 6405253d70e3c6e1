"""``predict``: pictures in, segmentations out, with the preprocessing stored with the weights.

    from pspnet_lib import load_pretrained, predict
    model = load_pretrained("pspnet_r50-d8_ade20k")
    result = predict(model, "street.jpg")            # or model.predict("street.jpg")
    result.mask                                       # (H, W) int64 class indices, original size
    result.overlay().save("street_overlay.png")

Any mix of paths, PIL images, arrays and tensors of different sizes can go in one call. Images
of the same size are batched together; every result comes back at its image's own size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..core.bands import display_rgb, nodata_pixels, normalise
from ..core.geometry import rescale_size
from ..core.images import image_size, is_image_batch, to_image_tensor
from ..core.inference_budget import check_inference_budget
from ..core.inference_protocol import resize_keyword
from ..core.palette import padded_palette
from ..core.pretrained_cfg import UNLIMITED_SIDE, InferenceProtocol, PretrainedCfg
from .confidence import check_kind, confidence_map
from .modes import MODES, infer_groups
from .visualize import colorize, legend, overlay

__all__ = ["predict", "Prediction", "resolve_protocol", "model_num_classes", "load_model"]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The segmentation of one image.

    Attributes:
        mask: ``(H, W)`` int64 class indices at the image's original size (CPU).
        probs: ``(K, H, W)`` float32 class probabilities (CPU) when ``return_probs=True``, else None.
        image: the input as the model saw it before normalisation, as an ``(H, W, 3)`` uint8
            picture (what :meth:`overlay` draws on): RGB for 3-channel models, the grey channel
            repeated for 1-channel ones, the first three channels for N >= 3 (the first one
            repeated for 2); with a band spec the bands ``rgb`` names (default the first three)
            in the spec's units, 0..1 shown as 0..255 (:func:`pspnet_lib.core.bands.display_rgb`).
        classes: class names of the weights (``pretrained_cfg["classes"]``), or None if unknown.
        palette: one RGB colour per class (the weights' palette, or a generated one).
        source: the file path for path inputs, else None.
        confidence: ``(H, W)`` float32 per-pixel confidence map (CPU) when ``confidence=KIND``
            was asked for, else None: maxprob or margin in [0, 1], entropy in nats (see
            :mod:`pspnet_lib.inference.confidence`).
        confidence_kind: the kind of :attr:`confidence` (``"maxprob"``, ``"margin"``, ``"entropy"``) or None.
    """

    mask: torch.Tensor
    probs: torch.Tensor | None
    image: np.ndarray
    classes: list[str] | None
    palette: list[tuple[int, int, int]]
    source: str | None = None
    confidence: torch.Tensor | None = None
    confidence_kind: str | None = None
    _present: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def present(self) -> list[int]:
        """Sorted class indices that occur in :attr:`mask`."""
        if self._present is None:
            self._present = [int(c) for c in torch.unique(self.mask).tolist()]
        return self._present

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (``"class <index>"`` when the weights carry no names)."""
        if self.classes is not None and 0 <= index < len(self.classes):
            return self.classes[index]
        return f"class {index}"

    def colorize(self) -> Image.Image:
        """The mask as a paletted PNG-ready image (pixel values are the class indices)."""
        return colorize(self.mask, self.palette)

    def overlay(self, image: Image.Image | np.ndarray | None = None, alpha: float = 0.5) -> Image.Image:
        """The class colours blended over ``image`` (default: the input picture); RGB image."""
        return overlay(self.image if image is None else image, self.mask, self.palette, alpha=alpha)

    def legend(self) -> Image.Image:
        """Swatches and names of the classes present in the mask."""
        num = max(len(self.palette), max(self.present, default=-1) + 1)
        names = [self.class_name(i) for i in range(num)]
        return legend(names, self.palette, present=self.present)


def model_num_classes(model: nn.Module) -> int | None:
    """``model.config.num_classes`` (or ``model.num_classes``), None when the model does not say."""
    config = getattr(model, "config", None)
    return getattr(config, "num_classes", None) or getattr(model, "num_classes", None)


def resolve_protocol(
    model: nn.Module,
    *,
    protocol: InferenceProtocol | None = None,
    mode: str | None = None,
    resize: int | Sequence[int] | bool | None = None,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size: int | Sequence[int] | bool | None = None,
) -> InferenceProtocol:
    """The inference protocol to use: the caller's choices over the weights' stored one.

    The stored protocol is ``PretrainedCfg.of(model).protocol`` (``pretrained_cfg["inference"]``;
    whole image at its own size when none is stored). See :func:`predict` for the arguments;
    ``scales`` and ``flip`` are the caller's (the stored ``tta`` is not applied implicitly). A
    ``protocol`` object is used as it is (then pass none of the field keywords); ``size`` is the
    deprecated (0.3) name of ``resize``.

    Returns an :class:`~pspnet_lib.core.pretrained_cfg.InferenceProtocol` (pass it to
    :func:`pspnet_lib.inference.modes.infer` as ``protocol=``; ``.infer_kwargs()`` gives the
    keyword form). Raises ``ValueError`` for an unknown mode, a bad size, or ``mode="slide"``
    without a window.
    """
    resize = resize_keyword(resize, size, where="resolve_protocol")
    if protocol is not None:
        if not isinstance(protocol, InferenceProtocol):
            raise TypeError(f"protocol must be an InferenceProtocol, got {type(protocol).__name__}")
        given = {"mode": mode, "resize": resize, "crop": crop, "stride": stride}
        given = {k: v for k, v in given.items() if v is not None}
        given.update({"scales": scales} if tuple(scales) != (1.0,) else {})
        given.update({"flip": flip} if flip else {})
        if given:
            raise ValueError(
                f"pass protocol=InferenceProtocol(...) or the keywords ({', '.join(given)}), not both; "
                "protocol.replace(...) changes some of its fields"
            )
        return protocol
    stored = PretrainedCfg.of(model).protocol
    mode = mode if mode is not None else stored.mode
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; expected one of {', '.join(MODES)}")
    limits: tuple[int, ...] | None
    if resize is None:
        limits = stored.resize
    elif resize is False:
        limits = None
    elif isinstance(resize, bool):
        raise ValueError(
            "resize=True is meaningless; pass None (the weights' default), False (no resize), an int or (long, short)"
        )
    elif isinstance(resize, int):
        if resize < 1:
            raise ValueError(f"resize must be positive, got {resize}")
        limits = (UNLIMITED_SIDE, resize)  # an int limits only the short side
    else:
        limits = tuple(int(s) for s in resize)
        if len(limits) != 2 or min(limits) < 1:
            raise ValueError(f"resize must be an int (short side) or a pair (long side, short side), got {resize!r}")
    if mode == "slide":
        crop = crop if crop is not None else stored.crop
        stride = stride if stride is not None else stored.stride
        if crop is None or stride is None:
            raise ValueError(
                "mode='slide' needs a window size and step: pass crop=... and stride=... (e.g. crop=512, "
                "stride=341); these weights store no sliding-window protocol"
            )
    else:
        crop = stride = None
    return InferenceProtocol(
        mode=mode, resize=limits, crop=crop, stride=stride, scales=tuple(scales) or (1.0,), flip=flip
    )


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters (or buffers) are; CPU for a model with neither."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _name(items: list[Any], index: int) -> str:
    item = items[index]
    return str(item) if isinstance(item, (str, os.PathLike)) else f"input {index}"


def _normalised(
    tensors: list[torch.Tensor], chunk: list[int], items: list[Any], cfg: PretrainedCfg, device: torch.device
) -> torch.Tensor:
    """The model input of the same-size images ``chunk``: normalised by ``cfg`` (a mix of uint8 and
    float pictures brought to float in [0, 1] first); stored values of a band spec each on its own."""
    parts = [tensors[i] for i in chunk]
    if cfg.bands is not None:
        return torch.stack([normalise(p.to(device), cfg, what=_name(items, i)) for p, i in zip(parts, chunk)])
    if any(p.dtype != torch.uint8 for p in parts):
        parts = [p.float() / 255.0 if p.dtype == torch.uint8 else p for p in parts]
    return normalise(torch.stack(parts).to(device, non_blocking=True), cfg)


def predict(
    model: nn.Module,
    images: Any,
    *,
    protocol: InferenceProtocol | None = None,
    mode: str | None = None,
    resize: int | Sequence[int] | bool | None = None,
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    batch_size: int = 4,
    device: str | torch.device | None = None,
    return_probs: bool = False,
    amp_dtype: torch.dtype | None = None,
    confidence: str | None = None,
    size: int | Sequence[int] | bool | None = None,
) -> Prediction | list[Prediction]:
    """Segment one image or many, each returned at its original size.

    Args:
        model: a PSPNet (or any module mapping a normalised ``(N, C, h, w)`` batch to logits
            ``(N, K, h, w)``; C = ``model.config.in_channels``, 3 without a config). Its
            ``pretrained_cfg`` supplies the normalisation (``mean``/``std`` with one value per
            input channel, on the 0..1 scale; ImageNet by default for 3 channels), the default protocol (``inference``: ``mode``, ``resize``,
            ``crop``, ``stride``), the class names and the palette.
        images: one image or a list of them (sizes may differ): a path (pictures, multi-page
            TIFFs, ``.npy``), a PIL image, a NumPy array ``(H, W, C)`` uint8 or float in [0, 1], a
            tensor ``(C, H, W)``, or a 4-D batch, with C the model's input channels. For RGB
            models grayscale is repeated and alpha dropped; 1-channel models take grayscale
            ``(H, W)``; see :mod:`pspnet_lib.core.images` for files and pixel-value rules.
            Do not normalise: the weights' mean/std are applied here. Weights with a band spec
            (``pretrained_cfg["bands"]``) take stored values in their own units (uint16, int16,
            float ..., multi-band TIFFs), scaled by the spec (:func:`pspnet_lib.core.bands.normalise`);
            pixels missing in every band (``nodata``) get ``ignore_index`` in the mask.
        protocol: the whole test protocol as one object (e.g.
            ``PretrainedCfg.of(model).tta``, ``InferenceProtocol(mode="slide", crop=512,
            stride=341)``), used as it is; then pass none of the keywords below. None: the
            weights' protocol with the keywords below applied over it.
        mode: ``"whole"`` or ``"slide"``; None uses the weights' protocol (whole if none stored).
        resize: resize before inference (results still come back at the original size): None uses
            the weights' protocol; False runs at the image's own size; an int scales the short
            side to it; ``(long, short)`` fits the image within those limits keeping its aspect
            ratio (mmsegmentation's ``Resize(scale=(2048, 512), keep_ratio=True)``).
        crop, stride: sliding-window size and step for ``mode="slide"`` (default: the weights').
        flip: also run on the mirrored image and average (test-time augmentation).
        scales: scale factors relative to the resized size for multi-scale testing, e.g.
            ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``.
        batch_size: at most this many images per forward pass. Images are batched together
            when the protocol resizes them to the same size (equal sizes without ``size``; e.g.
            4000x3000 and 4032x3024 photos both become 683x512 under ADE20K's protocol); each
            result still comes back at its own size.
        device: where to run; the model is moved there. Default: the model's device.
        return_probs: also return per-class probabilities ``(K, H, W)`` (memory: ``K*H*W*4`` bytes
            per image).
        amp_dtype: run under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``).
        confidence: ``"maxprob"``, ``"margin"`` or ``"entropy"``: also return a per-pixel map as
            :attr:`Prediction.confidence` ``(H, W)`` float32, computed from the probabilities
            (averaged over the runs with ``flip``/``scales``); see
            :mod:`pspnet_lib.inference.confidence` for the units and the 8-bit scaling.
        size: deprecated (0.3; removed in the next release): the old name of ``resize``.

    Returns:
        A :class:`Prediction` for a single image, or a list of them (in input order) for a
        list/tuple or a 4-D batch.

    Raises ``ValueError`` before the network runs when an input's channels or the stored
    mean/std do not match the model's input channels, and a
    :class:`~pspnet_lib.core.limits.ResourceLimitError` (a ``ValueError``) before a file is
    decoded when its size (from its header) exceeds the inference budget
    (:func:`~pspnet_lib.core.inference_budget.check_inference_budget`: whole-image pixels, sliding
    windows, memory); tiled inference handles large rasters.

    The model runs in eval mode (its previous mode is restored afterwards) without gradients.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_kind(confidence)
    resize = resize_keyword(resize, size, where="predict")
    protocol = resolve_protocol(
        model, protocol=protocol, mode=mode, resize=resize, crop=crop, stride=stride, scales=scales, flip=flip
    )
    cfg = PretrainedCfg.of(model)
    channels = cfg.in_channels
    batched = is_image_batch(images)
    items = list(images) if batched else [images]

    tensors: list[torch.Tensor] = []
    sources: list[str | None] = []
    config = getattr(model, "config", None)
    for index, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):  # a file: its size from the header, before decoding it
            found = image_size(item)
            if found is not None:
                check_inference_budget(*found, protocol, config=config, channels=channels, what=str(item))
        try:
            tensors.append(to_image_tensor(item, channels, band_spec=cfg.bands))
        except (TypeError, ValueError, FileNotFoundError) as exc:
            if not batched:
                raise
            raise type(exc)(f"input {index} of {len(items)}: {exc}") from exc
        sources.append(str(item) if isinstance(item, (str, os.PathLike)) else None)

    if device is not None:
        model.to(device)
    run_device = model_device(model)
    single_run = protocol.runs == 1

    # Batch the images that reach the network at one size (their own size unless the protocol
    # resizes them); within a batch, the images of each original size travel together.
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        groups[rescale_size(int(tensor.shape[-2]), int(tensor.shape[-1]), protocol.resize)].append(index)

    masks: list[torch.Tensor | None] = [None] * len(tensors)
    probs: list[torch.Tensor | None] = [None] * len(tensors)
    maps: list[torch.Tensor | None] = [None] * len(tensors)
    autocast = (
        torch.autocast(device_type=run_device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    try:
        # no_grad rather than inference_mode: users edit the returned masks in place.
        with torch.no_grad():
            for indices in groups.values():
                for start in range(0, len(indices), batch_size):
                    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
                    for i in indices[start : start + batch_size]:
                        by_size[tuple(tensors[i].shape[-2:])].append(i)
                    chunks = list(by_size.values())
                    batches = [_normalised(tensors, c, items, cfg, run_device) for c in chunks]
                    with autocast:
                        outputs = infer_groups(model, batches, protocol=protocol)
                    for chunk, scores in zip(chunks, outputs):
                        scores = scores.float()
                        labels = scores.argmax(dim=1).cpu()
                        for j, i in enumerate(chunk):
                            missing = nodata_pixels(tensors[i], cfg.bands)
                            if missing is not None:
                                labels[j][missing] = cfg.ignore_index
                        if return_probs or confidence is not None:
                            scores = scores.softmax(dim=1) if single_run else scores
                        conf = confidence_map(scores, confidence).cpu() if confidence is not None else None
                        if return_probs:
                            scores = scores.cpu()
                        for j, i in enumerate(chunk):
                            masks[i] = labels[j].clone()  # own storage, not a view of the batch
                            if return_probs:
                                probs[i] = scores[j].clone()
                            if conf is not None:
                                maps[i] = conf[j].clone()
    finally:
        model.train(was_training)

    done = [m for m in masks if m is not None]
    assert len(done) == len(masks)  # every picture was in one group
    num_classes = model_num_classes(model) or (max(int(m.max()) for m in done) + 1 if done else 1)
    palette = padded_palette(cfg.palette, num_classes)
    classes = list(cfg.classes) if cfg.classes else None
    results = [
        Prediction(
            mask=done[i],
            probs=probs[i],
            image=display_rgb(tensors[i], cfg),
            classes=classes,
            palette=palette,
            source=sources[i],
            confidence=maps[i],
            confidence_kind=confidence,
        )
        for i in range(len(tensors))
    ]
    return results if batched else results[0]


def load_model(weights: str | os.PathLike, *, device: str | torch.device | None = None) -> nn.Module:
    """Deprecated: use :func:`pspnet_lib.load_pretrained` (``load_pretrained(weights, device=device)``),
    the one loader, which reads the same sources (the Trainer's ``.pt`` checkpoints included)."""
    import warnings

    from ..hub.loading import load_pretrained

    warnings.warn(
        "pspnet_lib.inference.predict.load_model is deprecated; use pspnet_lib.load_pretrained(weights, device=device)",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_pretrained(weights, device=device)
