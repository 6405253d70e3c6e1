"""The weights zoo: every released PSPNet checkpoint this library loads, with what it needs to be used.

Names follow ``pspnet_<backbone>_<dataset>-<crop>-<schedule>``:

* ``<backbone>``: ``r18-d8``, ``r50-d8``, ``r101-d8`` (mmsegmentation's ResNetV1c: deep 3x3 stem,
  output stride 8), ``r18b-d8`` ... (the ``b`` models: torchvision's 7x7 stem), ``r50-d32`` /
  ``r50b-d32`` (output stride 32, layer3/4 strided *and* dilated), with a suffix ``-rsb``
  (ResNet-strikes-back ImageNet pre-training, AdamW) or ``-fp16`` (trained with mixed precision);
* ``<dataset>``: a key of :data:`~pspnet_lib.data.metadata.DATASETS`;
* ``<crop>``: the training crop; ``<schedule>``: training iterations.

Every ``pspnet_<backbone>_<dataset>`` without crop and schedule is an alias of the entry with
the best single-scale mIoU (e.g. ``pspnet_r50-d8_ade20k`` = ``pspnet_r50-d8_ade20k-512x512-160k``).
ImageNet backbones are ``resnet{18,50,101}_v1c`` (mmsegmentation's pre-training of the deep-stem
ResNets) and ``resnet{18,50,101}_torchvision`` (torchvision's ``IMAGENET1K_V1``).

Each entry is a :class:`Weights`; ``get_weights(name).meta`` holds the class names under
``"categories"`` (as torchvision's weights enums do), and ``.transforms()`` the preprocessing.
The table below is data: one row per checkpoint, with its upstream path, numbers and protocol.
"""

from __future__ import annotations

import copy
import difflib
import enum
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.constants import IMAGENET_MEAN, IMAGENET_STD
from ..core.pretrained_cfg import PretrainedCfg
from ..data.metadata import DATASETS
from ..models.variants import VARIANTS, get_variant, model_name, variant_of_code
from ._zoo_stats import STATS

__all__ = [
    "Weights",
    "get_weights",
    "list_pretrained",
    "register_weights",
    "unregister_weights",
    "resolve_name",
    "WeightsEnum",
    "get_weight",
    "get_model_weights",
    "model_of",
    "find_weights_for_file",
]

MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/"
MMSEG_ZOO = "https://github.com/open-mmlab/mmsegmentation/tree/main/configs/pspnet"
MMSEG_CONFIG = "https://github.com/open-mmlab/mmsegmentation/blob/main/configs/pspnet/{}.py"
MMSEG_LICENSE = "Apache-2.0"
#: mmsegmentation's multi-scale + flip test: these ratios of the resized image, each also mirrored.
MMSEG_TTA = {"scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}

_SHA_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Weights:
    """One downloadable checkpoint and everything needed to use it.

    Attributes:
        name: the zoo name (``list_pretrained()``).
        url: where the original checkpoint is published.
        sha256: the leading hex digits of the file's sha256 (from its file name); downloads are
            verified against it.
        format: the checkpoint's layout (see :data:`pspnet_lib.hub.converters.FORMATS`).
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
            reproduces it, or None), ``_docs`` (one paragraph); see :mod:`pspnet_lib.hub.zoo_stats`.
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


# --- The mmsegmentation PSPNet zoo (configs/pspnet/README.md and metafile.yaml, 1.x) ---

# Test-time protocol per (dataset, crop) from the dataset base configs and the PSPNet configs.
_PROTOCOLS: dict[tuple[str, str], dict[str, Any]] = {
    ("cityscapes", "512x1024"): {"mode": "whole", "resize": [2048, 1024]},
    ("cityscapes", "769x769"): {"mode": "slide", "resize": [2049, 1025], "crop": [769, 769], "stride": [513, 513]},
    ("ade20k", "512x512"): {"mode": "whole", "resize": [2048, 512]},
    ("voc12aug", "512x512"): {"mode": "whole", "resize": [2048, 512]},
    ("pascal-context", "480x480"): {"mode": "slide", "resize": [520, 520], "crop": [480, 480], "stride": [320, 320]},
    ("pascal-context-59", "480x480"): {"mode": "slide", "resize": [520, 520], "crop": [480, 480], "stride": [320, 320]},
    ("coco-stuff10k", "512x512"): {"mode": "whole", "resize": [2048, 512]},
    ("coco-stuff164k", "512x512"): {"mode": "whole", "resize": [2048, 512]},
    ("loveda", "512x512"): {"mode": "whole", "resize": [1024, 1024]},
    ("potsdam", "512x512"): {"mode": "whole", "resize": [512, 512]},
    ("vaihingen", "512x512"): {"mode": "whole", "resize": [512, 512]},
    ("isaid", "896x896"): {"mode": "whole", "resize": [896, 896]},
}

# (backbone code, dataset, crop, schedule, mIoU, mIoU ms+flip, 1.x config name, checkpoint path under MMSEG_BASE)
_MMSEG_ROWS: list[tuple[str, str, str, str, float, float | None, str, str]] = [
    # Cityscapes (19 classes)
    (
        "r50-d8",
        "cityscapes",
        "512x1024",
        "40k",
        77.85,
        79.18,
        "pspnet_r50-d8_4xb2-40k_cityscapes-512x1024",
        "pspnet_r50-d8_512x1024_40k_cityscapes/pspnet_r50-d8_512x1024_40k_cityscapes_20200605_003338-2966598c.pth",
    ),
    (
        "r101-d8",
        "cityscapes",
        "512x1024",
        "40k",
        78.34,
        79.74,
        "pspnet_r101-d8_4xb2-40k_cityscapes-512x1024",
        "pspnet_r101-d8_512x1024_40k_cityscapes/pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth",
    ),
    (
        "r50-d8",
        "cityscapes",
        "769x769",
        "40k",
        78.26,
        79.88,
        "pspnet_r50-d8_4xb2-40k_cityscapes-769x769",
        "pspnet_r50-d8_769x769_40k_cityscapes/pspnet_r50-d8_769x769_40k_cityscapes_20200606_112725-86638686.pth",
    ),
    (
        "r101-d8",
        "cityscapes",
        "769x769",
        "40k",
        79.08,
        80.28,
        "pspnet_r101-d8_4xb2-40k_cityscapes-769x769",
        "pspnet_r101-d8_769x769_40k_cityscapes/pspnet_r101-d8_769x769_40k_cityscapes_20200606_112753-61c6f5be.pth",
    ),
    (
        "r18-d8",
        "cityscapes",
        "512x1024",
        "80k",
        74.87,
        76.04,
        "pspnet_r18-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r18-d8_512x1024_80k_cityscapes/pspnet_r18-d8_512x1024_80k_cityscapes_20201225_021458-09ffa746.pth",
    ),
    (
        "r50-d8",
        "cityscapes",
        "512x1024",
        "80k",
        78.55,
        79.79,
        "pspnet_r50-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r50-d8_512x1024_80k_cityscapes/pspnet_r50-d8_512x1024_80k_cityscapes_20200606_112131-2376f12b.pth",
    ),
    (
        "r50b-d8-rsb",
        "cityscapes",
        "512x1024",
        "80k",
        78.47,
        79.45,
        "pspnet_r50-d8-rsb_4xb2-adamw-80k_cityscapes-512x1024",
        "pspnet_r50-d8_512x1024_80k_cityscapes/pspnet_r50-d8_rsb-pretrain_512x1024_adamw_80k_cityscapes_20220315_123238-588c30be.pth",
    ),
    (
        "r101-d8",
        "cityscapes",
        "512x1024",
        "80k",
        79.76,
        81.01,
        "pspnet_r101-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth",
    ),
    (
        "r101-d8-fp16",
        "cityscapes",
        "512x1024",
        "80k",
        79.46,
        None,
        "pspnet_r101-d8_4xb2-amp-80k_cityscapes-512x1024",
        "pspnet_r101-d8_fp16_512x1024_80k_cityscapes/pspnet_r101-d8_fp16_512x1024_80k_cityscapes_20200717_230919-a0875e5c.pth",
    ),
    (
        "r18-d8",
        "cityscapes",
        "769x769",
        "80k",
        75.90,
        77.86,
        "pspnet_r18-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r18-d8_769x769_80k_cityscapes/pspnet_r18-d8_769x769_80k_cityscapes_20201225_021458-3deefc62.pth",
    ),
    (
        "r50-d8",
        "cityscapes",
        "769x769",
        "80k",
        79.59,
        80.69,
        "pspnet_r50-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r50-d8_769x769_80k_cityscapes/pspnet_r50-d8_769x769_80k_cityscapes_20200606_210121-5ccf03dd.pth",
    ),
    # (metafile.yaml misspells this entry's host; README and pspnet.yml give download.openmmlab.com)
    (
        "r101-d8",
        "cityscapes",
        "769x769",
        "80k",
        79.77,
        81.06,
        "pspnet_r101-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r101-d8_769x769_80k_cityscapes/pspnet_r101-d8_769x769_80k_cityscapes_20200606_225055-dba412fa.pth",
    ),
    (
        "r18b-d8",
        "cityscapes",
        "512x1024",
        "80k",
        74.23,
        75.79,
        "pspnet_r18b-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r18b-d8_512x1024_80k_cityscapes/pspnet_r18b-d8_512x1024_80k_cityscapes_20201226_063116-26928a60.pth",
    ),
    (
        "r50b-d8",
        "cityscapes",
        "512x1024",
        "80k",
        78.22,
        79.46,
        "pspnet_r50b-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r50b-d8_512x1024_80k_cityscapes/pspnet_r50b-d8_512x1024_80k_cityscapes_20201225_094315-6344287a.pth",
    ),
    (
        "r101b-d8",
        "cityscapes",
        "512x1024",
        "80k",
        79.69,
        80.79,
        "pspnet_r101b-d8_4xb2-80k_cityscapes-512x1024",
        "pspnet_r101b-d8_512x1024_80k_cityscapes/pspnet_r101b-d8_512x1024_80k_cityscapes_20201226_170012-3a4d38ab.pth",
    ),
    (
        "r18b-d8",
        "cityscapes",
        "769x769",
        "80k",
        74.92,
        76.90,
        "pspnet_r18b-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r18b-d8_769x769_80k_cityscapes/pspnet_r18b-d8_769x769_80k_cityscapes_20201226_080942-bf98d186.pth",
    ),
    (
        "r50b-d8",
        "cityscapes",
        "769x769",
        "80k",
        78.50,
        79.96,
        "pspnet_r50b-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r50b-d8_769x769_80k_cityscapes/pspnet_r50b-d8_769x769_80k_cityscapes_20201225_094316-4c643cf6.pth",
    ),
    (
        "r101b-d8",
        "cityscapes",
        "769x769",
        "80k",
        78.87,
        80.04,
        "pspnet_r101b-d8_4xb2-80k_cityscapes-769x769",
        "pspnet_r101b-d8_769x769_80k_cityscapes/pspnet_r101b-d8_769x769_80k_cityscapes_20201226_171823-f0e7c293.pth",
    ),
    # (metafile.yaml gives this row the R-50b-D32 config name; the R-50-D32 config is the one below)
    (
        "r50-d32",
        "cityscapes",
        "512x1024",
        "80k",
        73.88,
        76.85,
        "pspnet_r50-d32_4xb2-80k_cityscapes-512x1024",
        "pspnet_r50-d32_512x1024_80k_cityscapes/pspnet_r50-d32_512x1024_80k_cityscapes_20220316_224840-9092b254.pth",
    ),
    (
        "r50b-d32-rsb",
        "cityscapes",
        "512x1024",
        "80k",
        74.09,
        77.18,
        "pspnet_r50-d32_rsb_4xb2-adamw-80k_cityscapes-512x1024",
        "pspnet_r50-d32_rsb-pretrain_512x1024_adamw_80k_cityscapes/pspnet_r50-d32_rsb-pretrain_512x1024_adamw_80k_cityscapes_20220316_141229-dd9c9610.pth",
    ),
    (
        "r50b-d32",
        "cityscapes",
        "512x1024",
        "80k",
        72.61,
        75.51,
        "pspnet_r50b-d32_4xb2-80k_cityscapes-512x1024",
        "pspnet_r50b-d32_512x1024_80k_cityscapes/pspnet_r50b-d32_512x1024_80k_cityscapes_20220311_152152-23bcaf8c.pth",
    ),
    # ADE20K (150 classes)
    (
        "r50-d8",
        "ade20k",
        "512x512",
        "80k",
        41.13,
        41.94,
        "pspnet_r50-d8_4xb4-80k_ade20k-512x512",
        "pspnet_r50-d8_512x512_80k_ade20k/pspnet_r50-d8_512x512_80k_ade20k_20200615_014128-15a8b914.pth",
    ),
    (
        "r101-d8",
        "ade20k",
        "512x512",
        "80k",
        43.57,
        44.35,
        "pspnet_r101-d8_4xb4-80k_ade20k-512x512",
        "pspnet_r101-d8_512x512_80k_ade20k/pspnet_r101-d8_512x512_80k_ade20k_20200614_031423-b6e782f0.pth",
    ),
    (
        "r50-d8",
        "ade20k",
        "512x512",
        "160k",
        42.48,
        43.44,
        "pspnet_r50-d8_4xb4-160k_ade20k-512x512",
        "pspnet_r50-d8_512x512_160k_ade20k/pspnet_r50-d8_512x512_160k_ade20k_20200615_184358-1890b0bd.pth",
    ),
    (
        "r101-d8",
        "ade20k",
        "512x512",
        "160k",
        44.39,
        45.35,
        "pspnet_r101-d8_4xb4-160k_ade20k-512x512",
        "pspnet_r101-d8_512x512_160k_ade20k/pspnet_r101-d8_512x512_160k_ade20k_20200615_100650-967c316f.pth",
    ),
    # Pascal VOC 2012 + aug (21 classes)
    (
        "r50-d8",
        "voc12aug",
        "512x512",
        "20k",
        76.78,
        77.61,
        "pspnet_r50-d8_4xb4-20k_voc12aug-512x512",
        "pspnet_r50-d8_512x512_20k_voc12aug/pspnet_r50-d8_512x512_20k_voc12aug_20200617_101958-ed5dfbd9.pth",
    ),
    (
        "r101-d8",
        "voc12aug",
        "512x512",
        "20k",
        78.47,
        79.25,
        "pspnet_r101-d8_4xb4-20k_voc12aug-512x512",
        "pspnet_r101-d8_512x512_20k_voc12aug/pspnet_r101-d8_512x512_20k_voc12aug_20200617_102003-4aef3c9a.pth",
    ),
    (
        "r50-d8",
        "voc12aug",
        "512x512",
        "40k",
        77.29,
        78.48,
        "pspnet_r50-d8_4xb4-40k_voc12aug-512x512",
        "pspnet_r50-d8_512x512_40k_voc12aug/pspnet_r50-d8_512x512_40k_voc12aug_20200613_161222-ae9c1b8c.pth",
    ),
    (
        "r101-d8",
        "voc12aug",
        "512x512",
        "40k",
        78.52,
        79.57,
        "pspnet_r101-d8_4xb4-40k_voc12aug-512x512",
        "pspnet_r101-d8_512x512_40k_voc12aug/pspnet_r101-d8_512x512_40k_voc12aug_20200613_161222-bc933b18.pth",
    ),
    # Pascal Context (60 classes with background; 59 without)
    (
        "r101-d8",
        "pascal-context",
        "480x480",
        "40k",
        46.60,
        47.78,
        "pspnet_r101-d8_4xb4-40k_pascal-context-480x480",
        "pspnet_r101-d8_480x480_40k_pascal_context/pspnet_r101-d8_480x480_40k_pascal_context_20200911_211210-bf0f5d7c.pth",
    ),
    (
        "r101-d8",
        "pascal-context",
        "480x480",
        "80k",
        46.03,
        47.15,
        "pspnet_r101-d8_4xb4-80k_pascal-context-480x480",
        "pspnet_r101-d8_480x480_80k_pascal_context/pspnet_r101-d8_480x480_80k_pascal_context_20200911_190530-c86d6233.pth",
    ),
    (
        "r101-d8",
        "pascal-context-59",
        "480x480",
        "40k",
        52.02,
        53.54,
        "pspnet_r101-d8_4xb4-40k_pascal-context-59-480x480",
        "pspnet_r101-d8_480x480_40k_pascal_context_59/pspnet_r101-d8_480x480_40k_pascal_context_59_20210416_114524-86d44cd4.pth",
    ),
    (
        "r101-d8",
        "pascal-context-59",
        "480x480",
        "80k",
        52.47,
        53.99,
        "pspnet_r101-d8_4xb4-80k_pascal-context-59-480x480",
        "pspnet_r101-d8_480x480_80k_pascal_context_59/pspnet_r101-d8_480x480_80k_pascal_context_59_20210416_114418-fa6caaa2.pth",
    ),
    # COCO-Stuff 10k / 164k (171 classes)
    (
        "r50-d8",
        "coco-stuff10k",
        "512x512",
        "20k",
        35.69,
        36.62,
        "pspnet_r50-d8_4xb4-20k_coco-stuff10k-512x512",
        "pspnet_r50-d8_512x512_4x4_20k_coco-stuff10k/pspnet_r50-d8_512x512_4x4_20k_coco-stuff10k_20210820_203258-b88df27f.pth",
    ),
    (
        "r101-d8",
        "coco-stuff10k",
        "512x512",
        "20k",
        37.26,
        38.52,
        "pspnet_r101-d8_4xb4-20k_coco-stuff10k-512x512",
        "pspnet_r101-d8_512x512_4x4_20k_coco-stuff10k/pspnet_r101-d8_512x512_4x4_20k_coco-stuff10k_20210820_232135-76aae482.pth",
    ),
    (
        "r50-d8",
        "coco-stuff10k",
        "512x512",
        "40k",
        36.33,
        37.24,
        "pspnet_r50-d8_4xb4-40k_coco-stuff10k-512x512",
        "pspnet_r50-d8_512x512_4x4_40k_coco-stuff10k/pspnet_r50-d8_512x512_4x4_40k_coco-stuff10k_20210821_030857-92e2902b.pth",
    ),
    (
        "r101-d8",
        "coco-stuff10k",
        "512x512",
        "40k",
        37.76,
        38.86,
        "pspnet_r101-d8_4xb4-40k_coco-stuff10k-512x512",
        "pspnet_r101-d8_512x512_4x4_40k_coco-stuff10k/pspnet_r101-d8_512x512_4x4_40k_coco-stuff10k_20210821_014022-831aec95.pth",
    ),
    (
        "r50-d8",
        "coco-stuff164k",
        "512x512",
        "80k",
        38.80,
        39.19,
        "pspnet_r50-d8_4xb4-80k_coco-stuff164k-512x512",
        "pspnet_r50-d8_512x512_4x4_80k_coco-stuff164k/pspnet_r50-d8_512x512_4x4_80k_coco-stuff164k_20210707_152034-0e41b2db.pth",
    ),
    (
        "r101-d8",
        "coco-stuff164k",
        "512x512",
        "80k",
        40.34,
        40.79,
        "pspnet_r101-d8_4xb4-80k_coco-stuff164k-512x512",
        "pspnet_r101-d8_512x512_4x4_80k_coco-stuff164k/pspnet_r101-d8_512x512_4x4_80k_coco-stuff164k_20210707_152034-7eb41789.pth",
    ),
    (
        "r50-d8",
        "coco-stuff164k",
        "512x512",
        "160k",
        39.64,
        39.97,
        "pspnet_r50-d8_4xb4-160k_coco-stuff164k-512x512",
        "pspnet_r50-d8_512x512_4x4_160k_coco-stuff164k/pspnet_r50-d8_512x512_4x4_160k_coco-stuff164k_20210707_152004-51276a57.pth",
    ),
    (
        "r101-d8",
        "coco-stuff164k",
        "512x512",
        "160k",
        41.28,
        41.66,
        "pspnet_r101-d8_4xb4-160k_coco-stuff164k-512x512",
        "pspnet_r101-d8_512x512_4x4_160k_coco-stuff164k/pspnet_r101-d8_512x512_4x4_160k_coco-stuff164k_20210707_152004-4af9621b.pth",
    ),
    (
        "r50-d8",
        "coco-stuff164k",
        "512x512",
        "320k",
        40.53,
        40.75,
        "pspnet_r50-d8_4xb4-320k_coco-stuff164k-512x512",
        "pspnet_r50-d8_512x512_4x4_320k_coco-stuff164k/pspnet_r50-d8_512x512_4x4_320k_coco-stuff164k_20210707_152004-be9610cc.pth",
    ),
    (
        "r101-d8",
        "coco-stuff164k",
        "512x512",
        "320k",
        41.95,
        42.42,
        "pspnet_r101-d8_4xb4-320k_coco-stuff164k-512x512",
        "pspnet_r101-d8_512x512_4x4_320k_coco-stuff164k/pspnet_r101-d8_512x512_4x4_320k_coco-stuff164k_20210707_152004-72220c60.pth",
    ),
    # Remote sensing: LoveDA (7), Potsdam (6), Vaihingen (6), iSAID (16)
    (
        "r18-d8",
        "loveda",
        "512x512",
        "80k",
        48.62,
        47.57,
        "pspnet_r18-d8_4xb4-80k_loveda-512x512",
        "pspnet_r18-d8_512x512_80k_loveda/pspnet_r18-d8_512x512_80k_loveda_20211105_052100-b97697f1.pth",
    ),
    (
        "r50-d8",
        "loveda",
        "512x512",
        "80k",
        50.46,
        50.19,
        "pspnet_r50-d8_4xb4-80k_loveda-512x512",
        "pspnet_r50-d8_512x512_80k_loveda/pspnet_r50-d8_512x512_80k_loveda_20211104_155728-88610f9f.pth",
    ),
    (
        "r101-d8",
        "loveda",
        "512x512",
        "80k",
        51.86,
        51.34,
        "pspnet_r101-d8_4xb4-80k_loveda-512x512",
        "pspnet_r101-d8_512x512_80k_loveda/pspnet_r101-d8_512x512_80k_loveda_20211104_153212-1c06c6a8.pth",
    ),
    (
        "r18-d8",
        "potsdam",
        "512x512",
        "80k",
        77.09,
        78.30,
        "pspnet_r18-d8_4xb4-80k_potsdam-512x512",
        "pspnet_r18-d8_4x4_512x512_80k_potsdam/pspnet_r18-d8_4x4_512x512_80k_potsdam_20211220_125612-7cd046e1.pth",
    ),
    (
        "r50-d8",
        "potsdam",
        "512x512",
        "80k",
        78.12,
        78.98,
        "pspnet_r50-d8_4xb4-80k_potsdam-512x512",
        "pspnet_r50-d8_4x4_512x512_80k_potsdam/pspnet_r50-d8_4x4_512x512_80k_potsdam_20211219_043541-2dd5fe67.pth",
    ),
    (
        "r101-d8",
        "potsdam",
        "512x512",
        "80k",
        78.62,
        79.47,
        "pspnet_r101-d8_4xb4-80k_potsdam-512x512",
        "pspnet_r101-d8_4x4_512x512_80k_potsdam/pspnet_r101-d8_4x4_512x512_80k_potsdam_20211220_125612-aed036c4.pth",
    ),
    (
        "r18-d8",
        "vaihingen",
        "512x512",
        "80k",
        71.46,
        73.36,
        "pspnet_r18-d8_4xb4-80k_vaihingen-512x512",
        "pspnet_r18-d8_4x4_512x512_80k_vaihingen/pspnet_r18-d8_4x4_512x512_80k_vaihingen_20211228_160355-52a8a6f6.pth",
    ),
    (
        "r50-d8",
        "vaihingen",
        "512x512",
        "80k",
        72.36,
        73.75,
        "pspnet_r50-d8_4xb4-80k_vaihingen-512x512",
        "pspnet_r50-d8_4x4_512x512_80k_vaihingen/pspnet_r50-d8_4x4_512x512_80k_vaihingen_20211228_160355-382f8f5b.pth",
    ),
    (
        "r101-d8",
        "vaihingen",
        "512x512",
        "80k",
        72.61,
        74.18,
        "pspnet_r101-d8_4xb4-80k_vaihingen-512x512",
        "pspnet_r101-d8_4x4_512x512_80k_vaihingen/pspnet_r101-d8_4x4_512x512_80k_vaihingen_20211231_230806-8eba0a09.pth",
    ),
    (
        "r18-d8",
        "isaid",
        "896x896",
        "80k",
        60.22,
        61.25,
        "pspnet_r18-d8_4xb4-80k_isaid-896x896",
        "pspnet_r18-d8_4x4_896x896_80k_isaid/pspnet_r18-d8_4x4_896x896_80k_isaid_20220110_180526-e84c0b6a.pth",
    ),
    (
        "r50-d8",
        "isaid",
        "896x896",
        "80k",
        65.36,
        66.48,
        "pspnet_r50-d8_4xb4-80k_isaid-896x896",
        "pspnet_r50-d8_4x4_896x896_80k_isaid/pspnet_r50-d8_4x4_896x896_80k_isaid_20220110_180629-1f21dc32.pth",
    ),
]

# ImageNet backbones: (name, url, format, depth, stem, top-1 accuracy or None, license, source)
_BACKBONE_ROWS: list[tuple[str, str, str, int, str, float | None, str, str]] = [
    (
        "resnet18_v1c",
        "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
        "mmseg_backbone",
        18,
        "deep",
        None,
        "Apache-2.0",
        "https://github.com/open-mmlab/mmcv (open-mmlab://resnet18_v1c)",
    ),
    (
        "resnet50_v1c",
        "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
        "mmseg_backbone",
        50,
        "deep",
        None,
        "Apache-2.0",
        "https://github.com/open-mmlab/mmcv (open-mmlab://resnet50_v1c)",
    ),
    (
        "resnet101_v1c",
        "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
        "mmseg_backbone",
        101,
        "deep",
        None,
        "Apache-2.0",
        "https://github.com/open-mmlab/mmcv (open-mmlab://resnet101_v1c)",
    ),
    (
        "resnet18_torchvision",
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "torchvision",
        18,
        "standard",
        69.758,
        "BSD-3-Clause",
        "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet18.html",
    ),
    (
        "resnet50_torchvision",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "torchvision",
        50,
        "standard",
        76.130,
        "BSD-3-Clause",
        "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html",
    ),
    (
        "resnet101_torchvision",
        "https://download.pytorch.org/models/resnet101-63fe2227.pth",
        "torchvision",
        101,
        "standard",
        77.374,
        "BSD-3-Clause",
        "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet101.html",
    ),
]


def sha256_prefix_from_filename(filename: str) -> str:
    """The hex digits after the last ``-`` of a checkpoint file name (``...-15a8b914.pth``)."""
    match = _SHA_RE.search(filename)
    if not match:
        raise ValueError(f"no sha256 prefix in file name {filename!r} (expected '...-<hex>.<ext>')")
    return match.group(1)


def _architecture(code: str, num_classes: int, crop: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "stem_channels": 64,
        "contract_dilation": True,
        "dilations": None,
        **variant_of_code(code).architecture,
        "num_classes": num_classes,
        "aux": True,
        # the 769x769 Cityscapes configs set align_corners=True on both heads
        "align_corners": crop == "769x769",
    }
    return config


#: The ``pspnet train --recipe`` that reproduces an entry (mmsegmentation's schedules of the plain
#: R-xx-D8 models; with ``--backbone``/``--preset`` for other depths and stems). rsb (AdamW, RSB
#: pre-training), fp16 and the D32 models have none.
_RECIPES: dict[tuple[str, str, str], str] = {
    ("voc12aug", "512x512", "20k"): "voc-mmseg-20k",
    ("voc12aug", "512x512", "40k"): "voc-mmseg-40k",
    ("ade20k", "512x512", "80k"): "ade20k-mmseg-80k",
    ("ade20k", "512x512", "160k"): "ade20k-mmseg-160k",
    ("cityscapes", "512x1024", "40k"): "cityscapes-mmseg-40k",
    ("cityscapes", "512x1024", "80k"): "cityscapes-mmseg-80k",
    ("cityscapes", "769x769", "40k"): "cityscapes-mmseg-769-40k",
    ("cityscapes", "769x769", "80k"): "cityscapes-mmseg-769-80k",
}


def _docs(
    code: str, dataset_title: str, crop: str, schedule: str, miou: float, miou_ms: float | None, recipe: str | None
) -> str:
    variant = variant_of_code(code)
    ms = f", {miou_ms:.2f} with multi-scale + flip" if miou_ms is not None else ""
    how = ""
    if recipe:
        arch = variant.architecture
        flags = [f"--recipe {recipe}"]
        if arch["backbone"] != "resnet50":
            flags.append(f"--backbone {arch['backbone']}")
        if arch["stem"] == "standard":
            flags.append("--preset mmseg-b")
        how = f" Reproduce with `pspnet train {' '.join(flags)}`."
    return (
        f"PSPNet {variant.description}, trained by mmsegmentation on {dataset_title} with {crop} crops for "
        f"{schedule} iterations: {miou:.2f} mIoU (single scale){ms} on the validation set, as published upstream." + how
    )


def _mmseg_entry(row: tuple) -> Weights:
    code, dataset_key, crop, schedule, miou, miou_ms, upstream, path = row
    dataset = DATASETS[dataset_key]
    recipe = _RECIPES.get((dataset_key, crop, schedule)) if code.endswith("-d8") else None
    name = f"pspnet_{code}_{dataset_key}-{crop}-{schedule}"
    url = MMSEG_BASE + path
    h, w = (int(v) for v in crop.split("x"))
    meta = {
        "task": "semantic-segmentation",
        "dataset": dataset_key,
        "dataset_title": dataset.title,
        "num_classes": dataset.num_classes,
        "categories": list(dataset.classes),
        "palette": [list(c) for c in dataset.palette],
        "ignore_index": dataset.ignore_index,
        "reduce_zero_label": dataset.reduce_zero_label,
        "label_convention": dataset.label_convention,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "crop_size": [h, w],
        "schedule": schedule,
        "inference": copy.deepcopy(_PROTOCOLS[(dataset_key, crop)]),
        "tta": copy.deepcopy(MMSEG_TTA),
        "metrics": {
            "mIoU": miou,
            "mIoU_ms_flip": miou_ms,
            "split": "val",
            "source": MMSEG_ZOO,
        },
        "upstream_name": upstream,
        "upstream_config": MMSEG_CONFIG.format(upstream),
        "license": MMSEG_LICENSE,
        "source": MMSEG_ZOO,
        "model": model_name(variant_of_code(code).code),
        # Counted (not copied): see pspnet_lib.hub.zoo_stats; None until the table is regenerated.
        "num_params": STATS.get(name, {}).get("num_params"),
        "_ops": STATS.get(name, {}).get("_ops"),
        "_ops_size": STATS.get(name, {}).get("_ops_size"),
        "_file_size": STATS.get(name, {}).get("_file_size"),
        # The model takes any H, W >= 1 (adaptive pooling repeats values below the largest bin).
        "min_size": (1, 1),
        "recipe": recipe,
        "_docs": _docs(code, dataset.title, crop, schedule, miou, miou_ms, recipe),
    }
    return Weights(
        name, url, sha256_prefix_from_filename(path), "mmseg", _architecture(code, dataset.num_classes, crop), meta
    )


def _backbone_entry(row: tuple) -> Weights:
    name, url, fmt, depth, stem, top1, license, source = row
    config = {"backbone": f"resnet{depth}", "stem": stem, "stem_channels": 64}
    meta = {
        "task": "backbone",
        "dataset": "imagenet-1k",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "metrics": {"top1": top1, "source": source} if top1 is not None else {},
        "license": license,
        "source": source,
    }
    return Weights(name, url, sha256_prefix_from_filename(url), fmt, config, meta)


_REGISTRY: dict[str, Weights] = {}
_ALIASES: dict[str, str] = {}


def register_weights(weights: Weights, *, aliases: tuple[str, ...] = (), overwrite: bool = False) -> Weights:
    """Add an entry (e.g. your own published checkpoint) to the zoo.

    ``load_pretrained(weights.name)`` then downloads, verifies, converts and caches it like the
    built-in entries. Raises ``ValueError`` if the name is taken, unless ``overwrite``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", weights.name):
        raise ValueError(f"invalid weights name {weights.name!r}: use letters, digits, '_', '-', '.'")
    if not re.fullmatch(r"[0-9a-f]{8,64}", weights.sha256):
        raise ValueError(
            f"weights {weights.name!r}: sha256 must be 8 to 64 lowercase hex digits, got {weights.sha256!r}"
        )
    for name in (weights.name, *aliases):
        if not overwrite and (name in _REGISTRY or name in _ALIASES):
            raise ValueError(f"a zoo entry named {name!r} already exists; pass overwrite=True to replace it")
    _REGISTRY[weights.name] = weights
    _ALIASES.pop(weights.name, None)
    for alias in aliases:
        _ALIASES[alias] = weights.name
    return weights


def unregister_weights(name: str) -> None:
    """Remove an entry added with :func:`register_weights` (and the aliases pointing to it)."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name or a == name]:
        del _ALIASES[alias]


def _register_builtin() -> None:
    best: dict[str, Weights] = {}
    for row in _MMSEG_ROWS:
        weights = register_weights(_mmseg_entry(row))
        alias = weights.name.rsplit("-", 2)[0]  # drop "-<crop>-<schedule>"
        if alias not in best or weights.meta["metrics"]["mIoU"] > best[alias].meta["metrics"]["mIoU"]:
            best[alias] = weights
    for alias, weights in best.items():
        _ALIASES[alias] = weights.name
    for row in _BACKBONE_ROWS:
        register_weights(_backbone_entry(row))


_register_builtin()


def resolve_name(name: str) -> str:
    """The full zoo name of ``name`` (itself, or the entry an alias points to)."""
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    candidates = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown pretrained weights {name!r}.{hint} See pspnet_lib.list_pretrained() or `pspnet list`.")


def find_weights_for_file(filename: str | None = None, sha256: str | None = None) -> tuple[Weights, str] | None:
    """The zoo entry whose upstream file this is, and how it was recognised, or None.

    Args:
        filename: the file's name (no folder), compared with each entry's upstream file name
            (e.g. ``pspnet_r50-d8_769x769_40k_cityscapes_20200606_112725-86638686.pth``).
        sha256: the file's full sha256 hex digest, compared with each entry's recorded prefix.

    Returns ``(weights, "file name")`` or ``(weights, "sha256")``; the name is tried first.
    """
    entries = list(_REGISTRY.values())
    if filename:
        for weights in entries:
            if weights.filename == filename:
                return weights, "file name"
    if sha256:
        digest = sha256.lower()
        for weights in entries:
            if digest.startswith(weights.sha256):
                return weights, "sha256"
    return None


def get_weights(name: str) -> Weights:
    """The :class:`Weights` entry of a zoo name or alias.

    Example::

        w = get_weights("pspnet_r50-d8_ade20k-512x512-80k")
        w.meta["categories"][:3]     # ['wall', 'building', 'sky']
        preprocess = w.transforms()  # resize + float + ImageNet normalisation
    """
    if isinstance(name, Weights):
        return name
    if not isinstance(name, str):
        raise TypeError(f"get_weights expects a zoo name (str), got {type(name).__name__}")
    return _REGISTRY[resolve_name(name)]


def list_pretrained(filter: str | None = None, *, task: str | None = None, include_aliases: bool = False) -> list[str]:
    """Names of the zoo entries, sorted.

    Args:
        filter: a shell-style pattern (``"*ade20k*"``, ``"pspnet_r18*"``); case-insensitive.
        task: ``"semantic-segmentation"`` or ``"backbone"`` to list one kind only.
        include_aliases: also list the short aliases (``pspnet_r50-d8_ade20k``).
    """
    if task is not None and task not in ("semantic-segmentation", "backbone"):
        raise ValueError(f"unknown task {task!r}; expected 'semantic-segmentation' or 'backbone'")
    names = [n for n, w in _REGISTRY.items() if task is None or w.task == task]
    if include_aliases:
        names += [a for a, target in _ALIASES.items() if task is None or _REGISTRY[target].task == task]
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), filter.lower())]
    return sorted(names)


def aliases_of(name: str) -> list[str]:
    """Aliases that point to the entry ``name``."""
    return sorted(a for a, target in _ALIASES.items() if target == name)


def get_weight(name: str | Weights | WeightsEnum) -> Weights:
    """torchvision's ``get_weight``: the :class:`Weights` of a zoo name, alias or ``"<Enum>.<MEMBER>"``.

    ``get_weight("pspnet_r50-d8_ade20k")``, ``get_weight("PSPNet_R50_D8_Weights.DEFAULT")`` and
    ``get_weight(get_model_weights("pspnet_r50_d8").DEFAULT)`` all work. Raises ``ValueError``
    for an unknown name (with close matches).
    """
    if isinstance(name, WeightsEnum):
        return name.value
    if isinstance(name, str) and "." in name:
        enum_name, _, member = name.partition(".")
        for variant in VARIANTS.values():
            weights_enum = get_model_weights(variant.name)
            if weights_enum.__name__ == enum_name:
                try:
                    return weights_enum[member].value
                except KeyError:
                    raise ValueError(
                        f"{enum_name} has no member {member!r}; members: {', '.join(weights_enum.__members__)}"
                    ) from None
    return get_weights(name)


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


_WEIGHT_ENUMS: dict[str, type[WeightsEnum]] = {}


def model_of(weights: Weights) -> str | None:
    """The model name (``pspnet_r50_d8``) a zoo entry belongs to, or None (backbones, your own entries)."""
    return weights.meta.get("model")


def get_model_weights(name: str) -> type[WeightsEnum]:
    """torchvision's ``get_model_weights``: the enum of the zoo entries of model ``name``.

    Members are named after the entry without the model prefix
    (``pspnet_r50-d8_ade20k-512x512-160k`` -> ``ADE20K_512X512_160K``; the rsb and fp16 entries
    keep their suffix: ``RSB_CITYSCAPES_512X1024_80K``), plus ``DEFAULT``. Entries added with
    :func:`register_weights` appear when their ``meta["model"]`` names the model.
    """
    variant = get_variant(name)
    members: dict[str, Weights] = {}
    prefix = f"pspnet_{variant.code}"
    for entry in sorted(_REGISTRY):
        weights = _REGISTRY[entry]
        if model_of(weights) != variant.name:
            continue
        key = re.sub(r"[^0-9A-Za-z]+", "_", entry.removeprefix(prefix)).strip("_").upper()
        members[key] = weights
    if variant.default_weights is not None and variant.default_weights in _REGISTRY:
        members["DEFAULT"] = _REGISTRY[variant.default_weights]
    enum_name = variant.name.replace("pspnet", "PSPNet").upper().replace("PSPNET", "PSPNet") + "_Weights"
    cached = _WEIGHT_ENUMS.get(variant.name)
    if cached is not None and {k: m.value for k, m in cached.__members__.items()} == members:
        return cached
    weights_enum = WeightsEnum(enum_name, list(members.items()))  # type: ignore[misc]
    weights_enum.__doc__ = f"Weights of {variant.name}: {variant.description}."
    _WEIGHT_ENUMS[variant.name] = weights_enum
    return weights_enum
