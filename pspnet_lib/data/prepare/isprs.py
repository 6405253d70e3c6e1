"""ISPRS Potsdam and Vaihingen: 512 px tiles (stride 256) from the official ortho images and colour labels."""

from __future__ import annotations

import logging
import re
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
    isprs_starts,
    iter_progress,
    members,
    require_outputs_dir,
    save_png,
    summary,
)

__all__ = ["prepare_potsdam", "prepare_vaihingen", "POTSDAM_SPLITS", "VAIHINGEN_SPLITS"]

logger = logging.getLogger("pspnet_lib.data.prepare")

#: mmsegmentation's tools/dataset_converters/potsdam.py: 24 training and 14 validation images.
POTSDAM_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "2_10",
        "2_11",
        "2_12",
        "3_10",
        "3_11",
        "3_12",
        "4_10",
        "4_11",
        "4_12",
        "5_10",
        "5_11",
        "5_12",
        "6_10",
        "6_11",
        "6_12",
        "6_7",
        "6_8",
        "6_9",
        "7_10",
        "7_11",
        "7_12",
        "7_7",
        "7_8",
        "7_9",
    ),
    "val": (
        "5_15",
        "6_15",
        "6_13",
        "3_13",
        "4_14",
        "6_14",
        "5_14",
        "2_13",
        "4_15",
        "2_14",
        "5_13",
        "4_13",
        "3_14",
        "7_13",
    ),
}
#: mmsegmentation's tools/dataset_converters/vaihingen.py: 16 training and 17 validation areas.
VAIHINGEN_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "area1",
        "area11",
        "area13",
        "area15",
        "area17",
        "area21",
        "area23",
        "area26",
        "area28",
        "area3",
        "area30",
        "area32",
        "area34",
        "area37",
        "area5",
        "area7",
    ),
    "val": (
        "area6",
        "area24",
        "area35",
        "area16",
        "area14",
        "area22",
        "area10",
        "area4",
        "area2",
        "area20",
        "area8",
        "area31",
        "area33",
        "area27",
        "area38",
        "area12",
        "area29",
    ),
}

_POTSDAM_ID = re.compile(r"top_potsdam_(\d+_\d+)_", re.IGNORECASE)
_VAIHINGEN_ID = re.compile(r"top_mosaic_09cm_(area\d+)", re.IGNORECASE)


def _label_colours(dataset: str) -> dict[tuple[int, int, int], int]:
    # Stored value k + 1 for class k (0 = boundary/unknown, ignored by reduce_zero_label). The ISPRS
    # colours: impervious white, building blue, low vegetation cyan, tree green, car yellow, clutter red.
    return {c: i + 1 for i, c in enumerate(get_dataset_info(dataset).palette)}


def _tile(member: Member, dst_dir: Path, stem: str, size: int, stride: int, colours: dict | None) -> tuple[int, int]:
    with member.open_image() as picture:
        width, height = picture.size
        boxes = [
            (x, y, min(x + size, width), min(y + size, height))
            for y in isprs_starts(height, size, stride)
            for x in isprs_starts(width, size, stride)
        ]
        targets = [dst_dir / f"{stem}_{x0}_{y0}_{x1}_{y1}.png" for x0, y0, x1, y1 in boxes]
        if done(targets):
            return 0, len(targets)
        if colours is None:
            array = np.asarray(pil_to_rgb(picture))
        else:
            array = colours_to_index(np.asarray(picture.convert("RGB")), colours, default=0)
    written = 0
    for (x0, y0, x1, y1), target in zip(boxes, targets):
        if not target.is_file():
            save_png(array[y0:y1, x0:x1], target)
            written += 1
    return written, len(targets) - written


def _prepare_isprs(
    dataset: str,
    pairs: list[tuple[str, bool, Member]],
    splits: dict[str, tuple[str, ...]],
    dst: Path,
    size: int,
    stride: int,
) -> dict[str, int]:
    colours = _label_colours(dataset)
    written = skipped = 0
    split_of = {key: split for split, keys in splits.items() for key in keys}
    for key, is_label, member in iter_progress(pairs, f"{dataset} tiles"):
        split = split_of.get(key)
        if split is None:
            logger.info("%s: %s is in neither split of the published protocol; skipped", dataset, member.name)
            continue
        folder = dst / ("ann_dir" if is_label else "img_dir") / split
        w, s = _tile(member, folder, key, size, stride, colours if is_label else None)
        written, skipped = written + w, skipped + s
    return summary(dataset, dst, written, skipped)


