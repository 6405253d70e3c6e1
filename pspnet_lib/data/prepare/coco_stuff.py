"""COCO-Stuff 10k (.mat labels, COCO ids 0..182) and 164k (PNG labels, ids 0..181): trainId masks."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ...core.text import text_lines
from ._common import (
    Member,
    PathLike,
    copy_member,
    find_input,
    iter_progress,
    members,
    require_outputs_dir,
    save_png,
    summary,
)

__all__ = ["prepare_coco_stuff10k", "prepare_coco_stuff164k", "COCO_UNUSED_IDS"]

logger = logging.getLogger("pspnet_lib.data.prepare")

#: The 11 COCO "thing" ids (1-based, as in the 10k .mat files) with no annotations; the other
#: 171 of 1..182 are the classes, in order (cocostuff's labels.txt; mmsegmentation's converters).
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)


def _lut(zero_based: bool) -> np.ndarray:
    """Lookup table stored id -> prepared value.

    10k (1-based ids, 0 = unlabeled): id -> 1..171 (0 stays 0; the dataset reads it with
    ``reduce_zero_label``). 164k (0-based ids, 255 = unlabeled): id -> 0..170 (255 stays 255).
    Ids of no class (never present in the official files) become unlabeled, where upstream's
    converters would leave them unchanged and so file them under another class.
    """
    used = [i for i in range(1, 183) if i not in COCO_UNUSED_IDS]
    if zero_based:
        lut = np.full(256, 255, dtype=np.uint8)
        for train_id, coco_id in enumerate(used):
            lut[coco_id - 1] = train_id
    else:
        lut = np.zeros(256, dtype=np.uint8)
        for train_id, coco_id in enumerate(used):
            lut[coco_id] = train_id + 1
    return lut


def coco_stuff_to_train_ids(ids: np.ndarray, *, zero_based: bool) -> np.ndarray:
    """Map COCO-Stuff ids to the stored values of the prepared ``*_labelTrainIds.png`` (see :func:`_lut`)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"COCO-Stuff label ids lie in 0..182 (and 255), got values in [{ids.min()}, {ids.max()}]")
    return _lut(zero_based)[ids.astype(np.int64)]


def _read_mat_labels(member: Member) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading COCO-Stuff 10k's .mat annotations needs scipy: pip install 'pspnet_lib[prepare]'"
        ) from None
    data = loadmat(io.BytesIO(member.read()))
    if "S" not in data:
        raise ValueError(f"{member.name} has no 'S' label array; is it a COCO-Stuff 10k annotation?")
    return np.asarray(data["S"])


