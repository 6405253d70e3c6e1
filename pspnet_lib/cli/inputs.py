"""The input files of ``pspnet predict`` (pictures by path or folder), shared by its two paths.

``cli/predict.py`` (pictures in memory) and ``cli/predict_tiled.py`` (rasters and large
pictures, window by window) both list their inputs here, so neither imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

__all__ = ["collect_inputs"]

logger = logging.getLogger("pspnet_lib.cli.predict")


def collect_inputs(inputs: Sequence[str], recursive: bool) -> list[tuple[Path, Path]]:
    """``(image_path, relative_output_stem)`` for every input file, in a stable order.

    Files named explicitly are taken whatever their extension; folders contribute files with an
    image extension (:data:`~pspnet_lib.core.images.IMAGE_EXTENSIONS`).
    """
    from ..core.images import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                logger.warning(
                    "no image files in %s%s", path, "" if recursive else " (use --recursive for sub-folders)"
                )
            found += [(p, p.relative_to(path).with_suffix("")) for p in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return found
