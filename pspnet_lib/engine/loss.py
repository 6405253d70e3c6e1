"""The PSPNet training loss: pixel-wise cross-entropy on the main output plus a weighted auxiliary term."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.constants import IGNORE_INDEX

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
    """Cross-entropy on the main logits plus ``aux_weight`` times cross-entropy on the auxiliary logits.

    The paper's deep supervision: the auxiliary FCN head on layer3 is weighted 0.4. Each term
    averages over the pixels that are not ``ignore_index`` (PyTorch's and the author's
    convention); a batch whose every pixel is ignored contributes a zero loss instead of NaN.

    Args:
        aux_weight: weight of the auxiliary term (0 disables it).
        ignore_index: mask value of unscored pixels.
        check_labels: validate mask values before computing the loss (one reduction on the mask;
            turn off only for data you have already validated).

    ``loss(outputs, target)``: ``outputs`` is the model's ``(main, aux)`` pair from
    ``model(x, return_aux=True)`` or a plain logits Tensor ``(N, K, H, W)``; ``target`` the
    integer masks ``(N, H, W)`` or ``(N, 1, H, W)`` at the logits' size.
    """

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = IGNORE_INDEX, check_labels: bool = True) -> None:
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = float(aux_weight)
        self.ignore_index = int(ignore_index)
        self.check_labels = check_labels

    def extra_repr(self) -> str:
        return f"aux_weight={self.aux_weight}, ignore_index={self.ignore_index}"

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
        if logits.ndim != 4:
            raise ValueError(f"{name} logits must be (N, K, H, W), got shape {tuple(logits.shape)}")
        if logits.shape[0] != target.shape[0] or logits.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"{name} logits {tuple(logits.shape)} and masks {tuple(target.shape)} differ in batch size or "
                "spatial size; PSPNet returns logits at the input size, so crop/resize images and masks together "
                "(a joint transform on tv_tensors.Image and tv_tensors.Mask)"
            )
        # Sum over scored pixels divided by their count: the mean of PyTorch's default reduction,
        # but 0 (not NaN) when a crop holds no scored pixel at all.
        total = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")
        count = (target != self.ignore_index).sum().clamp(min=1)
        return total / count

    def components(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The total loss and its terms: ``{"loss", "main"}`` plus ``"aux"`` when it is used."""
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
        terms = {"main": self._cross_entropy(main, target, "main")}
        loss = terms["main"]
        if aux is not None and self.aux_weight > 0:
            terms["aux"] = self._cross_entropy(aux, target, "aux")
            loss = loss + self.aux_weight * terms["aux"]
        terms["loss"] = loss
        return terms

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return self.components(outputs, target)["loss"]
