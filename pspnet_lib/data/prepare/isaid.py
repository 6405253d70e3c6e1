"""iSAID: 896 px patches (overlap 384) cut from the DOTA images and iSAID's semantic colour masks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...core.images import pil_to_rgb
from ..registry import get_dataset_info
from ._common import (
    Member,
    PathLike,
    colours_to_index,
    done,
    find_input,
    iter_progress,
    members,
    require_outputs_dir,
    save_png,
    sliding_starts,
    summary,
)

__all__ = ["prepare_isaid"]

logger = logging.getLogger("pspnet_lib.data.prepare")


def _pad(array: np.ndarray, size: int, value: int) -> np.ndarray:
    # mmcv.impad as upstream uses it: pad at the bottom and right up to the patch size.
    height, width = array.shape[:2]
    if height >= size and width >= size:
        return array
    shape = (max(height, size), max(width, size)) + array.shape[2:]
    padded = np.full(shape, value, dtype=array.dtype)
    padded[:height, :width] = array
    return padded


def _boxes(height: int, width: int, size: int, step: int) -> list[tuple[int, int, int, int]]:
    return [
        (y, y + size, x, x + size)
        for x in sliding_starts(width, size, step)
        for y in sliding_starts(height, size, step)
    ]


def _cut(member: Member, folder: Path, name_of, size: int, step: int, colours: dict | None) -> tuple[int, int]:
    with member.open_image() as picture:
        width, height = picture.size
        boxes = _boxes(max(height, size), max(width, size), size, step)
        targets = [folder / name_of(box) for box in boxes]
        if done(targets):
            return 0, len(targets)
        if colours is None:
            array = _pad(np.asarray(pil_to_rgb(picture)), size, 0)
        else:
            array = _pad(colours_to_index(np.asarray(picture.convert("RGB")), colours, default=0), size, 255)
    written = 0
    for (y0, y1, x0, x1), target in zip(boxes, targets):
        if not target.is_file():
            save_png(array[y0:y1, x0:x1], target)
            written += 1
    return written, len(targets) - written


def prepare_isaid(src: PathLike, dst: PathLike, *, patch_size: int = 896, overlap: int = 384) -> dict[str, int]:
    """iSAID in mmsegmentation's layout: ``dst/img_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>.png`` and
    ``dst/ann_dir/{train,val}/<P0000>_<y0>_<y1>_<x0>_<x1>_instance_color_RGB.png``.

    Inputs in ``src`` (the iSAID download, images from DOTA v1.0): ``{train,val}/images/*.zip``
    (``part1.zip`` ... holding ``images/P0000.png`` ...) and ``{train,val}/Semantic_masks/*.zip``
    (``images/P0000_instance_color_RGB.png``), or the same folders with the archives extracted.
    Patches of ``patch_size`` px every ``patch_size - overlap`` px, the last ones moved back to the
    border; pictures smaller than a patch are padded at the bottom/right (image 0, label 255) — all
    as upstream's ``isaid.py``. Mask colours become the 16 class indices (0 = background); an
    unknown colour becomes 0, as upstream. The unlabelled test split is not prepared. Existing
    outputs are skipped; files are written atomically.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    colours = {tuple(c): i for i, c in enumerate(get_dataset_info("isaid").palette)}
    step = patch_size - overlap
    if not 0 < step <= patch_size:
        raise ValueError(f"overlap must be in [0, patch_size), got {overlap} for patch_size {patch_size}")
    written = skipped = 0
    for split in ("train", "val"):
        images_from = find_input(
            src / split if (src / split).is_dir() else src,
            "images",
            None,
            f"iSAID's {split}/images/ folder (the DOTA {split} image archives part*.zip)",
        )
        labels_from = find_input(
            src / split if (src / split).is_dir() else src,
            "Semantic_masks",
            None,
            f"iSAID's {split}/Semantic_masks/ folder (the semantic mask archives)",
        )
        images = _members_of(images_from, (".png",), "_instance")
        labels = _members_of(labels_from, ("_instance_color_RGB.png",), None)
        if not images:
            raise FileNotFoundError(f"no iSAID/DOTA {split} images (P*.png or part*.zip) in {images_from}")
        stems = {m.basename[:-4] for m in images}
        label_stems = {m.basename.split("_")[0] for m in labels}
        missing = sorted(stems - label_stems)
        if missing:
            raise FileNotFoundError(
                f"isaid {split}: no *_instance_color_RGB.png mask for {', '.join(missing[:8])} in {labels_from}"
            )
        jobs = [(m, False) for m in images] + [(m, True) for m in labels if m.basename.split("_")[0] in stems]
        for member, is_label in iter_progress(jobs, f"isaid {split}"):
            if is_label:
                stem = member.basename.split("_")[0]
                folder = dst / "ann_dir" / split
                w, s = _cut(
                    member,
                    folder,
                    lambda b, s=stem: f"{s}_{b[0]}_{b[1]}_{b[2]}_{b[3]}_instance_color_RGB.png",
                    patch_size,
                    step,
                    colours,
                )
            else:
                stem = member.basename[:-4]
                folder = dst / "img_dir" / split
                w, s = _cut(
                    member, folder, lambda b, s=stem: f"{s}_{b[0]}_{b[1]}_{b[2]}_{b[3]}.png", patch_size, step, None
                )
            written, skipped = written + w, skipped + s
    return summary("isaid", dst, written, skipped)


def _members_of(folder: Path, suffixes: tuple[str, ...], exclude: str | None) -> list[Member]:
    """PNG files of ``folder``, and of the zip archives in it (iSAID ships parts as part1.zip ...)."""
    import zipfile

    found = [m for m in members(folder, suffixes) if exclude is None or exclude not in m.basename]
    for archive in sorted(folder.glob("*.zip")):
        if zipfile.is_zipfile(archive):
            found += [m for m in members(archive, suffixes) if exclude is None or exclude not in m.basename]
    unique: dict[str, Member] = {}
    for member in found:
        unique.setdefault(member.basename, member)
    return [unique[k] for k in sorted(unique)]
