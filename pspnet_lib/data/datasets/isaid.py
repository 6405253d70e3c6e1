"""iSAID: 15 object classes + background in aerial images, as 896x896 patches."""

from __future__ import annotations

from ..metadata import ISAID_INFO
from ..prepare.isaid import prepare_isaid
from ..registry import register_dataset
from .base import ImageAnnotationDirs

__all__ = ["ISAIDDataset"]


@register_dataset("isaid", splits=("train", "val"), info=ISAID_INFO, prepare=prepare_isaid)
class ISAIDDataset(ImageAnnotationDirs):
    """iSAID patches as prepared by ``pspnet prepare isaid`` (or mmsegmentation's ``isaid.py``).

    Layout: ``img_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>.png`` and
    ``ann_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>_instance_color_RGB.png``. Stored values are
    the classes 0..15 (0 = background, a scored class) and 255 (padding, ignored), as
    mmsegmentation's ``iSAIDDataset`` (no ``reduce_zero_label``).
    """

    SEG_SUFFIX = "_instance_color_RGB.png"
