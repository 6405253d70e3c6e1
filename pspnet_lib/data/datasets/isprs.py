"""ISPRS 2D semantic labelling: Potsdam and Vaihingen (6 classes), as 512x512 tiles."""

from __future__ import annotations

from ..metadata import POTSDAM_INFO, VAIHINGEN_INFO
from ..prepare.isprs import prepare_potsdam, prepare_vaihingen
from ..registry import register_dataset
from .base import ImageAnnotationDirs

__all__ = ["PotsdamDataset", "VaihingenDataset"]


@register_dataset("potsdam", splits=("train", "val"), info=POTSDAM_INFO, prepare=prepare_potsdam)
class PotsdamDataset(ImageAnnotationDirs):
    """ISPRS Potsdam tiles as prepared by ``pspnet prepare potsdam`` (or mmsegmentation's ``potsdam.py``).

    Layout: ``img_dir/{train,val}/<tile>.png`` and ``ann_dir/{train,val}/<tile>.png`` with the same
    names. Stored values: 0 = boundary / unknown colour of the eroded labels (ignored), 1..6 =
    impervious surface, building, low vegetation, tree, car, clutter, read as classes 0..5
    (``reduce_zero_label``, as mmsegmentation's ``PotsdamDataset``).
    """


@register_dataset("vaihingen", splits=("train", "val"), info=VAIHINGEN_INFO, prepare=prepare_vaihingen)
class VaihingenDataset(PotsdamDataset):
    """ISPRS Vaihingen tiles as prepared by ``pspnet prepare vaihingen``: same layout, classes and values as Potsdam."""
