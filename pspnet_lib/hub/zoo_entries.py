"""The built-in zoo entries: the rows of :mod:`pspnet_lib.hub.zoo_table` as :class:`Weights`.

Each mmsegmentation row becomes a full entry (architecture, class names and palette of its
dataset, protocol, published metrics, counted statistics from :mod:`pspnet_lib.hub._zoo_stats`);
each backbone row an ImageNet backbone entry.
"""

from __future__ import annotations

import copy
from typing import Any

from ..core.constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.registry import DATASET_INFO
from ..models.variants import model_name, variant_of_code
from ._zoo_stats import STATS
from .weights import Weights, sha256_prefix_from_filename
from .zoo_table import (
    BACKBONE_ROWS,
    MMSEG_BASE,
    MMSEG_CONFIG,
    MMSEG_LICENSE,
    MMSEG_ROWS,
    MMSEG_TTA,
    MMSEG_ZOO,
    PROTOCOLS,
    RECIPES,
)

__all__ = ["builtin_entries"]


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
    dataset = DATASET_INFO[dataset_key]
    recipe = RECIPES.get((dataset_key, crop, schedule)) if code.endswith("-d8") else None
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
        "inference": copy.deepcopy(PROTOCOLS[(dataset_key, crop)]),
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


def builtin_entries() -> tuple[list[Weights], dict[str, str]]:
    """Every built-in entry, and the short aliases: ``pspnet_<backbone>_<dataset>`` -> the entry of
    that backbone and dataset with the best single-scale mIoU."""
    entries: list[Weights] = []
    best: dict[str, Weights] = {}
    for row in MMSEG_ROWS:
        weights = _mmseg_entry(row)
        entries.append(weights)
        alias = weights.name.rsplit("-", 2)[0]  # drop "-<crop>-<schedule>"
        if alias not in best or weights.meta["metrics"]["mIoU"] > best[alias].meta["metrics"]["mIoU"]:
            best[alias] = weights
    entries += [_backbone_entry(row) for row in BACKBONE_ROWS]
    return entries, {alias: weights.name for alias, weights in best.items()}
