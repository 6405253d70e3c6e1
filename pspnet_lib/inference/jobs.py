"""What one input of a batch prediction becomes: the runners, and the staged write of their files.

:func:`~pspnet_lib.inference.batch.predict_files` owns everything inputs share: listing,
sharding, the skip-existing check, the manifest, fail-soft and the exit status. A **runner**
says which files one input gives and writes them:

* :class:`PictureRunner` (the default): pictures decoded by DataLoader workers and batched; it
  writes the mask PNG, the overlay and the confidence picture of a :class:`Prediction`;
* a runner with ``batched = False`` does all the work of one input itself in :meth:`InputRunner.run`
  (e.g. tiled inference on a raster too large to decode at once, writing its output window by
  window). ``predict_files(..., route=...)`` picks a runner per input.

Every file is written under a temporary name in its folder (:func:`staged_outputs`); the
manifest record is appended, then every temporary file is renamed into place. A present output
is therefore always complete, and every present output has its record.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn
from PIL import Image

from .._files import atomic_output
from ..core.inference_protocol import InferenceProtocol
from .confidence import check_kind, scaled, to_uint8, uncertainty
from .predict import Prediction

__all__ = ["InputRunner", "PictureRunner", "RunContext", "staged_outputs"]


@dataclass(frozen=True)
class RunContext:
    """What a runner needs besides its input: the protocol resolved for the model, its channel count
    and number of classes, and the options of :func:`predict` that the run was given."""

    protocol: InferenceProtocol
    in_channels: int
    num_classes: int
    confidence: str | None = None
    amp_dtype: Any = None


class InputRunner:
    """How one kind of input becomes files. Subclass it for a new kind (see the module docstring).

    :meth:`suffixes` names the files: the input's key followed by a suffix per kind of output
    (``{"mask": ".png"}`` gives ``sub/a.png`` for ``sub/a.jpg``), so that names that would
    collide are found before any work. A batched runner implements :meth:`write` (the batch
    pipeline decodes and predicts), an unbatched one :meth:`run`. Both return the fields they add
    to the input's manifest record (e.g. ``height``, ``width``).
    """

    #: True: the input is a picture that DataLoader workers decode and the pipeline batches.
    batched: ClassVar[bool] = True

    def suffixes(self) -> dict[str, str]:
        """kind -> what follows the key in that output's file name (e.g. ``{"mask": ".png"}``)."""
        raise NotImplementedError

    def outputs(self, key: str) -> dict[str, str]:
        """kind -> file name relative to the output folder, for the input named ``key``."""
        return {kind: key + suffix for kind, suffix in self.suffixes().items()}

    def write(self, prediction: Prediction, staged: Mapping[str, Path], context: RunContext) -> dict[str, Any]:
        """Write ``prediction``'s files to the temporary paths ``staged`` (kind -> path)."""
        raise NotImplementedError

    def run(self, model: nn.Module, source: str, staged: Mapping[str, Path], context: RunContext) -> dict[str, Any]:
        """Segment ``source`` with ``model`` and write its files to ``staged`` (unbatched runners)."""
        raise NotImplementedError


class PictureRunner(InputRunner):
    """The mask PNG ``<key>.png`` (paletted, pixel value = class index), with ``overlay`` also
    ``<key>_overlay.png``, with ``confidence=KIND`` also ``<key>_<KIND>.png`` (8-bit grey, scaled
    as :mod:`pspnet_lib.inference.confidence` says)."""

    batched = True

    def __init__(self, *, overlay: bool = False, alpha: float = 0.5, confidence: str | None = None) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (overlay opacity) must be in [0, 1], got {alpha}")
        self.overlay = overlay
        self.alpha = alpha
        self.confidence = check_kind(confidence)

    def suffixes(self) -> dict[str, str]:
        names = {"mask": ".png"}
        if self.overlay:
            names["overlay"] = "_overlay.png"
        if self.confidence is not None:
            names[self.confidence] = f"_{self.confidence}.png"
        return names

    def write(self, prediction: Prediction, staged: Mapping[str, Path], context: RunContext) -> dict[str, Any]:
        prediction.colorize().save(staged["mask"], format="PNG")
        if "overlay" in staged:
            prediction.overlay(alpha=self.alpha).save(staged["overlay"], format="PNG")
        height, width = prediction.mask.shape
        fields: dict[str, Any] = {"height": int(height), "width": int(width)}
        kind = self.confidence
        if kind is not None:
            confidence = prediction.confidence
            if confidence is None:
                raise ValueError(f"the prediction carries no {kind} map; predict with confidence={kind!r}")
            Image.fromarray(to_uint8(confidence, kind, context.num_classes), mode="L").save(staged[kind], format="PNG")
            mean = float(scaled(confidence, kind, context.num_classes).double().mean())
            fields.update(confidence_kind=kind, confidence_mean=mean, uncertainty=uncertainty(mean, kind))
        return fields


@contextlib.contextmanager
def staged_outputs(outputs: Mapping[str, str | os.PathLike]) -> Iterator[dict[str, Path]]:
    """Temporary paths for ``outputs`` (kind -> final path), renamed into place together on success.

    Code in the ``with`` block writes every temporary file and then records the input (the
    manifest line); the renames happen on leaving the block. If the block raises, every temporary
    file is removed and no output is touched.
    """
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(atomic_output(path)) for kind, path in outputs.items()}
