"""One strip's band of summed logits in tiled inference (:mod:`pspnet_lib.inference.tiled`).

The engine in ``tiled.py`` plans the strips and runs the model; a :class:`StripBand` holds the
sums of one strip's current ``crop`` rows, hands each finished row block to the writer, and
passes what the strip's windows add to the next strip through a temporary file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch

__all__ = ["StripBand", "RegionWriter"]

#: ``write(y1, y2, x1, x2, logits, valid)``: a finished region; logits ``(K, h, w)`` float32 on
#: the CPU (undefined where ``valid`` is False), ``valid`` as the reader gave it (None: all valid).
RegionWriter = Callable[[int, int, int, int, torch.Tensor, "np.ndarray | None"], None]


class StripBand:
    """One strip's sums of logits over its current band of ``crop`` rows, emitted row block by block.

    Columns ``[start, end)`` are the strip's own; ``[end, reach)`` hold what its windows add to
    the next strip, handed over through ``carry_out`` (float32 sums, then the valid flags, per
    row block), as this strip received ``overhang`` columns from the previous one via ``carry_in``.
    """

    coverage: tuple[torch.Tensor, torch.Tensor]

    def __init__(
        self,
        rows: list[tuple[int, int]],
        columns: tuple[int, int, int],
        overhang: int,
        num_classes: int,
        device: torch.device,
        weights: torch.Tensor | None,
        write: RegionWriter,
        carry_in: IO[bytes],
        carry_out: IO[bytes],
    ) -> None:
        self.rows, self.write, self.weights = rows, write, weights
        self.start, self.end, self.reach = columns
        self.overhang, self.carry_in, self.carry_out = overhang, carry_in, carry_out
        self.height = rows[0][1] - rows[0][0]  # every window row is this tall (slide_spans)
        self.picture_height = rows[-1][1]
        self.row = 0
        width = self.reach - self.start
        # Two of each, swapped when the band moves down: no allocation per row block (glibc's heaps
        # grew with the picture when blocks of varying sizes were allocated and freed).
        self.sums, self.spare = (torch.zeros((num_classes, self.height, width), device=device) for _ in range(2))
        self.valid, self.spare_valid = (np.ones((self.height, width), dtype=bool) for _ in range(2))
        carried = num_classes * self.height * max(overhang, width - (self.end - self.start))
        self.carry = torch.empty(carried, dtype=torch.float32)  # staging for the carry files
        self.carry_flags = np.empty(self.height * max(overhang, width - (self.end - self.start)), dtype=bool)
        self.masked = False  # the reader gave a valid-pixel mask

    def add(self, window: tuple[int, int, int, int, int], logits: torch.Tensor | None, valid: Any) -> None:
        row, y1, y2, x1, x2 = window
        while row > self.row:
            self._emit()
        top = self.rows[self.row][0]
        ys, xs = slice(y1 - top, y2 - top), slice(x1 - self.start, x2 - self.start)
        if valid is not None:
            self.masked = True
            self.valid[ys, xs] = valid
        if logits is not None:  # as infer_slide: sums now, divided when the rows are finished
            self.sums[:, ys, xs] += logits if self.weights is None else logits * self.weights

    def _emit(self) -> None:
        top = self.rows[self.row][0]
        bottom = self.rows[self.row + 1][0] if self.row + 1 < len(self.rows) else self.picture_height
        count, own = bottom - top, self.end - self.start
        classes = self.sums.shape[0]
        region = self.sums[:, :count, :own]
        valid = self.valid[:count, :own]
        if self.overhang:
            size = classes * count * self.overhang
            self.carry_in.readinto(self.carry[:size].numpy())  # type: ignore[attr-defined]  # a file opened "w+b"
            self.carry_in.readinto(self.carry_flags[: count * self.overhang])  # type: ignore[attr-defined]
            region[:, :, : self.overhang] += self.carry[:size].view(classes, count, -1).to(region.device)
            flags = self.carry_flags[: count * self.overhang].reshape(count, -1)
            valid[:, : self.overhang] &= flags
            self.masked = self.masked or not flags.all()
        if self.reach > self.end:
            ahead = self.reach - self.end
            staged = self.carry[: classes * count * ahead].view(classes, count, ahead)
            staged.copy_(self.sums[:, :count, own:])
            self.carry_out.write(staged.numpy().data)
            flags = self.carry_flags[: count * ahead].reshape(count, ahead)
            flags[...] = self.valid[:count, own:]
            self.carry_out.write(flags.data)
        coverage_y, coverage_x = self.coverage
        divisor = coverage_y[top:bottom, None].to(region.device) * coverage_x[None, :]
        self.write(top, bottom, self.start, self.end, (region / divisor).cpu(), valid.copy() if self.masked else None)
        keep = self.height - count  # move the band down: its rows below the finished block stay
        self.spare[:, :keep] = self.sums[:, count:]
        self.spare[:, keep:] = 0
        self.spare_valid[:keep] = self.valid[count:]
        self.spare_valid[keep:] = True
        self.sums, self.spare = self.spare, self.sums
        self.valid, self.spare_valid = self.spare_valid, self.valid
        self.row += 1

    def finish(self) -> None:
        while self.row < len(self.rows):
            self._emit()
