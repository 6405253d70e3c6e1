"""Up-front checks of a training set-up: what cannot work, or works badly, is said before training.

A run that cannot learn must not end with exit code 0 and "mIoU 100.00", and one that wastes most
of its time must say so. :class:`~pspnet_lib.engine.run.TrainingRun` calls these on the sample of
the training data it reads before a run (``verify``); the :class:`~pspnet_lib.engine.Trainer`
calls those that need only its arguments, so a Trainer built by hand is checked too.

=============================  =======================================================  ========
set-up                         why                                                      outcome
=============================  =======================================================  ========
fewer than 2 classes           a 1-class softmax always predicts its class: loss 0,      error
                               mIoU 100, nothing learnt (mmsegmentation#2201)
crop larger than most          most of every crop is padding: the network's time goes   warning
pictures                       into pixels that teach nothing
validation of fewer than       its mIoU is the score of one or two pictures             warning
:data:`MIN_VAL_IMAGES`
pictures of several sizes,     a batch stacks pictures of one size (smp#538)            error
batch > 1, no crop
masks padded with a value      the loss would stop at the first padded batch            error
that is no class and not the
ignore index
another band count or a band   the zoo datasets are RGB photos; a band settings file     error
spec for a zoo dataset, bad    that does not fit ``in_channels``, or ``rgb_bands``
band settings, ``rgb_bands``   without RGB weights, would fail later or silently
without RGB weights
folder without class names     the classes are named ``class_0`` ...                    warning
=============================  =======================================================  ========

Mixed sizes are refused rather than padded together: a crop is the recipe's way to one size, and
padding each batch to its largest picture would make what the network sees (and BatchNorm's
statistics) depend on which pictures happen to share a batch.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from ..core.band_spec import BandSpec
from ..core.bands import band_settings
from ..core.pretrained_cfg import PretrainedCfg
from ..data import train_transforms
from ..data.transforms import mask_fill_values, size_pair
from ..hub.input_conv import check_rgb_bands
from .config import SettingError

__all__ = [
    "MIN_VAL_IMAGES",
    "check_augment",
    "check_band_settings",
    "check_batching",
    "check_class_count",
    "check_crop_size",
    "check_mask_fill",
    "check_val_size",
    "generic_classes",
    "one_size_collate",
]

logger = logging.getLogger("pspnet_lib.engine.run")

#: Fewer validation pictures than this get a warning: the mIoU of so few says little.
MIN_VAL_IMAGES = 5


def check_augment(augment: Mapping[str, Any]) -> None:
    """Refuse unknown augmentation settings and a crop size that is not positive, before any work
    (they would fail in a DataLoader worker, hours later or with a multi-line traceback)."""
    params = inspect.signature(train_transforms).parameters
    unknown = sorted(set(augment) - set(params) - {"mean", "std", "ignore_index"})
    if unknown:
        valid = [n for n in params if n not in ("mean", "std", "ignore_index")]
        raise SettingError(
            SettingError.escape(f"unknown augmentation setting(s) {unknown}; expected some of {', '.join(valid)}")
        )
    crop = augment.get("crop_size")
    if crop is not None:
        try:
            size_pair(crop, "crop_size")  # the check train_transforms makes, here before any work
        except ValueError:
            raise SettingError(
                "{crop_size=} must be a positive integer or (height, width) of positive integers, at most 8192 pixels",
                crop_size=crop,
            ) from None


def check_class_count(classes: Sequence[str]) -> None:
    """Refuse a training set-up of fewer than 2 classes, naming the fix for 0/255 binary masks.

    Raises:
        SettingError: naming ``classes``, ``num_classes`` and ``label_map`` (the CLI's
            ``--classes``, ``--num-classes 2`` and ``--label-map 255:1``).
    """
    if len(classes) >= 2:
        return
    name = str(classes[0]) if classes else "object"
    raise SettingError(
        f"a model needs at least 2 classes, and this set-up has {len(classes)} ({SettingError.quote(name)}): a 1-class "
        "softmax always predicts its one class (loss 0, mIoU 100, nothing learnt). Binary masks saved as 0/255 "
        "hold two classes: name both ({classes=}, or both names in classes.txt, or {num_classes=} without a class "
        "file) and map the object's 255 to class 1 with {label_map=}",
        classes=["background", name],
        num_classes=2,
        label_map={255: 1},
    )


def _median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def check_crop_size(crop_size: Any, sizes: Sequence[tuple[int, int]]) -> None:
    """Warn when the training crop is larger than most pictures (``sizes``: ``(height, width)``
    of a sample of them): most of every crop is then padding, which costs time and teaches nothing.
    The warning gives the numbers and a crop that fits the pictures."""
    if crop_size is None or not sizes:
        return
    ch, cw = size_pair(crop_size, "crop_size")
    larger = sum(1 for h, w in sizes if h < ch or w < cw)
    if 2 * larger <= len(sizes):
        return
    mh, mw = _median([h for h, _ in sizes]), _median([w for _, w in sizes])
    padding = 1.0 - min(mh, ch) * min(mw, cw) / (ch * cw)
    fit = (min(ch, max(8, mh // 8 * 8)), min(cw, max(8, mw // 8 * 8)))  # a multiple of the output stride
    flag = str(fit[0]) if fit[0] == fit[1] else f"{fit[0]},{fit[1]}"
    logger.warning(
        "crop_size=%s is larger than %d of the %d pictures read (median %dx%d, HxW): about %.0f%% of each crop "
        "is padding, which slows training down and teaches nothing; crop_size=%s (CLI: --crop-size %s) fits "
        "the pictures",
        [ch, cw],
        larger,
        len(sizes),
        mh,
        mw,
        100 * padding,
        list(fit),
        flag,
    )


def check_batching(augment: Mapping[str, Any], sizes: Sequence[tuple[int, int]], batch_size: int) -> None:
    """Refuse batches that cannot be stacked: no crop, ``batch_size`` > 1, and pictures of several
    sizes (in ``sizes``, or made so by a random scale). ``augment``: :func:`~pspnet_lib.data.train_transforms`
    arguments (its defaults for those not given).

    Raises:
        SettingError: naming ``crop_size`` (the CLI's ``--crop-size``) and ``batch_size``.
    """
    crop_size = augment.get("crop_size")
    scale_range = augment.get("scale_range", inspect.signature(train_transforms).parameters["scale_range"].default)
    if crop_size is not None or batch_size <= 1:
        return
    distinct = sorted(set(sizes))
    if len(distinct) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in distinct[:4]) + (" ..." if len(distinct) > 4 else "")
        why = f"the pictures have {len(distinct)} sizes ({shown}, HxW)"
    elif scale_range is not None:
        why = "the random scale gives every picture its own size"
    else:
        return
    fits = [min(h for h, _ in distinct), min(w for _, w in distinct)] if distinct else [512, 512]
    raise SettingError(
        f"no {{crop_size}} and {{batch_size=}}, but {why}: a batch stacks pictures of one size. Crop them, e.g. "
        "{crop_size=} (fits every picture read), or train one picture per step with a batch size of 1 "
        "(grad_accum keeps the images per step)",
        batch_size=batch_size,
        crop_size=fits,
    )


def check_val_size(count: int, total: int | None = None, val_fraction: float | None = None) -> None:
    """Warn when validation holds fewer than :data:`MIN_VAL_IMAGES` pictures (``total``: pictures of
    the whole folder and ``val_fraction`` the fraction held out, to suggest a larger one)."""
    if count >= MIN_VAL_IMAGES or count == 0:
        return
    hint = "use a larger validation split"
    if val_fraction is not None and total:
        if total >= 2 * MIN_VAL_IMAGES:
            needed = -(-MIN_VAL_IMAGES * 100 // total) / 100  # the fraction, rounded up to a hundredth
            hint = f"hold out at least {MIN_VAL_IMAGES}: val_fraction={needed:g} (CLI: --val-fraction {needed:g})"
        else:
            hint = f"the folder has only {total} pictures; more labelled pictures are the fix"
    logger.warning(
        "validating on %d picture%s%s: the mIoU of so few pictures says little about the model; %s",
        count,
        "" if count == 1 else "s",
        f" (val_fraction={val_fraction:g} of {total})" if val_fraction is not None and total else "",
        hint,
    )


def check_mask_fill(transforms: Any, ignore_index: int, num_classes: int) -> None:
    """Refuse training transforms that pad or rotate masks with a value that is neither the
    ignore index nor a class (e.g. ``train_transforms``' default 255 with ``ignore_index=250``);
    a fill that is a class index is allowed, with a warning (padding then counts as that class).

    Raises:
        ValueError: naming the fill, the ignore index and ``train_transforms(..., ignore_index=...)``.
    """
    for fill in sorted(mask_fill_values(transforms) - {ignore_index}):
        if 0 <= fill < num_classes:
            logger.warning(
                "the training transforms fill padded and rotated-in mask pixels with %d, which is class %d, not the "
                "ignore index %d: those pixels are trained as that class",
                fill,
                fill,
                ignore_index,
            )
            continue
        raise ValueError(
            f"the training transforms fill padded and rotated-in mask pixels with {fill}, but the ignore index is "
            f"{ignore_index} and there are {num_classes} classes, so the loss would stop at the first padded batch; "
            f"build them with train_transforms(..., ignore_index={ignore_index}) (a fill of "
            f"{{tv_tensors.Mask: {ignore_index}}} in your own transforms)"
        )


def one_size_collate(batch: Sequence[Any]) -> Any:
    """``torch.utils.data.default_collate`` that refuses pictures of several sizes with one line
    naming the sizes and the fix, instead of PyTorch's "stack expects each tensor to be equal size"."""
    images = [sample["image"] if isinstance(sample, Mapping) else sample[0] for sample in batch]
    if images and all(isinstance(image, torch.Tensor) for image in images):
        sizes = sorted({tuple(image.shape[-2:]) for image in images})
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
            raise ValueError(
                f"a training batch holds pictures of {len(sizes)} sizes ({shown}, HxW) but a batch stacks pictures of "
                "one size: crop them (train_transforms(crop_size=...); CLI: --crop-size N) or use batch_size=1"
            )
    return default_collate(list(batch))


def generic_classes(data_root: str | os.PathLike, num_classes: int | None, options: dict[str, Any]) -> None:
    """A folder with no class names (no ``classes`` option, no ``classes.txt``) and a known class
    count: name the classes ``class_0`` ... (in ``options``), with a warning."""
    if "classes" in options or not num_classes or os.path.isfile(os.path.join(data_root, "classes.txt")):
        return
    options["classes"] = [f"class_{i}" for i in range(num_classes)]
    logger.warning(
        "no class names for %s (no classes option / --classes, no classes.txt): using class_0 .. class_%d; "
        "write classes.txt (one name per line) to name them",
        data_root,
        num_classes - 1,
    )


def check_band_settings(
    dataset: str,
    model: Mapping[str, Any],
    band_spec: str | os.PathLike | Mapping[str, Any] | None,
    rgb_bands: Sequence[int] | None,
    rgb_weights: str | os.PathLike | None,
) -> tuple[int, dict[str, Any] | None, BandSpec | None]:
    """``(in_channels, band settings, band spec)`` of a run, checked before any work: the settings are
    the ``pretrained_cfg`` entries of ``band_spec`` (:func:`~pspnet_lib.core.bands.band_settings`), the spec
    their ``bands`` entry (None without one).

    Raises:
        SettingError: naming ``in_channels``, ``band_spec`` or ``rgb_bands`` (their flags from the CLI):
            another band count or a band spec for a zoo dataset (folder datasets only), a band
            settings file that is not valid (its message), ``rgb_bands`` without RGB weights to
            place or not three band positions.
    """
    channels = model.get("in_channels") or 3
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise SettingError(f"{{in_channels}} must be a positive integer, got {SettingError.quote(channels)}")
    if dataset != "folder" and (channels != 3 or band_spec is not None):
        raise SettingError(
            "{in_channels} and {band_spec} apply to {dataset=} only (the zoo datasets are RGB photos)", dataset="folder"
        )
    band_cfg = spec = None
    if band_spec is not None:
        try:
            band_cfg = band_settings(band_spec, channels)
        except (OSError, ValueError) as exc:
            raise SettingError("{band_spec}: " + SettingError.escape(exc)) from None
        spec = PretrainedCfg.from_dict(band_cfg, channels).bands
    if rgb_bands is not None:
        if not rgb_weights:
            raise SettingError("{rgb_bands} places RGB weights in the bands: give {weights} or {weights_backbone}")
        try:
            check_rgb_bands(rgb_bands, channels)
        except ValueError as exc:
            raise SettingError("{rgb_bands}: " + SettingError.escape(exc)) from None
    return channels, band_cfg, spec
