"""Joint image/mask transforms: the paper's training augmentation and a deterministic eval transform.

Everything is built from :mod:`torchvision.transforms.v2`, which dispatches on the
:mod:`~torchvision.tv_tensors` type of each input: a :class:`~torchvision.tv_tensors.Image` is
resampled bilinearly and filled with the mean colour, a :class:`~torchvision.tv_tensors.Mask` is
resampled with nearest neighbour and filled with the ignore index, and photometric steps (blur,
normalisation) leave the mask alone. Call a transform as ``image, mask = transform(image, mask)``
with the types the datasets return (uint8 ``Image`` (3, H, W), int64 ``Mask`` (H, W)).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..core.band_spec import BandSpec
from ..core.bands import normalise, scale_bands
from ..core.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ..core.geometry import rescale_size
from ..core.inference_protocol import MAX_SIDE
from ..core.pretrained_cfg import PretrainedCfg

__all__ = ["ToImageMask", "RandomScale", "ScaleBands", "train_transforms", "eval_transforms", "mask_fill_values"]

_SPATIAL_TYPES = (tv_tensors.Image, tv_tensors.Video, tv_tensors.Mask, PIL.Image.Image)


class ToImageMask(v2.Transform):
    """Wrap a plain ``(image, mask)`` pair as ``(tv_tensors.Image, tv_tensors.Mask)``.

    v2 transforms decide what to resample how from the tv_tensor type; given two plain tensors
    they would treat only the first as an image and pass the mask through untransformed. This
    step makes the pair explicit: the image may be a PIL image, an ``(H, W, 3)`` uint8 array or
    a ``(3, H, W)`` tensor; the mask a PIL image, an array or a tensor of class indices
    (``(H, W)`` or ``(1, H, W)``), returned as int64 ``(H, W)``. tv_tensors pass unchanged.
    """

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 2:
            raise TypeError(f"segmentation transforms take (image, mask), got {len(inputs)} argument(s)")
        image, mask = inputs
        if not isinstance(image, tv_tensors.Image):
            if isinstance(image, PIL.Image.Image):
                image = F.pil_to_tensor(image.convert("RGB"))
            elif isinstance(image, np.ndarray):
                image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            image = tv_tensors.Image(image)
        if not isinstance(mask, tv_tensors.Mask):
            mask = torch.as_tensor(np.array(mask) if not isinstance(mask, torch.Tensor) else mask)
            if mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            if mask.ndim != 2:
                raise ValueError(f"a mask must be (H, W) class indices, got shape {tuple(mask.shape)}")
            mask = tv_tensors.Mask(mask.long())
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"image size {tuple(image.shape[-2:])} differs from mask size {tuple(mask.shape[-2:])}")
        return image, mask


class RandomScale(v2.Transform):
    """Resize image and mask together by a random factor drawn uniformly from ``scale_range``.

    torchvision has no relative random rescale (``RandomResize`` draws an absolute edge length,
    ``ScaleJitter`` a factor of one fixed target size), so this is a thin v2 transform around
    :func:`torchvision.transforms.v2.functional.resize`, which resamples masks with nearest neighbour.

    Args:
        scale_range: ``(low, high)`` factors, e.g. ``(0.5, 2.0)`` as in the paper.
        base_size: ``None`` scales relative to each image's own size (the author's ``RandScale``).
            ``(long, short)`` first fits the image into those edge limits keeping its aspect ratio
            and scales that (mmsegmentation's ``RandomResize(scale=(2048, 512), ratio_range=...)``).
        interpolation: image resampling (masks always use nearest neighbour).
        antialias: antialias image downscaling.
    """

    def __init__(
        self,
        scale_range: Sequence[float] = (0.5, 2.0),
        base_size: Sequence[int] | None = None,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)!r}")
        if base_size is not None and (len(base_size) != 2 or min(base_size) <= 0):
            raise ValueError(f"base_size must be (long_edge, short_edge) > 0, got {base_size!r}")
        self.scale_range = (low, high)
        self.base_size = tuple(base_size) if base_size is not None else None
        self.interpolation = interpolation
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        sizes = {tuple(F.get_size(x)) for x in flat_inputs if isinstance(x, _SPATIAL_TYPES)}
        if not sizes:
            sizes = {tuple(x.shape[-2:]) for x in flat_inputs if isinstance(x, torch.Tensor) and x.ndim >= 2}
        if len(sizes) != 1:
            raise ValueError(f"RandomScale needs inputs of one spatial size, got sizes {sorted(sizes)}")
        height, width = sizes.pop()
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        if self.base_size is None:
            size = [max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))]
        else:
            size = list(rescale_size(height, width, [edge * factor for edge in self.base_size]))
        return {"size": size}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"], interpolation=self.interpolation, antialias=self.antialias)


class ScaleBands(v2.Transform):
    """Stored band values (the image of a ``(image, mask)`` pair) into the band spec's units.

    ``normalize=False``: ``stored * scale + offset``, nodata values set to the band's mean (the
    training augmentation resamples these, then normalises); ``normalize=True``: the model input
    itself, :func:`pspnet_lib.core.bands.normalise`, the function ``predict`` and export use.
    Masks pass unchanged.

    Args:
        mean, std: the statistics after scaling, one per band.
        band_spec: the :class:`~pspnet_lib.core.band_spec.BandSpec` (or its stored dict).
        normalize: see above.
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], band_spec: BandSpec | dict[str, Any], normalize: bool = True
    ) -> None:
        super().__init__()
        self.cfg = _band_cfg(mean, std, band_spec)
        self.normalize = normalize

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        values = inpt.as_subclass(torch.Tensor)
        out = normalise(values, self.cfg) if self.normalize else scale_bands(values, self.cfg)
        return tv_tensors.wrap(out, like=inpt)


