"""The PSPNet training loss: the spec's terms on the main output plus ``aux_weight`` times the terms on the
auxiliary output (by default pixel-wise cross-entropy on both, the paper's deep supervision)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..core.constants import IGNORE_INDEX
from .losses import LossTerm, build_loss_terms, build_sampler

__all__ = ["PSPNetLoss", "check_target"]


def _label_hints(values: Sequence[int], num_classes: int, ignore_index: int) -> list[str]:
    """Likely causes of out-of-range mask values, judged from the values themselves."""
    hints = []
    top = max(values)
    if top == num_classes:
        hints.append(
            "the values run exactly one past the last class: ADE20K annotations keep 0 for 'other' and must be "
            "shifted (0 -> 255, k -> k-1; ADE20KDataset does this), or num_classes is one too small"
        )
    if num_classes == 19 and top <= 33:
        hints.append(
            "Cityscapes masks must hold trainIds (0..18, 255) from *_gtFine_labelTrainIds.png, not the labelIds "
            "(0..33) of *_gtFine_labelIds.png; create them with cityscapesscripts' createTrainIdLabelImgs"
        )
    if top > num_classes and top != 255:
        hints.append(f"num_classes={num_classes} may be wrong for this dataset (its masks reach {top})")
    if any(v < 0 for v in values):
        hints.append(f"negative values are never class indices; mark unscored pixels with {ignore_index}")
    if ignore_index != 255 and 255 in values:
        hints.append(
            f"255 is present but the ignore index is {ignore_index}: transforms pad and rotate masks with their own "
            f"ignore value (train_transforms(..., ignore_index={ignore_index}))"
        )
    if not hints or top > 200:
        hints.append(
            "masks saved as colour or 0/255 images must be converted to class indices first "
            "(a paletted PNG read with PIL in mode 'P' gives indices; an RGB colour mask does not)"
        )
    return hints


def check_target(target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Validate a batch of masks and return it as ``(N, H, W)`` int64.

    Accepts integer masks ``(N, H, W)`` or ``(N, 1, H, W)``. Raises a ``TypeError`` for
    floating-point masks and a ``ValueError`` naming the offending values (and their likely
    cause) when a value outside ``[0, num_classes)`` is not the ignore index. The check runs
    before any CUDA kernel sees the labels, so a bad mask never becomes a device-side assert.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"the mask must be a torch.Tensor of class indices, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"the mask must hold integer class indices, got dtype {target.dtype}. Masks converted with "
            "ToTensor()/ToImage()+ToDtype(float) are scaled to 0..1 and lose their labels; wrap masks in "
            "tv_tensors.Mask (transforms keep them integer) or use torch.as_tensor(np.array(mask), dtype=torch.long)"
        )
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 3:
        raise ValueError(
            f"the mask batch must have shape (N, H, W) or (N, 1, H, W), got {tuple(target.shape)}; "
            "an RGB colour mask (N, 3, H, W) must be converted to class indices first"
        )
    target = target.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        found = torch.unique(target[bad]).tolist()
        shown = ", ".join(str(v) for v in found[:12]) + (", ..." if len(found) > 12 else "")
        hints = "; ".join(_label_hints(found, num_classes, ignore_index))
        raise ValueError(
            f"the mask holds label values [{shown}] outside [0, {num_classes}) that are not the ignore index "
            f"{ignore_index} ({int(bad.sum())} pixels). Likely cause: {hints}."
        )
    return target


class PSPNetLoss(nn.Module):
    """The terms of ``loss`` on the main logits plus ``aux_weight`` times the terms of ``aux_loss`` on
    the auxiliary logits (mmsegmentation's ``loss_decode`` of the decode and auxiliary heads).

    The default, ``loss="cross_entropy"``, is the paper's: cross-entropy averaged over the pixels
    that are not ``ignore_index`` (PyTorch's and the author's convention; mmsegmentation's
    ``avg_non_ignore=True``), and 0.4 times the same on the auxiliary FCN head of layer3. The
    terms, their options and their references are in :mod:`pspnet_lib.engine.losses` (spec
    syntax in :mod:`pspnet_lib.engine.losses.spec`); every term skips ignored pixels, and a batch
    whose every pixel is ignored contributes 0 instead of NaN.

    Args:
        aux_weight: weight of the auxiliary head's loss (0 disables it).
        ignore_index: mask value of unscored pixels (every term uses it).
        check_labels: validate mask values before computing the loss (one reduction on the mask;
            turn off only for data you have already validated).
        loss: the main head's terms: a spec line (``"ce + 0.5*dice"``) or a list of
            ``{"type": ..., "loss_weight": ..., **options}`` dicts.
        aux_loss: the auxiliary head's terms (None: the same as ``loss``).
        class_weight: one weight per class, given to every term without its own ``class_weight``
            (compute them with :func:`pspnet_lib.engine.class_weights.compute_class_weights`).
        sampler: the main head's pixel sampler: None, ``"ohem"``, ``"ohem(thresh=0.7, min_kept=100000)"``
            or its dict form (mmsegmentation's ``OHEMPixelSampler``, applied to the decode head only,
            as mmsegmentation does); it needs a per-pixel term (cross-entropy or focal) in ``loss``.

    Raises:
        ValueError: a bad spec, weight or sampler (see :func:`~pspnet_lib.engine.losses.parse_loss`).

    ``loss(outputs, target)``: ``outputs`` is the model's ``(main, aux)`` pair from
    ``model(x, return_aux=True)`` or a plain logits Tensor ``(N, K, H, W)``; ``target`` the
    integer masks ``(N, H, W)`` or ``(N, 1, H, W)`` at the logits' size.
    """

    def __init__(
        self,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        check_labels: bool = True,
        *,
        loss: str | Mapping[str, Any] | Sequence[Any] = "cross_entropy",
        aux_loss: str | Mapping[str, Any] | Sequence[Any] | None = None,
        class_weight: Sequence[float] | None = None,
        sampler: str | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = float(aux_weight)
        self.ignore_index = int(ignore_index)
        self.check_labels = check_labels
        self.terms = nn.ModuleList(build_loss_terms(loss, self.ignore_index, class_weight))
        self.aux_terms = nn.ModuleList(
            build_loss_terms(loss if aux_loss is None else aux_loss, self.ignore_index, class_weight)
        )
        self.sampler = build_sampler(sampler, self.ignore_index)
        if self.sampler is not None and not any(term.per_pixel for term in self._main_terms):
            raise ValueError(
                "the OHEM sampler weights per-pixel terms, but the loss has none: add cross_entropy or focal"
            )

    @property
    def _main_terms(self) -> list[LossTerm]:
        return list(self.terms)  # type: ignore[arg-type]  # a ModuleList of LossTerms

    def extra_repr(self) -> str:
        return f"aux_weight={self.aux_weight}, ignore_index={self.ignore_index}, sampler={self.sampler}"

    def describe(self) -> str:
        """One line: the main terms, the auxiliary ones with their weight, the sampler."""
        line = _line(self._main_terms)
        if self.aux_weight > 0:
            line += f"; aux {self.aux_weight:g} x ({_line(list(self.aux_terms))})"  # type: ignore[arg-type]  # LossTerms
        return line + (f"; {self.sampler}" if self.sampler is not None else "")

    @staticmethod
    def _check_shapes(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
        if logits.ndim != 4:
            raise ValueError(f"{name} logits must be (N, K, H, W), got shape {tuple(logits.shape)}")
        if logits.shape[0] != target.shape[0] or logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"{name} logits {tuple(logits.shape)} and masks {tuple(target.shape)} differ in batch size or "
                "spatial size; PSPNet returns logits at the input size, so crop/resize images and masks together "
                "(a joint transform on tv_tensors.Image and tv_tensors.Mask)"
            )

    def _head(
        self,
        terms: Sequence[LossTerm],
        logits: torch.Tensor,
        target: torch.Tensor,
        name: str,
        pixel_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{name: total}`` plus ``{name.term: value}`` for each term when there are several."""
        self._check_shapes(logits, target, name)
        values: dict[str, torch.Tensor] = {}
        for term in terms:
            key, k = f"{name}.{term.name}", 2
            while key in values:  # the same term twice (e.g. two cross-entropies): main.cross_entropy_2
                key, k = f"{name}.{term.name}_{k}", k + 1
            values[key] = term(logits, target, pixel_weight if term.per_pixel else None)
        parts = list(values.values())
        total = parts[0]
        for value in parts[1:]:
            total = total + value
        return {name: total, **values} if len(parts) > 1 else {name: total}

    def pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What OHEM without a threshold ranks pixels by: the main per-pixel terms' losses, summed."""
        terms = [term for term in self._main_terms if term.per_pixel]
        return torch.stack([term.pixel_losses(logits, target) for term in terms]).sum(0)

    def components(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The total loss and its parts: ``{"loss", "main"}`` plus ``"aux"`` when it is used, and
        ``"main.<term>"`` / ``"aux.<term>"`` for each term of a head with several."""
        if isinstance(outputs, torch.Tensor):
            main, aux = outputs, None
        elif isinstance(outputs, (tuple, list)) and len(outputs) == 2:
            main, aux = outputs
        else:
            raise TypeError("outputs must be the logits Tensor or the (main, aux) pair from model(x, return_aux=True)")
        if self.check_labels:
            target = check_target(target, main.shape[1], self.ignore_index)
        else:
            target = target[:, 0] if target.ndim == 4 else target
            target = target.long()
        pixel_weight = None
        if self.sampler is not None:
            self._check_shapes(main, target, "main")
            pixel_weight = self.sampler.sample(main, target, self.pixel_losses)
        terms = self._head(self._main_terms, main, target, "main", pixel_weight)
        loss = terms["main"]
        if aux is not None and self.aux_weight > 0:
            terms.update(self._head(list(self.aux_terms), aux, target, "aux"))  # type: ignore[arg-type]  # LossTerms
            loss = loss + self.aux_weight * terms["aux"]
        terms["loss"] = loss
        return terms

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return self.components(outputs, target)["loss"]


def _line(terms: Sequence[LossTerm]) -> str:
    return " + ".join(
        ("" if term.loss_weight == 1 else f"{term.loss_weight:g}*")
        + term.name
        + ("(class_weight)" if term.class_weight is not None else "")
        for term in terms
    )
