"""Training recipes of the published PSPNet models (mmsegmentation's and the author's hszhao/semseg).

A recipe is a :class:`Recipe`: a plain dict (or a JSON file of the same shape) with these sections:

* ``dataset``, ``num_classes``: what it trains on;
* ``model``: :func:`~pspnet_lib.build_pspnet` arguments (``backbone``, ``preset``, overrides);
* ``augment``: :func:`~pspnet_lib.data.train_transforms` arguments (``crop_size``, ``scale_range``,
  ``base_size``, ``rotation``, ``blur_p``, ``flip_p``);
* ``train``: :class:`~pspnet_lib.engine.TrainConfig` fields (``batch_size`` is per process);
* ``gpus``: how many processes the published run used (``batch_size * gpus`` images per step);
* keys starting with ``_`` are notes (source, published numbers, deviations).

``pspnet train --recipe NAME`` starts from a recipe; any flag given on the command line overrides
it. See docs/training.md for the commands and what each recipe reproduces.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from .._files import read_json

__all__ = ["RECIPES", "RECIPE_SECTIONS", "Recipe", "check_recipe", "get_recipe", "list_recipes", "load_recipe"]


class Recipe(TypedDict, total=False):
    """A training recipe's sections (the one declaration of them; every section is optional).

    Keys starting with ``_`` are notes (``_source``, published numbers, deviations) and may
    accompany them; a JSON recipe file has the same shape.
    """

    dataset: str  # a --dataset name (pspnet_lib.data.DATASETS)
    num_classes: int
    model: dict[str, Any]  # build_pspnet arguments
    augment: dict[str, Any]  # train_transforms arguments
    train: dict[str, Any]  # TrainConfig fields (batch_size per process)
    gpus: int  # processes of the published run
    _source: str  # notes: where the settings come from,
    _published: str  # the published numbers,
    _zoo: str  # the zoo entry of the published weights (other ``_`` keys are notes too)


#: The sections of a :class:`Recipe`, in order.
RECIPE_SECTIONS: tuple[str, ...] = tuple(k for k in Recipe.__annotations__ if not k.startswith("_"))


def check_recipe(recipe: Any, what: str = "recipe") -> Recipe:
    """``recipe`` as a :class:`Recipe` after checking its shape: a mapping whose keys are
    sections or ``_`` notes. Raises ``ValueError`` naming ``what`` and the unknown sections."""
    if not isinstance(recipe, Mapping):
        raise ValueError(f"{what} must hold a JSON object with sections {list(RECIPE_SECTIONS)}")
    unknown = sorted(str(k) for k in recipe if k not in RECIPE_SECTIONS and not str(k).startswith("_"))
    if unknown:
        raise ValueError(f"{what} has unknown section(s) {unknown}; expected {list(RECIPE_SECTIONS)}")
    return cast(Recipe, dict(recipe))


def _mmseg(
    dataset: str,
    num_classes: int,
    iters: int,
    crop: list[int],
    base: list[int],
    gpus: int,
    per_gpu: int,
    eval_resize: list[int],
    **extra: Any,
) -> Recipe:
    """mmsegmentation's PSPNet schedule: SGD lr 0.01, wd 5e-4, poly 0.9 down to 1e-4, heads at 1x."""
    interval = iters // 10
    train = {
        "iters": iters,
        "batch_size": per_gpu,
        "lr": 0.01,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "head_lr_mult": 1.0,
        "poly_power": 0.9,
        "min_lr": 1e-4,
        "aux_weight": 0.4,
        "val_interval": interval,
        "ckpt_interval": interval,
        "eval_mode": "whole",
        "eval_resize": eval_resize,
    }
    train.update(extra.pop("train", {}))
    recipe: dict[str, Any] = {
        "dataset": dataset,
        "num_classes": num_classes,
        "model": {"backbone": "resnet50", "preset": "mmseg", **extra.pop("model", {})},
        # mmseg's RandomResize(scale=base, ratio_range=(0.5, 2.0)) + RandomCrop + RandomFlip; it adds
        # PhotoMetricDistortion (not reproduced) and no rotation or blur.
        "augment": {
            "crop_size": crop,
            "scale_range": [0.5, 2.0],
            "base_size": base,
            "rotation": 0.0,
            "blur_p": 0.0,
            "flip_p": 0.5,
        },
        "train": train,
        "gpus": gpus,
        "_source": "mmsegmentation configs/pspnet (ResNet-50-D8, ImageNet-pretrained ResNetV1c backbone)",
    }
    recipe.update(extra)
    return cast(Recipe, recipe)