def _band_cfg(mean: Sequence[float], std: Sequence[float], band_spec: BandSpec | dict[str, Any]) -> PretrainedCfg:
    channels = len(mean)
    spec = band_spec if isinstance(band_spec, BandSpec) else BandSpec.from_dict(band_spec, channels, what="band_spec=")
    return PretrainedCfg(in_channels=channels, mean=tuple(mean), std=tuple(std), bands=spec)


def size_pair(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``(height, width)`` in pixels from one int (square) or a pair.

    Raises ``ValueError`` naming ``name`` unless it is one integer or two in ``[1, MAX_SIDE]`` (8192).
    """
    sides: list[Any]
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        sides = [size, size]
    else:
        sides = list(size) if isinstance(size, (list, tuple)) else []
    if len(sides) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= int(v) <= MAX_SIDE for v in sides
    ):
        raise ValueError(
            f"{name} must be a positive integer or (height, width) of positive integers, at most {MAX_SIDE} "
            f"pixels, got {size!r}"
        )
    return int(sides[0]), int(sides[1])


def train_transforms(
    crop_size: int | Sequence[int] | None,
    *,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    base_size: Sequence[int] | None = None,
    rotation: float = 10.0,
    rotation_p: float = 0.5,
    blur_p: float = 0.5,
    blur_kernel: int = 5,
    blur_sigma: float | Sequence[float] = 1.1,
    flip_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    band_spec: BandSpec | dict[str, Any] | None = None,
) -> v2.Compose:
    """The PSPNet paper's training augmentation (the steps of the author's training code).

    random scale -> random rotation -> random crop (padded where the image is smaller) -> Gaussian
    blur -> horizontal flip -> normalisation. The image becomes float after scaling (which runs on
    uint8, torchvision's fast path), so borders created by rotation and padding are filled with
    exactly ``mean`` and are 0 after normalisation; the mask's borders are filled with
    ``ignore_index``. The author blurs and flips before cropping; doing it after the crop gives the
    same distribution (the crop position is symmetric, and blur differs only within two pixels of
    the crop edge) for a fraction of the work on large images such as Cityscapes.

    Args:
        crop_size: output ``(height, width)`` (or one int); ``None`` skips cropping (then images
            keep their own sizes and cannot be batched).
        scale_range: random scale factors ``(low, high)``; ``None`` disables scaling.
        base_size: see :class:`RandomScale` (``None``: relative to each image).
        rotation: maximum rotation in degrees (uniform in ``[-rotation, rotation]``); 0 disables.
        rotation_p: probability of rotating.
        blur_p: probability of a Gaussian blur; 0 disables.
        blur_kernel, blur_sigma: blur kernel size and sigma (a float, or a ``(min, max)`` range to
            draw from). The defaults equal the author's ``cv2.GaussianBlur(img, (5, 5), 0)``.
        flip_p: probability of a horizontal flip; 0 disables.
        mean, std: normalisation on the 0..1 scale (those of the pretrained weights); with
            ``band_spec``, in the band spec's units.
        ignore_index: mask value of padded and rotated-in pixels.
        band_spec: the band spec of images in their own units (``PretrainedCfg.of(model).bands``):
            the stored values are first scaled to the spec's units (:class:`ScaleBands`; nodata
            values become the band's mean), then scaled, rotated, cropped, blurred and flipped
            in float; the steps and the fill are the same.

    Returns a :class:`torchvision.transforms.v2.Compose` mapping ``(Image uint8 (3, H, W), Mask
    (H, W))`` to ``(float32 (3, h, w) normalised, int64 (h, w))`` plain tensors. Plain inputs (PIL
    images, arrays, tensors) are accepted too, see :class:`ToImageMask`.
    """
    for name, p in (("rotation_p", rotation_p), ("blur_p", blur_p), ("flip_p", flip_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    fill = {tv_tensors.Image: mean, tv_tensors.Mask: ignore_index}
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True)
    steps: list[v2.Transform] = [ToImageMask()]
    if band_spec is not None:  # stored values: into the spec's units first (no uint8 fast path to keep)
        steps.append(ScaleBands(mean, std, band_spec, normalize=False))
    if scale_range is not None:
        steps.append(RandomScale(scale_range, base_size=base_size))
    if band_spec is None:
        steps.append(to_float)
    if rotation and rotation_p > 0:
        rotate = v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR, fill=fill)
        steps.append(v2.RandomApply([rotate], p=rotation_p))
    if crop_size is not None:
        steps.append(v2.RandomCrop(size_pair(crop_size, "crop_size"), pad_if_needed=True, fill=fill))
    if blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=blur_sigma)], p=blur_p))
    if flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_p))
    steps += [v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(steps)


def eval_transforms(
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    normalize: bool = True,
    band_spec: BandSpec | dict[str, Any] | None = None,
) -> v2.Compose:
    """Deterministic evaluation transform: float in [0, 1] and normalisation, no resizing.

    Resizing, sliding windows and multi-scale testing belong to the inference protocol
    (:func:`pspnet_lib.inference.modes.infer`), which maps predictions back to the mask's size.

    Args:
        mean, std: normalisation on the 0..1 scale.
        normalize: ``False`` keeps the uint8 image (e.g. for :func:`pspnet_lib.engine.evaluate.evaluate`,
            which then normalises with the model's own ``pretrained_cfg``).
        band_spec: the band spec of images stored in their own units: the model input is then
            :func:`pspnet_lib.core.bands.normalise` of them (:class:`ScaleBands`), exactly what
            ``predict`` and export compute, with ``normalize=False`` too (float bands could not be
            told from normalised input, which ``evaluate`` takes as it is).

    Returns a Compose mapping ``(Image, Mask)`` to ``(image, int64 mask)`` plain tensors.
    """
    steps: list[v2.Transform] = [ToImageMask()]
    if band_spec is not None:
        steps += [ScaleBands(mean, std, band_spec), v2.ToDtype({tv_tensors.Image: None, tv_tensors.Mask: torch.int64})]
    elif normalize:
        steps += [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize([float(m) for m in mean], [float(s) for s in std]),
        ]
    else:
        steps.append(v2.ToDtype({tv_tensors.Image: None, tv_tensors.Mask: torch.int64}))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def mask_fill_values(transform: Any) -> set[int]:
    """The values a transform writes into masks where it pads, rotates or warps (its ``fill``).

    Walks :class:`~torchvision.transforms.v2.Compose`, ``RandomApply``, ``RandomChoice`` and
    ``RandomOrder`` (their ``transforms``) and reads every step's ``fill``: the value for
    :class:`~torchvision.tv_tensors.Mask` of a per-type dict, or a single number (torchvision
    fills masks with it too; its default is 0). Transforms it cannot see into give nothing.
    The Trainer compares these with the ignore index before training.
    """
    found: set[int] = set()
    pending = [transform]
    while pending:
        step = pending.pop()
        children = getattr(step, "transforms", None)
        if isinstance(children, (list, tuple)):
            pending.extend(children)
        if not hasattr(step, "fill"):
            continue
        fill = step.fill
        if isinstance(fill, dict):
            fill = fill.get(tv_tensors.Mask, fill.get("others", 0))
        if isinstance(fill, (int, float)) and not isinstance(fill, bool):
            found.add(int(fill))
        elif fill is None:
            found.add(0)
    return found
