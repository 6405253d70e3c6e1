"""The type of a zoo entry: :class:`Weights` (one checkpoint and what it needs to be used) and
torchvision's per-model :class:`WeightsEnum`.

The entries themselves are data (:mod:`pspnet_lib.hub.zoo.table`), turned into ``Weights`` by
:mod:`pspnet_lib.hub.zoo.entries` and looked up through :mod:`pspnet_lib.hub.zoo.registry`.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.constants import IMAGENET_MEAN, IMAGENET_STD
from ...core.pretrained_cfg import PretrainedCfg

__all__ = ["Weights", "WeightsEnum", "sha256_prefix_from_filename"]

_SHA_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Weights:
    """One downloadable checkpoint and everything needed to use it.

    Attributes:
        name: the zoo name (``list_pretrained()``).
        url: where the original checkpoint is published.
        sha256: the leading hex digits of the file's sha256 (from its file name); downloads are
            verified against it.
        format: the checkpoint's layout (see :data:`pspnet_lib.hub.formats.converters.FORMATS`).
        config: :class:`~pspnet_lib.PSPNetConfig` fields of the architecture (for a backbone,
            only the backbone fields).
        meta: ``categories`` (class names), ``palette``, ``dataset``, ``num_classes``,
            ``ignore_index``, ``reduce_zero_label``, ``label_convention``, ``inference`` (the
            protocol of the published single-scale number, keyword arguments of
            :func:`pspnet_lib.inference.modes.infer`), ``tta`` (the ms+flip protocol),
            ``metrics`` (upstream numbers with ``source``), ``license``, ``source``, ``crop_size``,
            ``schedule``, ``upstream_name``, ``mean``/``std`` (on the 0..1 scale); and
            torchvision's fields: ``num_params``, ``_ops`` (GFLOPS of one eval forward at
            ``_ops_size``), ``_file_size`` (MB of the converted safetensors), ``min_size``
            (smallest ``(H, W)`` input), ``recipe`` (the ``pspnet train --recipe`` name that
            reproduces it, or None), ``_docs`` (one paragraph); see :mod:`pspnet_lib.hub.zoo.stats`.
    """

    name: str
    url: str
    sha256: str
    format: str
    config: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """The file name of the original checkpoint (as cached under the torch hub directory)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def task(self) -> str:
        """``"semantic-segmentation"`` for a full PSPNet, ``"backbone"`` for ImageNet weights."""
        return self.meta.get("task", "semantic-segmentation")

    @property
    def cache_stem(self) -> str:
        """``<name>-<sha8>``: the base name of the converted ``.safetensors`` / ``.json`` in the cache."""
        return f"{self.name}-{self.sha256[:8]}"

    def pretrained_cfg(self) -> dict[str, Any]:
        """The ``model.pretrained_cfg`` of a model loaded from these weights (a fresh copy)."""
        meta = copy.deepcopy(dict(self.meta))
        cfg: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "sha256": self.sha256,
            "mean": meta.pop("mean", list(IMAGENET_MEAN)),
            "std": meta.pop("std", list(IMAGENET_STD)),
        }
        categories = meta.pop("categories", None)
        if categories is not None:
            cfg["classes"] = categories
        cfg.update(meta)
        return cfg

    def transforms(self, *, resize: bool = True, antialias: bool = False):
        """The preprocessing these weights expect, as a ``torchvision.transforms.v2`` pipeline.

        Takes a PIL image, a ``uint8`` tensor ``(C, H, W)`` / ``tv_tensors.Image`` (optionally
        with a ``tv_tensors.Mask``, resized with nearest neighbour) and returns the float RGB
        input normalised with ImageNet mean/std.

        Args:
            resize: apply the upstream test resize (keep the aspect ratio and fit the image into
                ``meta["inference"]["resize"]``, e.g. long side <= 2048 and short side <= 512 for
                ADE20K) first. Pass False when an inference routine resizes itself.
            antialias: mmsegmentation resizes with plain bilinear interpolation (OpenCV), so the
                default ``False`` matches the published numbers.
        """
        from .preprocessing import build_transforms

        cfg = PretrainedCfg.from_dict(self.pretrained_cfg(), self.config.get("in_channels", 3), what=self.name)
        return build_transforms(
            resize=cfg.protocol.resize if resize else None, mean=cfg.mean, std=cfg.std, antialias=antialias
        )

    def __repr__(self) -> str:
        return f"Weights({self.name!r}, url={self.url!r})"


class WeightsEnum(enum.Enum):
    """torchvision-style enum of one model's weights (``get_model_weights(name)``).

    Each member's ``value`` is a :class:`Weights`; ``.url``, ``.meta``, ``.transforms()`` and
    ``.config`` forward to it, and ``DEFAULT`` is the weights ``weights="DEFAULT"`` loads.
    """

    @property
    def url(self) -> str:
        return self.value.url

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.value.meta

    @property
    def config(self) -> Mapping[str, Any]:
        return self.value.config

    def transforms(self, **kwargs: Any):
        return self.value.transforms(**kwargs)


def sha256_prefix_from_filename(filename: str) -> str:
    """The hex digits after the last ``-`` of a checkpoint file name (``...-15a8b914.pth``)."""
    match = _SHA_RE.search(filename)
    if not match:
        raise ValueError(f"no sha256 prefix in file name {filename!r} (expected '...-<hex>.<ext>')")
    return match.group(1)
