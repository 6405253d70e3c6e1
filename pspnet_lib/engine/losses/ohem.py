"""Online hard example mining of pixels: mmsegmentation 1.2.2's ``OHEMPixelSampler``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...core.constants import IGNORE_INDEX

__all__ = ["OHEMPixelSampler"]


class OHEMPixelSampler:
    """Which scored pixels the per-pixel loss terms keep: mmsegmentation 1.2.2's ``OHEMPixelSampler``.

    With a probability threshold ``thresh``: the pixels whose softmax probability of their true
    class is below ``max(thresh, q)`` are kept, ``q`` being the ``(min_kept * N)``-th lowest such
    probability of the batch (0-based index, clamped to the last scored pixel), so that at least
    ``min_kept`` pixels per image are kept when the model is confident. Without ``thresh``
    (``None``): the ``min_kept * N`` pixels with the highest loss (the per-pixel terms' losses
    summed) are kept. Ignored pixels are never kept. The mask is computed without gradient;
    the per-pixel terms multiply their pixels' losses by it and keep their denominators
    (as mmsegmentation's decode head does with ``seg_weight``).

    mmsegmentation applies the sampler to the decode head only; so does
    :class:`~pspnet_lib.engine.loss.PSPNetLoss` (the auxiliary head's terms see every pixel).

    Args:
        thresh: in (0, 1), or None (rank by loss). mmsegmentation's OHEM configs use 0.7.
        min_kept: pixels kept at least, per image (> 1; mmsegmentation's default 100000).
        ignore_index: mask value of unscored pixels.

    Raises:
        ValueError: ``thresh`` outside (0, 1) or ``min_kept`` not an integer > 1.
    """

    def __init__(self, thresh: float | None = None, min_kept: int = 100000, ignore_index: int = IGNORE_INDEX) -> None:
        if thresh is not None and (
            isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0 < thresh < 1
        ):
            raise ValueError(f"thresh must be in (0, 1) or None, got {thresh!r}")
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept <= 1:
            raise ValueError(f"min_kept must be an integer > 1 (pixels per image), got {min_kept!r}")
        self.thresh = None if thresh is None else float(thresh)
        self.min_kept = min_kept
        self.ignore_index = int(ignore_index)

    def __repr__(self) -> str:
        return f"OHEMPixelSampler(thresh={self.thresh}, min_kept={self.min_kept}, ignore_index={self.ignore_index})"

    @torch.no_grad()
    def sample(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_losses: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The mask of kept pixels, ``(N, H, W)`` float32 of 0 and 1.

        Args:
            logits: ``(N, K, H, W)`` scores of the head the terms are applied to.
            target: ``(N, H, W)`` int64 class indices (``ignore_index`` for unscored pixels).
            pixel_losses: ``(logits, target) -> (N, H, W)`` losses to rank by when ``thresh`` is
                None (required then).
        """
        batch_kept = self.min_kept * target.shape[0]
        valid = target != self.ignore_index
        weight = torch.zeros(target.shape, dtype=torch.float32, device=target.device)
        count = int(valid.sum())
        if count == 0:
            return weight
        if self.thresh is not None:
            safe = torch.where(valid, target, torch.zeros_like(target))
            prob = logits.float().softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)[valid]
            # mmseg: sorted probabilities, the one at index min(batch_kept, count - 1)
            threshold = max(float(torch.kthvalue(prob, min(batch_kept, count - 1) + 1).values), self.thresh)
            weight[valid] = (prob < threshold).float()
        else:
            if pixel_losses is None:
                raise ValueError("an OHEM sampler without thresh ranks pixels by loss: pass pixel_losses")
            losses = pixel_losses(logits, target)[valid]
            order = torch.sort(losses, descending=True).indices  # mmseg sorts (faster than topk)
            kept = torch.zeros(count, dtype=torch.float32, device=target.device)
            kept[order[:batch_kept]] = 1.0
            weight[valid] = kept
        return weight

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The spec form (``{"type": "ohem", "thresh": ..., "min_kept": ...}``)."""
        return {"type": "ohem", "thresh": self.thresh, "min_kept": self.min_kept}
