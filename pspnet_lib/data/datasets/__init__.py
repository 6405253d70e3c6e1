"""Segmentation datasets: Pascal VOC 2012 + SBD, ADE20K, Cityscapes and a folder of one's own images.

One module per dataset family (``voc``, ``ade20k``, ``cityscapes``, ``folder``) on top of ``base``
(the :class:`SegmentationDataset` contract and shared file helpers); ``factory`` maps names to
classes. The directory layouts and how to prepare each dataset are described in docs/datasets.md.
"""

from .ade20k import ADE20KDataset
from .base import IMAGE_EXTENSIONS, MASK_EXTENSIONS, SegmentationDataset
from .cityscapes import CityscapesDataset, cityscapes_labelids_to_trainids, create_cityscapes_trainids
from .factory import DATASETS, DEFAULT_SPLITS, build_dataset
from .folder import FolderDataset, has_split, read_classes_file, read_palette_file
from .voc import VOCAugDataset

__all__ = [
    "SegmentationDataset",
    "VOCAugDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "FolderDataset",
    "DATASETS",
    "DEFAULT_SPLITS",
    "build_dataset",
    "cityscapes_labelids_to_trainids",
    "create_cityscapes_trainids",
    "has_split",
    "read_classes_file",
    "read_palette_file",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
]
