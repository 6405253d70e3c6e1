"""LoveDA (Urban and Rural merged): 7 land-cover classes, mmsegmentation's prepared layout."""

from __future__ import annotations

from ..metadata import LOVEDA_INFO
from ..prepare.loveda import prepare_loveda
from ..registry import register_dataset
from .base import ImageAnnotationDirs

__all__ = ["LoveDADataset"]


@register_dataset("loveda", splits=("train", "val"), info=LOVEDA_INFO, prepare=prepare_loveda)
class LoveDADataset(ImageAnnotationDirs):
    """LoveDA as prepared by ``pspnet prepare loveda`` (or mmsegmentation's ``loveda.py``).

    Layout: ``img_dir/{train,val,test}/<id>.png`` and ``ann_dir/{train,val}/<id>.png``. Stored
    values: 0 = no-data (ignored), 1..7 = background, building, road, water, barren, forest,
    agricultural, read as classes 0..6 (``reduce_zero_label``, as mmsegmentation's ``LoveDADataset``).
    """