def _check_pairs(dataset: str, pairs: list[tuple[str, bool, Member]], images_from: Path, labels_from: Path) -> None:
    images = {k for k, is_label, _ in pairs if not is_label}
    labels = {k for k, is_label, _ in pairs if is_label}
    if not images:
        raise FileNotFoundError(f"no {dataset} ortho images (*.tif) found in {images_from}")
    if not labels:
        raise FileNotFoundError(f"no {dataset} label files (*.tif) found in {labels_from}")
    unmatched = sorted(images ^ labels)
    if unmatched:
        raise FileNotFoundError(
            f"{dataset}: image(s) and labels do not pair up for {', '.join(unmatched[:8])} "
            f"(images from {images_from}, labels from {labels_from})"
        )


def prepare_potsdam(src: PathLike, dst: PathLike, *, tile_size: int = 512, stride: int = 256) -> dict[str, int]:
    """ISPRS Potsdam in mmsegmentation's layout: ``dst/{img_dir,ann_dir}/{train,val}/<i>_<j>_<x0>_<y0>_<x1>_<y1>.png``.

    Inputs in ``src`` (from the ISPRS download): ``2_Ortho_RGB.zip`` and ``5_Labels_all_noBoundary.zip``
    (the eroded colour labels), or their extracted folders of the same names. Tiles of ``tile_size``
    px are cut as upstream does (see :func:`isprs_starts`); labels are decoded from their colours to
    stored values 1..6 (impervious surface, building, low vegetation, tree, car, clutter), every
    other colour (the black eroded boundary) to 0, ignored when read. Splits follow upstream's lists
    (:data:`POTSDAM_SPLITS`). Finished tiles are skipped, so an interrupted run can be restarted;
    every file is written atomically.

    Returns ``{"written": n, "skipped": n}``. Raises FileNotFoundError naming a missing input.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    images_from = find_input(src, "2_Ortho_RGB", "2_Ortho_RGB.zip", "the ISPRS Potsdam ortho images (2_Ortho_RGB.zip)")
    labels_from = find_input(
        src,
        "5_Labels_all_noBoundary",
        "5_Labels_all_noBoundary.zip",
        "the ISPRS Potsdam eroded labels (5_Labels_all_noBoundary.zip)",
    )
    pairs = []
    for source, is_label in ((images_from, False), (labels_from, True)):
        for member in members(source, (".tif", ".tiff")):
            match = _POTSDAM_ID.search(member.basename)
            if match and ("label" in member.basename.lower()) == is_label:
                pairs.append((match.group(1), is_label, member))
    _check_pairs("potsdam", pairs, images_from, labels_from)
    return _prepare_isprs("potsdam", pairs, POTSDAM_SPLITS, dst, tile_size, stride)


def prepare_vaihingen(src: PathLike, dst: PathLike, *, tile_size: int = 512, stride: int = 256) -> dict[str, int]:
    """ISPRS Vaihingen in mmsegmentation's layout: ``dst/{img_dir,ann_dir}/{train,val}/<area>_<x0>_<y0>_<x1>_<y1>.png``.

    Inputs in ``src``: ``ISPRS_semantic_labeling_Vaihingen.zip`` (its ``top/`` IRRG images) and
    ``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip`` (``*_noBoundary.tif``
    colour labels), or their extracted folders of the same names. Tiling, label colours and
    resuming as :func:`prepare_potsdam`; splits from upstream (:data:`VAIHINGEN_SPLITS`; areas in
    neither list, such as area9's label, are skipped as upstream does).
    """
    src, dst = Path(src), require_outputs_dir(dst)
    images_from = find_input(
        src,
        "ISPRS_semantic_labeling_Vaihingen",
        "ISPRS_semantic_labeling_Vaihingen.zip",
        "the ISPRS Vaihingen images (ISPRS_semantic_labeling_Vaihingen.zip)",
    )
    labels_from = find_input(
        src,
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
        "the ISPRS Vaihingen eroded labels (ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip)",
    )
    pairs = []
    for member in members(images_from, (".tif", ".tiff")):
        match = _VAIHINGEN_ID.search(member.basename)
        if match and "/top/" in f"/{member.name}" and "noboundary" not in member.basename.lower():
            pairs.append((match.group(1), False, member))
    for member in members(labels_from, (".tif", ".tiff")):
        match = _VAIHINGEN_ID.search(member.basename)
        if match and "noboundary" in member.basename.lower():
            pairs.append((match.group(1), True, member))
    in_splits = {k for keys in VAIHINGEN_SPLITS.values() for k in keys}
    _check_pairs("vaihingen", [p for p in pairs if p[0] in in_splits], images_from, labels_from)
    return _prepare_isprs("vaihingen", pairs, VAIHINGEN_SPLITS, dst, tile_size, stride)
