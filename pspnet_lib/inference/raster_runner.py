"""Tiled inputs in a batch prediction: rasters and large pictures as one more kind of input.

:func:`~pspnet_lib.inference.batch.predict_files` runs pictures through the batched DataLoader
pipeline; an input that :func:`tiled_route` sends here (a georeferenced raster, a raster over
``max_pixels`` pixels, or every input with ``tiled=True``) is segmented window by window by
:func:`~pspnet_lib.inference.rasters.predict_raster` instead, with the same manifest, resume,
staged (temporary, then renamed) outputs, failure records and exit status as a picture.

Outputs of a tiled input named ``key``: ``<key>.tif`` (a GeoTIFF with the input's transform and
CRS; ``<key>.png``, the paletted mask, for a picture), and as asked ``<key>_probs.tif``,
``<key>_confidence.tif`` (maximum probability x 255), ``<key>_polygons.geojson`` (docs/rasters.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._files import temporary_target
from .inputs import InputFile
from .jobs import InputRunner, RunContext
from .rasters import PICTURE_SUFFIXES, TILED_PIXELS, needs_tiling, predict_raster, raster_outputs

__all__ = ["RasterRunner", "tiled_route"]


class RasterRunner(InputRunner):
    """One input segmented by :func:`~pspnet_lib.inference.rasters.predict_raster` (unbatched).

    ``mask_suffix`` is ``".tif"`` (GeoTIFF) or ``".png"``; the other arguments are those of
    :func:`~pspnet_lib.inference.rasters.predict_raster`. The manifest record gets ``height``,
    ``width``, ``tiled: true`` and ``windows`` (windows the model ran).
    """

    batched = False

    def __init__(self, *, mask_suffix: str = ".tif", **options: Any) -> None:
        self.mask_suffix = mask_suffix
        self.options = options
        wanted = {kind: bool(options.get(kind)) for kind in ("probs", "confidence", "polygons")}
        example = raster_outputs("x" + mask_suffix, **wanted)  # checks the suffix
        self._suffixes = {kind: path.name[1:] for kind, path in example.items()}

    def suffixes(self) -> dict[str, str]:
        return dict(self._suffixes)

    def run(self, model: nn.Module, source: str, staged: Mapping[str, Path], context: RunContext) -> dict[str, Any]:
        mask = staged["mask"]
        out = mask.with_name(temporary_target(mask.name) or mask.name)  # the name the mask will have
        result = predict_raster(
            model,
            source,
            out,
            staged=staged,
            overwrite=True,
            amp_dtype=context.amp_dtype,
            progress=False,
            **self.options,
        )
        return {"height": result.height, "width": result.width, "tiled": True, "windows": result.windows}


def tiled_route(
    *,
    tiled: bool | None = None,
    max_pixels: int = TILED_PIXELS,
    confidence: str | None = None,
    refuse: Sequence[str] = (),
    **options: Any,
) -> Callable[[InputFile], InputRunner | None]:
    """A ``route`` for :func:`~pspnet_lib.inference.batch.plan_predictions`: which inputs are tiled.

    Args:
        tiled: True: every input; False: none; None: the inputs whose suffix is not a picture's
            (``.tif`` and every other GDAL format) and that :func:`~pspnet_lib.inference.rasters.needs_tiling`
            (``max_pixels``) selects: georeferenced, or over ``max_pixels`` pixels. Pictures
            (``.png``, ``.jpg``, ...) found in folders are not opened to be measured (planning a
            million of them stays fast); name them or pass ``tiled=True``.
        confidence: the run's confidence kind; tiled inputs write ``maxprob`` only.
        refuse: options that were given and that tiled inference does not apply (e.g.
            ``["--overlay"]``): a tiled input then raises ``ValueError`` naming them.
        options: for :func:`~pspnet_lib.inference.rasters.predict_raster` (``bands``, ``nodata``,
            ``crop``, ``stride``, ``blend``, ``batch_size``, ``probs``, ``polygons``, ``max_image_pixels``).
    """
    if confidence not in (None, "maxprob"):
        needs = f"confidence={confidence!r}"
    else:
        needs = ""
    runners = {
        suffix: RasterRunner(mask_suffix=suffix, confidence=confidence is not None, **options)
        for suffix in (".tif", ".png")
    }

    def route(item: InputFile) -> InputRunner | None:
        picture = os.path.splitext(item.path)[1].lower() in PICTURE_SUFFIXES
        if tiled is False or (tiled is None and (picture or not needs_tiling(item.path, max_pixels=max_pixels))):
            return None
        given = [*refuse, needs] if needs else list(refuse)
        if given:
            raise ValueError(
                f"{item.path} is segmented by tiles (a raster or large picture), to which {', '.join(given)} "
                "does not apply: remove it (tiled confidence is maxprob), or segment the rasters in a separate run"
            )
        return runners[".png" if picture else ".tif"]

    return route
