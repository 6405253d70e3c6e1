"""The loss terms: cross-entropy, focal, Dice and Lovász-softmax, each equal to the implementation it is named after.

Every term is an ``nn.Module`` called as ``term(logits, target, pixel_weight=None)``:

* ``logits``: ``(N, K, H, W)`` raw scores (any float dtype; computed in float32);
* ``target``: ``(N, H, W)`` int64 class indices, ``ignore_index`` for unscored pixels (validated
  beforehand by :func:`pspnet_lib.engine.loss.check_target`);
* ``pixel_weight``: optional ``(N, H, W)`` float weights, the mask of the OHEM sampler
  (:class:`~pspnet_lib.engine.losses.ohem.OHEMPixelSampler`). The per-pixel terms (cross-entropy,
  focal) multiply each pixel's loss by it before their reduction, as mmsegmentation's decode head
  does; the region terms (Dice, Lovász) do not use it (mmsegmentation's ``LovaszLoss`` ignores it
  and its ``DiceLoss`` cannot take it).

It returns a scalar: ``loss_weight`` times the term's value. Ignored pixels never contribute, in
the value or the gradient, and a batch whose every pixel is ignored gives 0 (not NaN). The
reference of each term is named in its docstring; ``tests/test_losses_reference.py`` checks every
term against values the reference implementations computed (``tests/data/losses/``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.constants import IGNORE_INDEX

__all__ = ["CrossEntropyLoss", "DiceLoss", "FocalLoss", "LossTerm", "LovaszLoss", "check_class_weight"]


def check_class_weight(values: Sequence[float] | None) -> list[float] | None:
    """``values`` as a list of floats, or None.

    Raises:
        ValueError: (its message says what is wrong, without naming the setting) unless every
            weight is a finite number >= 0 and at least one is positive.
    """
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"must be a list of numbers (one weight per class), got {values!r}")
    try:
        weights = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"must be a list of numbers (one weight per class), got {list(values)!r}") from None
    bad = [v for v in weights if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"must hold finite weights >= 0, got {bad[0]!r}")
    if not weights or max(weights) <= 0:
        raise ValueError(f"needs at least one positive weight, got {weights}")
    return weights


class LossTerm(nn.Module):
    """Base of the terms: ``loss_weight``, ``ignore_index``, the optional per-class weights and
    the checks of the inputs' shapes."""

    #: the term's name in the loss spec (``"cross_entropy"``, ...), the log and ``history.json``.
    name: str = ""
    #: whether the term is a mean of per-pixel losses (then the OHEM sampler's mask applies to it).
    per_pixel: bool = False

    def __init__(
        self, loss_weight: float = 1.0, ignore_index: int = IGNORE_INDEX, class_weight: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)) or not loss_weight >= 0:
            raise ValueError(f"loss_weight must be a number >= 0, got {loss_weight!r}")
        if not math.isfinite(loss_weight):
            raise ValueError(f"loss_weight must be finite, got {loss_weight!r}")
        self.loss_weight = float(loss_weight)
        self.ignore_index = int(ignore_index)
        try:
            weights = check_class_weight(class_weight)
        except ValueError as error:
            raise ValueError(f"class_weight {error}") from None
        self.class_weight: torch.Tensor | None
        self.register_buffer(
            "class_weight", None if weights is None else torch.tensor(weights, dtype=torch.float32), persistent=False
        )

    def extra_repr(self) -> str:
        weights = None if self.class_weight is None else [round(v, 4) for v in self.class_weight.tolist()]
        return f"loss_weight={self.loss_weight}, ignore_index={self.ignore_index}, class_weight={weights}"

    def _inputs(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 logits, the target with ignored pixels set to class 0 (safe to index with) and the
        mask of scored pixels."""
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"{self.name}: logits must be (N, K, H, W) and the target (N, H, W) at the same size, got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        if self.class_weight is not None and self.class_weight.numel() != logits.shape[1]:
            raise ValueError(
                f"{self.name}: class_weight has {self.class_weight.numel()} values for {logits.shape[1]} classes"
            )
        if self.class_weight is not None and self.class_weight.device != logits.device:
            self.class_weight = self.class_weight.to(logits.device)  # a term left on the CPU follows its inputs
        valid = target != self.ignore_index
        return logits.float(), torch.where(valid, target, torch.zeros_like(target)), valid

    def pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` per-pixel losses (0 at ignored pixels), ``loss_weight`` included: what the
        OHEM sampler ranks pixels by when it has no probability threshold. Per-pixel terms only."""
        raise NotImplementedError(f"{self.name} is not a per-pixel loss")


class CrossEntropyLoss(LossTerm):
    """Pixel-wise cross-entropy: mmsegmentation 1.2.2's ``CrossEntropyLoss`` (``use_sigmoid=False``),
    with PyTorch's ``label_smoothing``.

    ``value = sum_i w_i * ce_i / D`` over the pixels ``i``, where ``ce_i`` is
    ``F.cross_entropy(..., weight=class_weight, label_smoothing=label_smoothing, reduction="none")``
    (0 at ignored pixels), ``w_i`` the OHEM mask (1 without it) and the denominator ``D``:

    * ``avg_non_ignore=True`` (the default, and what pspnet_lib's trainer has always done): the
      number of scored pixels, or with ``class_weight`` the sum of the scored pixels' class weights:
      PyTorch's ``reduction="mean"`` and mmsegmentation's ``avg_non_ignore=True``;
    * ``avg_non_ignore=False``: every pixel of the batch, ignored ones included: mmsegmentation's
      default (``avg_non_ignore=False``), which its published configs and checkpoints use. With
      ``class_weight`` the denominator stays the scored pixels' class weights: mmsegmentation 1.2.2
      computes the same sum where it can, but indexes ``class_weight`` with the ignore label and
      fails (``IndexError``) on any batch that holds an ignored pixel.

    ``D = 0`` (no scored pixel) gives 0. The OHEM mask does not change ``D`` (as in mmsegmentation,
    whose average factor comes from the labels alone).

    Args:
        loss_weight: the term's factor.
        ignore_index: mask value of unscored pixels.
        class_weight: one weight >= 0 per class (None: all 1).
        label_smoothing: in [0, 1): PyTorch's ``F.cross_entropy(label_smoothing=...)`` (the target
            is ``(1 - eps)`` on the true class plus ``eps / K`` on every class).
        avg_non_ignore: the denominator, see above.
    """

    name = "cross_entropy"
    per_pixel = True

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        class_weight: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        avg_non_ignore: bool = True,
    ) -> None:
        super().__init__(loss_weight, ignore_index, class_weight)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if not isinstance(avg_non_ignore, bool):
            raise ValueError(f"avg_non_ignore must be true or false, got {avg_non_ignore!r}")
        self.label_smoothing = float(label_smoothing)
        self.avg_non_ignore = avg_non_ignore

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, label_smoothing={self.label_smoothing}, avg_non_ignore={self.avg_non_ignore}"

    def _per_pixel(self, logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        return F.cross_entropy(
            logits,
            target,
            weight=self.class_weight,
            ignore_index=self.ignore_index,
            reduction=reduction,
            label_smoothing=self.label_smoothing,
        )

    def pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._inputs(logits, target)
        return self.loss_weight * self._per_pixel(logits.float(), target, "none")

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores, safe_target, valid = self._inputs(logits, target)
        if pixel_weight is None:
            total = self._per_pixel(scores, target, "sum")  # the reduction the trainer always used
        else:
            total = (self._per_pixel(scores, target, "none") * pixel_weight).sum()
        if self.class_weight is not None:
            denominator = (self.class_weight[safe_target] * valid).sum()
        elif self.avg_non_ignore:
            denominator = valid.sum()
        else:
            denominator = torch.tensor(target.numel(), device=target.device)
        denominator = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        return self.loss_weight * (total / denominator)


class FocalLoss(LossTerm):
    """Multi-class focal loss: segmentation_models_pytorch 0.6.0's ``FocalLoss("multiclass")``.

    As smp computes it (Lin et al. 2017's focal term on one-vs-rest binary cross-entropy): for each
    class ``c``, ``fl_ic = (1 - p_t)^gamma * BCE(logit_ic, [y_i == c])`` with ``p_t = exp(-BCE)``
    (times ``alpha`` for positives and ``1 - alpha`` for negatives when ``alpha`` is given),
    averaged over the scored pixels; the class values are averaged (weighted by ``class_weight``:
    ``sum_c w_c l_c / sum_c w_c``, smp's ``class_weights``). mmsegmentation's ``FocalLoss`` is a
    sigmoid focal loss on one-hot targets that does not take these inputs, hence smp's.

    With the OHEM mask ``w_i`` each class value is ``sum_i w_i fl_ic / (scored pixels)``
    (mmsegmentation's weighted reduction; smp has no pixel weights).

    Args:
        loss_weight, ignore_index, class_weight: as for every term.
        gamma: the focusing exponent (>= 0; 0 is one-vs-rest binary cross-entropy).
        alpha: the positive/negative balance in [0, 1], or None (smp's default: none).
    """

    name = "focal"
    per_pixel = True

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        class_weight: Sequence[float] | None = None,
        gamma: float = 2.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__(loss_weight, ignore_index, class_weight)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < math.inf:
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        if alpha is not None and (
            isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1
        ):
            raise ValueError(f"alpha must be None or a number in [0, 1], got {alpha!r}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, alpha={self.alpha}"

    def _class_pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, K, H, W)`` focal losses (0 at ignored pixels) and the scored-pixel mask."""
        scores, safe_target, valid = self._inputs(logits, target)
        onehot = F.one_hot(safe_target, scores.shape[1]).permute(0, 3, 1, 2).to(scores.dtype)
        logpt = F.binary_cross_entropy_with_logits(scores, onehot, reduction="none")
        loss = (1.0 - torch.exp(-logpt)).pow(self.gamma) * logpt
        if self.alpha is not None:
            loss = loss * (self.alpha * onehot + (1 - self.alpha) * (1 - onehot))
        return loss * valid.unsqueeze(1), valid

    def _class_factors(self, num_classes: int, device: torch.device) -> torch.Tensor:
        if self.class_weight is None:
            return torch.full((num_classes,), 1.0 / num_classes, device=device)
        return self.class_weight / self.class_weight.sum()

    def pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss, _ = self._class_pixel_losses(logits, target)
        factors = self._class_factors(loss.shape[1], loss.device).view(1, -1, 1, 1)
        return self.loss_weight * (loss * factors).sum(1)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss, valid = self._class_pixel_losses(logits, target)
        if pixel_weight is not None:
            loss = loss * pixel_weight.unsqueeze(1)
        per_class = loss.sum((0, 2, 3)) / valid.sum().clamp(min=1)
        factors = self._class_factors(per_class.numel(), per_class.device)
        return self.loss_weight * (per_class * factors).sum()


class DiceLoss(LossTerm):
    """Multi-class soft Dice loss: segmentation_models_pytorch 0.6.0's
    ``DiceLoss("multiclass", from_logits=True)``.

    ``p = softmax(logits)``; over the scored pixels of the whole batch, for each class ``c``:
    ``dice_c = (I_c + smooth) / max(0.5 * (sum p_c + sum t_c) + smooth, eps)`` with ``I_c = sum p_c t_c``
    and ``t_c`` the one-hot target; ``loss_c = 1 - dice_c``, set to 0 for a class with no target
    pixel in the batch; the value is the mean over classes (weighted by ``class_weight``:
    ``sum_c w_c loss_c / sum_c w_c``, smp's ``class_weights``). mmsegmentation 1.2.2's ``DiceLoss``
    (sigmoid by default, one value per image over all classes together) lets the predictions at
    ignored pixels into its denominator, so it does not respect the ignore index; smp's does.

    A region term: the OHEM mask does not apply.

    Args:
        loss_weight, ignore_index, class_weight: as for every term.
        smooth: added to the numerator and the denominator (smp's ``smooth``, default 0).
        eps: the denominator's lower bound (smp's ``eps``, default 1e-7).
    """

    name = "dice"

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        class_weight: Sequence[float] | None = None,
        smooth: float = 0.0,
        eps: float = 1e-7,
    ) -> None:
        super().__init__(loss_weight, ignore_index, class_weight)
        for key, value in (("smooth", smooth), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        self.smooth, self.eps = float(smooth), float(eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, smooth={self.smooth}, eps={self.eps}"

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores, safe_target, valid = self._inputs(logits, target)
        scored = valid.unsqueeze(1).to(scores.dtype)
        probs = scores.log_softmax(1).exp() * scored  # smp: log_softmax(...).exp()
        onehot = F.one_hot(safe_target, scores.shape[1]).permute(0, 3, 1, 2).to(scores.dtype) * scored
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        target_sum = onehot.sum(dims)
        dice = (intersection + self.smooth) / (0.5 * (probs.sum(dims) + target_sum) + self.smooth).clamp_min(self.eps)
        loss = (1.0 - dice) * (target_sum > 0).to(dice.dtype)
        if self.class_weight is not None:
            value = (loss * self.class_weight).sum() / self.class_weight.sum()
        else:
            value = loss.mean()
        return self.loss_weight * value


class LovaszLoss(LossTerm):
    """Lovász-softmax loss (Berman et al. 2018): mmsegmentation 1.2.2's ``LovaszLoss(loss_type="multi_class")``.

    ``p = softmax(logits)``; over the scored pixels (of the batch, or of each image with
    ``per_image``), for each class ``c`` (``classes="present"``: only those with a target pixel;
    ``"all"``: every class), the errors ``|[y == c] - p_c|`` sorted in decreasing order are
    dotted with the gradient of the Lovász extension of the Jaccard loss; each class value is
    multiplied by its ``class_weight`` and the classes are averaged (a plain mean, as mmseg does).
    ``per_image`` averages the images' values (an image with no scored pixel counts 0).
    segmentation_models_pytorch 0.6.0's ``LovaszLoss("multiclass")`` gives the same value.

    A region term: the OHEM mask does not apply (mmsegmentation's ``LovaszLoss`` ignores it).

    Args:
        loss_weight, ignore_index, class_weight: as for every term.
        per_image: one value per image, averaged (mmseg's ``per_image``).
        classes: ``"present"`` (default) or ``"all"``.
    """

    name = "lovasz"
    #: the most ``pixels x classes`` sorted at once (classes are processed in chunks below this).
    CHUNK_ELEMENTS = 1 << 24

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        class_weight: Sequence[float] | None = None,
        per_image: bool = False,
        classes: str = "present",
    ) -> None:
        super().__init__(loss_weight, ignore_index, class_weight)
        if not isinstance(per_image, bool):
            raise ValueError(f"per_image must be true or false, got {per_image!r}")
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        self.per_image, self.classes = per_image, classes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_image={self.per_image}, classes={self.classes!r}"

    def _flat(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of ``probs`` ``(P, K)`` against ``labels`` ``(P,)`` (scored pixels only)."""
        num_pixels, num_classes = probs.shape
        if num_pixels == 0:
            return probs.sum() * 0.0
        values = []
        chunk = max(1, self.CHUNK_ELEMENTS // num_pixels)
        for start in range(0, num_classes, chunk):
            cls = torch.arange(start, min(start + chunk, num_classes), device=probs.device)
            fg = (labels.unsqueeze(1) == cls).to(probs.dtype)  # (P, C)
            errors = (fg - probs[:, cls]).abs()
            errors_sorted, order = torch.sort(errors, dim=0, descending=True)
            fg_sorted = fg.gather(0, order)
            # The Lovász extension's gradient (Berman et al., Alg. 1), per class column.
            gts = fg_sorted.sum(0, keepdim=True)
            intersection = gts - fg_sorted.cumsum(0)
            union = gts + (1.0 - fg_sorted).cumsum(0)
            jaccard = 1.0 - intersection / union
            grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], 0)
            loss = (errors_sorted * grad).sum(0)
            if self.class_weight is not None:
                loss = loss * self.class_weight[cls]
            if self.classes == "present":
                loss = loss[gts[0] > 0]
            values.append(loss)
        losses = torch.cat(values)
        return losses.mean() if losses.numel() else probs.sum() * 0.0

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores, _, valid = self._inputs(logits, target)
        probs = scores.softmax(1).permute(0, 2, 3, 1)  # (N, H, W, K)
        if self.per_image:
            value = torch.stack([self._flat(p[v], t[v]) for p, t, v in zip(probs, target, valid)]).mean()
        else:
            value = self._flat(probs[valid], target[valid])
        return self.loss_weight * value
