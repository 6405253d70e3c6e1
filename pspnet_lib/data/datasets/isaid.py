"""iSAID: 15 object classes + background in aerial images, as 896x896 patches."""

from __future__ import annotations

from .base import ImageAnnotationDirs

__all__ = ["ISAIDDataset"]


class ISAIDDataset(ImageAnnotationDirs):
    """iSAID patches as prepared by ``pspnet prepare isaid`` (or mmsegmentation's ``isaid.py``).

    Layout: ``img_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>.png`` and
    ``ann_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>_instance_color_RGB.png``. Stored values are
    the classes 0..15 (0 = background, a scored class) and 255 (padding, ignored), as
    mmsegmentation's ``iSAIDDataset`` (no ``reduce_zero_label``).
    """

    DATASET_KEY = "isaid"
    PREPARE = "isaid"
    SEG_SUFFIX = "_instance_color_RGB.png"
