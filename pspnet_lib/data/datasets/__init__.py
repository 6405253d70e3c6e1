"""Segmentation datasets: every dataset of the weights zoo and a folder of one's own images.

Pascal VOC 2012 + SBD, ADE20K, Cityscapes, PASCAL Context (60/59), COCO-Stuff (10k/164k), LoveDA,
ISPRS Potsdam and Vaihingen, iSAID. One module per dataset family (``voc``, ``ade20k``,
``cityscapes``, ``pascal_context``, ``coco_stuff``, ``loveda``, ``isprs``, ``isaid``, ``folder``) on top of ``base``
(the :class:`SegmentationDataset` contract and shared file helpers); ``factory`` maps names to
classes. The directory layouts and how to prepare each dataset are described in docs/datasets.md.
Each dataset class registers itself (``@register_dataset`` in its module, see :mod:`..registry`).
"""

# isort: off
from . import factory  # noqa: F401  first: it imports the built-in datasets in the order of the --dataset choices

# isort: on
from .ade20k import ADE20KDataset
from .base import IMAGE_EXTENSIONS, MASK_EXTENSIONS, ImageAnnotationDirs, SegmentationDataset, reduce_zero_label
from .cityscapes import CityscapesDataset, cityscapes_labelids_to_trainids, create_cityscapes_trainids
from .coco_stuff import COCOStuff10kDataset, COCOStuff164kDataset
from .factory import DATASETS, DEFAULT_SPLITS, ZOO_DATASETS, build_dataset
from .folder import FolderDataset, has_split, read_classes_file, read_palette_file
from .isaid import ISAIDDataset
from .isprs import PotsdamDataset, VaihingenDataset
from .loveda import LoveDADataset
from .pascal_context import PascalContext59Dataset, PascalContextDataset
from .voc import VOCAugDataset

__all__ = [
    "SegmentationDataset",
    "VOCAugDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "FolderDataset",
    "PascalContextDataset",
    "PascalContext59Dataset",
    "COCOStuff10kDataset",
    "COCOStuff164kDataset",
    "LoveDADataset",
    "PotsdamDataset",
    "VaihingenDataset",
    "ISAIDDataset",
    "ImageAnnotationDirs",
    "reduce_zero_label",
    "DATASETS",
    "DEFAULT_SPLITS",
    "ZOO_DATASETS",
    "build_dataset",
    "cityscapes_labelids_to_trainids",
    "create_cityscapes_trainids",
    "has_split",
    "read_classes_file",
    "read_palette_file",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
]