def prepare_coco_stuff10k(src: PathLike, dst: PathLike) -> dict[str, int]:
    """COCO-Stuff 10k in mmsegmentation's layout: ``dst/images/{train2014,test2014}/<name>.jpg`` and
    ``dst/annotations/{train2014,test2014}/<name>_labelTrainIds.png``.

    Input ``src``: ``cocostuff-10k-v1.1.zip`` or its extracted content (``images/*.jpg``,
    ``annotations/*.mat`` with the label array ``S``, ``imageLists/{train,test}.txt``). Labels are
    mapped as mmsegmentation's ``coco_stuff10k.py``: 0 (unlabeled) stays 0 and the 171 used ids of
    1..182 become 1..171, read as classes 0..170 with ``reduce_zero_label``. Needs scipy (the
    ``prepare`` extra). Existing outputs are skipped; files are written atomically.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    what = "COCO-Stuff 10k (cocostuff-10k-v1.1.zip from https://github.com/nightrome/cocostuff10k)"
    root = src
    if not (src / "imageLists").is_dir():
        archive = find_input(src, "imageLists", "cocostuff-10k-v1.1.zip", what)
        root = archive
    files = {m.name: m for m in members(root, (".jpg", ".mat", ".txt"))}
    by_suffix = {name.rsplit("/", 1)[-1]: m for name, m in files.items()}
    written = skipped = 0
    for list_name, split in (("train.txt", "train2014"), ("test.txt", "test2014")):
        lists = [m for n, m in files.items() if n.endswith(f"imageLists/{list_name}")]
        if not lists:
            raise FileNotFoundError(f"missing input imageLists/{list_name} in {root}: {what}")
        names = [line for line in text_lines(lists[0].read(), what=lists[0].name) if line]
        jobs = []
        for name in names:
            image, label = by_suffix.get(f"{name}.jpg"), by_suffix.get(f"{name}.mat")
            if image is None or label is None:
                raise FileNotFoundError(
                    f"coco-stuff10k: {name}.jpg or {name}.mat listed in {list_name} is missing from {root}"
                )
            jobs.append(
                (
                    image,
                    label,
                    dst / "images" / split / f"{name}.jpg",
                    dst / "annotations" / split / f"{name}_labelTrainIds.png",
                )
            )
        for image, label, image_out, label_out in iter_progress(jobs, f"coco-stuff10k {split}"):
            if image_out.is_file() and label_out.is_file():
                skipped += 2
                continue
            if not image_out.is_file():
                copy_member(image, image_out)
                written += 1
            if not label_out.is_file():
                save_png(coco_stuff_to_train_ids(_read_mat_labels(label), zero_based=False), label_out)
                written += 1
    return summary("coco-stuff10k", dst, written, skipped)


def prepare_coco_stuff164k(src: PathLike, dst: PathLike) -> dict[str, int]:
    """COCO-Stuff 164k in mmsegmentation's layout: ``dst/images/{train2017,val2017}/<id>.jpg`` and
    ``dst/annotations/{train2017,val2017}/<id>_labelTrainIds.png``.

    Inputs in ``src``: the COCO 2017 images (``images/{train2017,val2017}/`` or ``train2017.zip`` /
    ``val2017.zip``) and the stuff+thing maps (``annotations/{train2017,val2017}/*.png`` or
    ``stuffthingmaps_trainval2017.zip``). Labels are mapped as mmsegmentation's
    ``coco_stuff164k.py``: the 171 used ids of 0..181 become trainIds 0..170, 255 (unlabeled)
    stays 255. Existing outputs are skipped; files are written atomically.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    what = "COCO-Stuff 164k: stuffthingmaps_trainval2017.zip from https://github.com/nightrome/cocostuff"
    labels_root = find_input(src, "annotations", "stuffthingmaps_trainval2017.zip", what)
    written = skipped = 0
    for split in ("train2017", "val2017"):
        images_root = find_input(
            src, f"images/{split}", f"{split}.zip", f"the COCO 2017 images ({split}.zip from https://cocodataset.org)"
        )
        labels = {
            m.basename[:-4]: m
            for m in members(labels_root, (".png",))
            if f"{split}/" in m.name and "_labelTrainIds" not in m.basename
        }
        images = {m.basename[:-4]: m for m in members(images_root, (".jpg",))}
        if not labels:
            raise FileNotFoundError(f"missing input {split}/*.png label maps in {labels_root}: {what}")
        missing = sorted(set(labels) - set(images))
        if missing:
            raise FileNotFoundError(
                f"coco-stuff164k: no image for label map(s) {', '.join(missing[:5])} in {images_root}"
            )
        for stem in iter_progress(sorted(labels), f"coco-stuff164k {split}"):
            image_out = dst / "images" / split / f"{stem}.jpg"
            label_out = dst / "annotations" / split / f"{stem}_labelTrainIds.png"
            if image_out.is_file() and label_out.is_file():
                skipped += 2
                continue
            if not image_out.is_file():
                copy_member(images[stem], image_out)
                written += 1
            if not label_out.is_file():
                with labels[stem].open_image() as picture:
                    ids = np.asarray(picture)
                if ids.ndim != 2:
                    raise ValueError(f"{labels[stem].name} is not a single-channel label map")
                save_png(coco_stuff_to_train_ids(ids, zero_based=True), label_out)
                written += 1
    return summary("coco-stuff164k", dst, written, skipped)
