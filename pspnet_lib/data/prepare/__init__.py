"""From the official downloads to the layouts the datasets read (mmsegmentation's prepared layouts).

``prepare_<dataset>(src, dst)`` reads the archives (or their extracted folders) in ``src`` and
writes the prepared dataset under ``dst``; ``pspnet prepare <dataset> SRC DST`` does the same.
Every preparation shows a progress bar on terminals, skips outputs that already exist (so an
interrupted run is resumed by running it again), writes each file atomically (no half-written
file is ever left for a later run to trust), never modifies its inputs, and names a missing input
archive or folder in a one-line error. docs/datasets.md lists the inputs of each dataset.
"""

from __future__ import annotations

from ..registry import PREPARERS as _PREPARERS
from .coco_stuff import prepare_coco_stuff10k, prepare_coco_stuff164k
from .isaid import prepare_isaid
from .isprs import prepare_potsdam, prepare_vaihingen
from .loveda import prepare_loveda
from .pascal_context import prepare_pascal_context

__all__ = [
    "PREPARERS",
    "prepare_pascal_context",
    "prepare_coco_stuff10k",
    "prepare_coco_stuff164k",
    "prepare_loveda",
    "prepare_potsdam",
    "prepare_vaihingen",
    "prepare_isaid",
]

#: ``pspnet prepare`` names -> functions: derived from the dataset records (a dataset's ``prepare=``).
PREPARERS = _PREPARERS
