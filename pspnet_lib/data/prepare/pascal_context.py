"""PASCAL Context: index masks (0..59) from the PASCAL-in-Detail annotation file ``trainval_merged.json``.

mmsegmentation's ``tools/dataset_converters/pascal_context.py`` reads this file with the ``detail``
API (PASCAL in Detail, not on PyPI); the file is JSON with COCO run-length-encoded masks, so it is
read here with :mod:`json` and a COCO RLE decoder, with no extra package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import atomic_write_bytes, read_json
from ._common import Member, PathLike, copy_member, iter_progress, require_outputs_dir, save_png, summary

__all__ = ["prepare_pascal_context", "decode_coco_rle", "PASCAL_CONTEXT_IDS"]

logger = logging.getLogger("pspnet_lib.data.prepare")

#: The ids (in the 459-category PASCAL Context labelling that ``trainval_merged.json`` uses) of
#: background (0) and the 59 classes; id ``PASCAL_CONTEXT_IDS[k]`` becomes stored value ``k``
#: (mmsegmentation's converter; the order is that of the 60 class names).
PASCAL_CONTEXT_IDS: tuple[int, ...] = (
    0,
    2,
    9,
    18,
    19,
    22,
    23,
    25,
    31,
    33,
    34,
    44,
    45,
    46,
    59,
    65,
    68,
    72,
    80,
    85,
    98,
    104,
    105,
    113,
    115,
    144,
    158,
    159,
    162,
    187,
    189,
    207,
    220,
    232,
    258,
    259,
    260,
    284,
    295,
    296,
    308,
    324,
    326,
    347,
    349,
    354,
    355,
    360,
    366,
    368,
    397,
    415,
    416,
    420,
    424,
    427,
    440,
    445,
    454,
    458,
)


def _rle_counts(text: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths (pycocotools' ``rleFrString``: 5-bit groups
    offset by 48, continuation bit 0x20, sign bit 0x10; from the 3rd run on, deltas to run i - 2)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            char = ord(text[position]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_coco_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO run-length-encoded mask (``{"size": [h, w], "counts": str | list}``) as bool ``(h, w)``.

    Runs alternate 0s and 1s, starting with 0s, over the pixels in column-major order.
    """
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = _rle_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(runs) != height * width or min(runs, default=0) < 0:
        raise ValueError(f"RLE runs sum to {sum(runs)} for a {height}x{width} mask")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


def _paint(
    image: dict[str, Any], annotations: Sequence[dict[str, Any]], lut: dict[int, int], source: str
) -> np.ndarray:
    # As the detail API's getMask: zeros, then each annotation's category id in file order (later
    # ones paint over earlier ones), then the 459-category ids -> 0..59.
    ids = np.zeros((int(image["height"]), int(image["width"])), dtype=np.int64)
    for annotation in annotations:
        ids[decode_coco_rle(annotation["segmentation"])] = int(annotation["category_id"])
    values = np.unique(ids)
    unknown = [int(v) for v in values if int(v) not in lut]
    if unknown:
        raise ValueError(
            f"{source}: image {image.get('file_name')} has category id(s) {unknown[:8]} that are not among the 59 "
            "PASCAL Context classes; is this PASCAL in Detail's trainval_merged.json?"
        )
    table = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for value in values:
        table[value] = lut[int(value)]
    return table[ids]


def prepare_pascal_context(src: PathLike, dst: PathLike, *, annotations: PathLike | None = None) -> dict[str, int]:
    """PASCAL Context in mmsegmentation's layout under ``dst/VOC2010``: ``JPEGImages/<id>.jpg``,
    ``SegmentationClassContext/<id>.png`` (values 0..59, 0 = background) and
    ``ImageSets/SegmentationContext/{train,val}.txt``.

    Inputs: the VOC2010 images (``src/VOCdevkit/VOC2010/JPEGImages`` or ``src/VOC2010/JPEGImages``,
    from ``VOCtrainval_03-May-2010.tar``, extracted) and PASCAL in Detail's ``trainval_merged.json``
    (``src/trainval_merged.json`` unless ``annotations`` names it). Each image's mask is its
    segmentation annotations painted in file order (as the ``detail`` API's ``getMask``, which
    mmsegmentation's converter calls), mapped from the 459-category ids to 0..59
    (:data:`PASCAL_CONTEXT_IDS`); an id outside those is an error. The same masks serve the 60-class
    (``pascal-context``) and 59-class (``pascal-context-59``) datasets. Existing masks and images
    are skipped; every file is written atomically, the split lists last.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    voc = next((p for p in (src / "VOCdevkit" / "VOC2010", src / "VOC2010", src) if (p / "JPEGImages").is_dir()), None)
    if voc is None:
        raise FileNotFoundError(
            f"missing input {src / 'VOCdevkit' / 'VOC2010' / 'JPEGImages'}/: the VOC2010 images "
            "(extract VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ into it)"
        )
    json_path = Path(annotations) if annotations else src / "trainval_merged.json"
    if not json_path.is_file():
        raise FileNotFoundError(
            f"missing input {json_path}: PASCAL in Detail's annotation file trainval_merged.json "
            "(see docs/datasets.md for where to get it)"
        )
    data = read_json(json_path, "annotation file")
    if not isinstance(data, dict) or "images" not in data or "annos_segmentation" not in data:
        raise ValueError(
            f"{json_path} has no 'images' and 'annos_segmentation'; expected PASCAL in Detail's trainval_merged.json"
        )
    lut = {cid: k for k, cid in enumerate(PASCAL_CONTEXT_IDS)}
    per_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in data["annos_segmentation"]:
        per_image.setdefault(annotation["image_id"], []).append(annotation)
    out = dst / "VOC2010"
    written = skipped = 0
    lists: dict[str, list[str]] = {"train": [], "val": []}
    images = [img for img in data["images"] if img.get("phase") in lists]
    for image in iter_progress(images, "pascal-context"):
        stem = Path(image["file_name"]).stem
        lists[image["phase"]].append(stem)
        jpeg = voc / "JPEGImages" / image["file_name"]
        if not jpeg.is_file():
            raise FileNotFoundError(
                f"missing input {jpeg}: the VOC2010 image of {image['file_name']} named in {json_path}"
            )
        mask_out = out / "SegmentationClassContext" / f"{stem}.png"
        image_out = out / "JPEGImages" / image["file_name"]
        if mask_out.is_file() and image_out.is_file():
            skipped += 2
            continue
        if not image_out.is_file():
            copy_member(Member(image["file_name"], jpeg.read_bytes, jpeg), image_out)
            written += 1
        if not mask_out.is_file():
            save_png(_paint(image, per_image.get(image["image_id"], []), lut, str(json_path)), mask_out)
            written += 1
    for split, stems in lists.items():
        atomic_write_bytes(
            out / "ImageSets" / "SegmentationContext" / f"{split}.txt",
            "".join(f"{s}\n" for s in sorted(stems)).encode(),
        )
    return summary("pascal-context", dst, written, skipped)
