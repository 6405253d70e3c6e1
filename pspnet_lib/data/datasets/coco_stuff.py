"""COCO-Stuff 10k and 164k: 171 thing + stuff classes, ``*_labelTrainIds.png`` annotations."""

from __future__ import annotations

from ..metadata import COCO_STUFF10K_INFO, COCO_STUFF164K_INFO
from ..prepare.coco_stuff import prepare_coco_stuff10k, prepare_coco_stuff164k
from ..registry import register_dataset
from .base import ImageAnnotationDirs

__all__ = ["COCOStuff10kDataset", "COCOStuff164kDataset"]


@register_dataset(
    "coco-stuff10k", splits=("train2014", "test2014"), info=COCO_STUFF10K_INFO, prepare=prepare_coco_stuff10k
)
class COCOStuff10kDataset(ImageAnnotationDirs):
    """COCO-Stuff 10k as prepared by ``pspnet prepare coco-stuff10k`` (or mmsegmentation's ``coco_stuff10k.py``).

    Layout: ``images/{train2014,test2014}/<name>.jpg`` and
    ``annotations/{train2014,test2014}/<name>_labelTrainIds.png``. Stored values: 0 = unlabeled
    (ignored), 1..171 = the 171 classes, read as 0..170: mmsegmentation's coco-stuff10k config
    loads these files with ``reduce_zero_label=True``. Splits: ``train2014`` (9,000 images; alias
    ``train``) and ``test2014`` (1,000; alias ``val``/``test``), the split the published mIoU uses.
    """

    IMAGE_DIR, ANNOTATION_DIR = "images", "annotations"
    IMG_SUFFIX, SEG_SUFFIX = ".jpg", "_labelTrainIds.png"
    SPLITS = {
        "train2014": "train2014",
        "test2014": "test2014",
        "train": "train2014",
        "val": "test2014",
        "test": "test2014",
    }


@register_dataset(
    "coco-stuff164k", splits=("train2017", "val2017"), info=COCO_STUFF164K_INFO, prepare=prepare_coco_stuff164k
)
class COCOStuff164kDataset(COCOStuff10kDataset):
    """COCO-Stuff 164k as prepared by ``pspnet prepare coco-stuff164k`` (or mmsegmentation's ``coco_stuff164k.py``).

    Layout: ``images/{train2017,val2017}/<id>.jpg`` and ``annotations/{train2017,val2017}/<id>_labelTrainIds.png``.
    Stored values are the trainIds 0..170 and 255 (unlabeled, ignored); no ``reduce_zero_label``.
    """

    SPLITS = {"train2017": "train2017", "val2017": "val2017", "train": "train2017", "val": "val2017"}
