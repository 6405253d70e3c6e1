"""LoveDA: the Urban and Rural folders of the official Train/Val/Test archives merged per split."""

from __future__ import annotations

import logging
from pathlib import Path

from ._common import Member, PathLike, copy_member, find_input, iter_progress, members, require_outputs_dir, summary

__all__ = ["prepare_loveda"]

logger = logging.getLogger("pspnet_lib.data.prepare")


def prepare_loveda(src: PathLike, dst: PathLike) -> dict[str, int]:
    """LoveDA in mmsegmentation's layout: ``dst/img_dir/{train,val,test}/<id>.png`` + ``dst/ann_dir/{train,val}/<id>.png``.

    Inputs in ``src`` (from Zenodo, record 5706578): ``Train.zip`` and ``Val.zip`` (required) and
    ``Test.zip`` (optional: images only), or their extracted folders ``Train/``, ``Val/``, ``Test/``.
    Each holds ``<Split>/{Urban,Rural}/{images_png,masks_png}/<id>.png``; both domains go to one
    folder per split (ids are unique across them; a clash is an error). Masks are copied unchanged
    (stored 0 = no-data, 1..7 = classes; the dataset applies ``reduce_zero_label``). Existing
    outputs are skipped; files are written atomically.
    """
    src, dst = Path(src), require_outputs_dir(dst)
    written = skipped = 0
    for split, required in (("Train", True), ("Val", True), ("Test", False)):
        try:
            source = find_input(
                src, split, f"{split}.zip", f"LoveDA's {split}.zip from https://zenodo.org/records/5706578"
            )
        except FileNotFoundError:
            if required:
                raise
            logger.info("loveda: no Test.zip in %s; the test images (unlabelled) are not prepared", src)
            continue
        jobs: list[tuple[Member, Path]] = []
        seen: dict[str, str] = {}
        for member in members(source, (".png",)):
            parts = member.name.split("/")
            if len(parts) < 3 or parts[-3] not in ("Urban", "Rural") or parts[-2] not in ("images_png", "masks_png"):
                continue
            kind = "img_dir" if parts[-2] == "images_png" else "ann_dir"
            key = f"{kind}/{member.basename}"
            if key in seen:
                raise ValueError(
                    f"loveda: {member.name} and {seen[key]} would both become {kind}/{split.lower()}/{member.basename}"
                )
            seen[key] = member.name
            jobs.append((member, dst / kind / split.lower() / member.basename))
        if not any(t.parent.parent.name == "img_dir" for _, t in jobs):
            raise FileNotFoundError(
                f"no {split}/{{Urban,Rural}}/images_png/*.png in {source}; is it LoveDA's {split}.zip?"
            )
        for member, target in iter_progress(jobs, f"loveda {split.lower()}"):
            if target.is_file():
                skipped += 1
                continue
            copy_member(member, target)
            written += 1
    return summary("loveda", dst, written, skipped)