def _semseg(
    dataset: str,
    num_classes: int,
    iters: int,
    crop: int,
    gpus: int,
    total_batch: int,
    base_size: int,
    epochs: int,
    images: int,
    **notes: Any,
) -> Recipe:
    """The author's hszhao/semseg schedule: SGD lr 0.01, wd 1e-4, poly 0.9 to 0, heads at 10x."""
    stride = -(-2 * crop // 3)  # semseg's stride_rate = 2/3
    return cast(
        Recipe,
        {
            "dataset": dataset,
            "num_classes": num_classes,
            "model": {"backbone": "resnet50", "preset": "semseg"},
            # RandScale(0.5, 2) -> RandRotate(+-10, p=0.5) -> GaussianBlur(p=0.5) -> HFlip -> Crop, padded with the mean.
            "augment": {
                "crop_size": [crop, crop],
                "scale_range": [0.5, 2.0],
                "base_size": None,
                "rotation": 10.0,
                "blur_p": 0.5,
                "flip_p": 0.5,
            },
            "train": {
                "iters": iters,
                "batch_size": total_batch // gpus,
                "lr": 0.01,
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 0.0001,
                "head_lr_mult": 10.0,
                "poly_power": 0.9,
                "min_lr": 0.0,
                "aux_weight": 0.4,
                "val_interval": iters // 10,
                "ckpt_interval": iters // 20,
                # Test: long side resized to base_size, sliding crops with stride 2/3 of the crop, plus the flip.
                "eval_mode": "slide",
                "eval_resize": [base_size, base_size],
                "eval_crop": [crop, crop],
                "eval_stride": [stride, stride],
                "eval_flip": True,
            },
            "gpus": gpus,
            "_source": f"hszhao/semseg config/{dataset}/*_pspnet50.yaml: {epochs} epochs of {images} images, batch "
            f"{total_batch} on {gpus} GPUs = {iters} iterations (the author's ImageNet-pretrained deep-stem ResNet-50)",
            **notes,
        },
    )


RECIPES: dict[str, Recipe] = {
    "voc-mmseg-20k": _mmseg(
        "voc",
        21,
        20000,
        [512, 512],
        [2048, 512],
        4,
        4,
        [2048, 512],
        _published="mmseg pspnet_r50-d8 512x512 20k voc12aug: 76.78 mIoU",
    ),
    "voc-mmseg-40k": _mmseg(
        "voc",
        21,
        40000,
        [512, 512],
        [2048, 512],
        4,
        4,
        [2048, 512],
        _published="mmseg pspnet_r50-d8 512x512 40k voc12aug: 77.29 mIoU",
    ),
    "ade20k-mmseg-80k": _mmseg(
        "ade20k",
        150,
        80000,
        [512, 512],
        [2048, 512],
        4,
        4,
        [2048, 512],
        _published="mmseg pspnet_r50-d8 512x512 80k ade20k: 41.13 mIoU",
    ),
    "ade20k-mmseg-160k": _mmseg(
        "ade20k",
        150,
        160000,
        [512, 512],
        [2048, 512],
        4,
        4,
        [2048, 512],
        _published="mmseg pspnet_r50-d8 512x512 160k ade20k: 42.48 mIoU",
    ),
    "cityscapes-mmseg-40k": _mmseg(
        "cityscapes",
        19,
        40000,
        [512, 1024],
        [2048, 1024],
        4,
        2,
        [2048, 1024],
        _published="mmseg pspnet_r50-d8 512x1024 40k cityscapes: 77.85 mIoU",
    ),
    "cityscapes-mmseg-80k": _mmseg(
        "cityscapes",
        19,
        80000,
        [512, 1024],
        [2048, 1024],
        4,
        2,
        [2048, 1024],
        _published="mmseg pspnet_r50-d8 512x1024 80k cityscapes: 78.55 mIoU",
    ),
    "cityscapes-mmseg-769-40k": _mmseg(
        "cityscapes",
        19,
        40000,
        [769, 769],
        [2049, 1025],
        4,
        2,
        [2049, 1025],
        model={"align_corners": True},
        train={"eval_mode": "slide", "eval_crop": [769, 769], "eval_stride": [513, 513]},
        _published="mmseg pspnet_r50-d8 769x769 40k cityscapes: 78.26 mIoU",
    ),
    "cityscapes-mmseg-769-80k": _mmseg(
        "cityscapes",
        19,
        80000,
        [769, 769],
        [2049, 1025],
        4,
        2,
        [2049, 1025],
        model={"align_corners": True},
        train={"eval_mode": "slide", "eval_crop": [769, 769], "eval_stride": [513, 513]},
        _published="mmseg pspnet_r50-d8 769x769 80k cityscapes: 79.59 mIoU",
    ),
    # PASCAL Context (R-101-D8 only in the zoo): SGD lr 0.004, wd 1e-4 (schedule_40k_lr4e-3), resize
    # (520, 520), crop 480, slide 480/320 at test time (configs/_base_/datasets/pascal_context*.py).
    **{
        f"{key}-mmseg-{k}k": _mmseg(
            key,
            classes,
            k * 1000,
            [480, 480],
            [520, 520],
            4,
            4,
            [520, 520],
            model={"backbone": "resnet101"},
            train={
                "lr": 0.004,
                "weight_decay": 0.0001,
                "eval_mode": "slide",
                "eval_crop": [480, 480],
                "eval_stride": [320, 320],
            },
            _published=f"mmseg pspnet_r101-d8 480x480 {k}k {key.replace('-', '_')}: {miou} mIoU",
            _zoo=[f"pspnet_r101-d8_{key}-480x480-{k}k"],
        )
        for key, classes, k, miou in (
            ("pascal-context", 60, 40, 46.60),
            ("pascal-context", 60, 80, 46.03),
            ("pascal-context-59", 59, 40, 52.02),
            ("pascal-context-59", 59, 80, 52.47),
        )
    },
    # COCO-Stuff 10k / 164k: RandomResize (2048, 512), crop 512, 4 GPUs x 4 (configs/_base_/datasets/coco-stuff*.py).
    **{
        f"{key}-mmseg-{k}k": _mmseg(
            key,
            171,
            k * 1000,
            [512, 512],
            [2048, 512],
            4,
            4,
            [2048, 512],
            _published=f"mmseg pspnet_r50-d8 512x512 {k}k {key}: {miou} mIoU (R-101-D8: --backbone resnet101)",
            _zoo=[f"pspnet_{code}_{key}-512x512-{k}k" for code in ("r50-d8", "r101-d8")],
        )
        for key, k, miou in (
            ("coco-stuff10k", 20, 35.69),
            ("coco-stuff10k", 40, 36.33),
            ("coco-stuff164k", 80, 38.80),
            ("coco-stuff164k", 160, 39.64),
            ("coco-stuff164k", 320, 40.53),
        )
    },
    # Remote sensing, 80k, 4 GPUs x 4: LoveDA RandomResize (2048, 512), test (1024, 1024); Potsdam and
    # Vaihingen (512, 512); iSAID (896, 896) with crop 896 (configs/_base_/datasets/{loveda,potsdam,vaihingen,isaid}.py).
    **{
        f"{key}-mmseg-80k": _mmseg(
            key,
            classes,
            80000,
            [crop, crop],
            base,
            4,
            4,
            test,
            _published=f"mmseg pspnet_r50-d8 {crop}x{crop} 80k {key}: {miou} mIoU "
            f"(other rows: --backbone {' / '.join('resnet' + c[1:-3] for c in codes if c != 'r50-d8')})",
            _zoo=[f"pspnet_{code}_{key}-{crop}x{crop}-80k" for code in codes],
        )
        for key, classes, crop, base, test, miou, codes in (
            ("loveda", 7, 512, [2048, 512], [1024, 1024], 50.46, ("r18-d8", "r50-d8", "r101-d8")),
            ("potsdam", 6, 512, [512, 512], [512, 512], 78.12, ("r18-d8", "r50-d8", "r101-d8")),
            ("vaihingen", 6, 512, [512, 512], [512, 512], 72.36, ("r18-d8", "r50-d8", "r101-d8")),
            ("isaid", 16, 896, [896, 896], [896, 896], 65.36, ("r18-d8", "r50-d8")),
        )
    },
    "voc-semseg": _semseg(
        "voc",
        21,
        33050,
        473,
        8,
        16,
        512,
        50,
        10582,
        _published="hszhao/semseg PSPNet50 voc2012 val, single scale: 77.05 mIoU",
    ),
    "ade20k-semseg": _semseg(
        "ade20k",
        150,
        126300,
        473,
        8,
        16,
        512,
        100,
        20210,
        _published="hszhao/semseg PSPNet50 ade20k val, single scale: 41.89 mIoU",
    ),
    "cityscapes-semseg": _semseg(
        "cityscapes",
        19,
        37200,
        713,
        8,
        16,
        2048,
        200,
        2975,
        _published="hszhao/semseg PSPNet50 cityscapes fine_val, single scale: 77.30 mIoU",
    ),
}


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """A deep copy of the built-in recipe ``name``."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}; built-in recipes: {', '.join(list_recipes())} (or pass a JSON file)"
        )
    return copy.deepcopy(RECIPES[name])


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A built-in recipe by name, or a JSON file of the same shape (unknown sections are an error)."""
    text = str(name_or_path)
    if text in RECIPES:
        return get_recipe(text)
    path = Path(text)
    if not path.is_file():
        raise ValueError(
            f"{text!r} is neither a built-in recipe ({', '.join(list_recipes())}) nor an existing JSON file"
        )
    return check_recipe(read_json(path, "recipe file"), f"recipe file {path}")
