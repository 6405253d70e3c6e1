"""Datasets, joint image/mask transforms and synthetic scenes for training and evaluation."""

from .constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from .datasets import (
    DATASETS,
    DEFAULT_SPLITS,
    ADE20KDataset,
    CityscapesDataset,
    FolderDataset,
    SegmentationDataset,
    VOCAugDataset,
    build_dataset,
    cityscapes_labelids_to_trainids,
    create_cityscapes_trainids,
    read_classes_file,
    read_palette_file,
)
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticScenes, make_scene, write_synthetic_dataset
from .transforms import RandomScale, ToImageMask, eval_transforms, train_transforms

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATASETS",
    "DEFAULT_SPLITS",
    "SegmentationDataset",
    "VOCAugDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "FolderDataset",
    "build_dataset",
    "cityscapes_labelids_to_trainids",
    "create_cityscapes_trainids",
    "read_classes_file",
    "read_palette_file",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "SyntheticScenes",
    "make_scene",
    "write_synthetic_dataset",
    "RandomScale",
    "ToImageMask",
    "train_transforms",
    "eval_transforms",
]
