"""Reference loss values for tests/test_losses_reference.py, computed once by the implementations the
loss terms are named after (never by pspnet_lib). Run in an environment with mmsegmentation 1.2.2,
mmcv-lite 2.1.0 (its compiled ops are not needed: they are stubbed), mmengine 0.10.7,
segmentation-models-pytorch 0.6.0 and torch:

    python gen_references.py   # writes references.json next to this file

The logits and labels are the lead's fixed inputs (shape (2, 5, 9, 11), torch.manual_seed(0), rows
and columns of ignore pixels 255), as in /work/shared/reference/losses/gen_mmseg.py, whose values
this script reproduces exactly; it adds the cases the loss terms' options need.
"""

import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

stub = types.ModuleType("mmcv.ops")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def f(*a, **k):
        raise RuntimeError("stub")

    f.__name__ = name
    return f


stub.__getattr__ = __getattr__
sys.modules["mmcv.ops"] = stub
import mmcv  # noqa: E402

mmcv.ops = stub
import mmseg  # noqa: E402
import segmentation_models_pytorch as smp  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.models.decode_heads import FCNHead  # noqa: E402
from mmseg.models.losses import CrossEntropyLoss, LovaszLoss  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

torch.manual_seed(0)
N, K, H, W = 2, 5, 9, 11
logits = torch.randn(N, K, H, W) * 2
labels = torch.randint(0, K, (N, H, W))
labels[0, :2, :] = 255
labels[1, :, :3] = 255
# The same labels with no ignore pixel (mmseg's class-weighted cross-entropy crashes on 255).
labels_no_ignore = labels.clone()
labels_no_ignore[labels == 255] = torch.randint(
    0, K, (int((labels == 255).sum()),), generator=torch.Generator().manual_seed(1)
)
cw = [0.5, 1.0, 2.0, 0.8, 3.0]
out = {
    "shape": [N, K, H, W],
    "logits": logits.tolist(),
    "labels": labels.tolist(),
    "labels_no_ignore": labels_no_ignore.tolist(),
    "class_weight": cw,
    "mmseg": {},
    "smp": {},
    "torch": {},
}
m, s, t = out["mmseg"], out["smp"], out["torch"]
m["version"], s["version"], t["version"] = mmseg.__version__, smp.__version__, torch.__version__

# --- mmsegmentation 1.2.2 loss modules ---------------------------------------------------------
m["ce"] = CrossEntropyLoss()(logits, labels, ignore_index=255).item()
m["ce_avg_non_ignore"] = CrossEntropyLoss(avg_non_ignore=True)(logits, labels, ignore_index=255).item()
m["ce_class_weight_no_ignore"] = CrossEntropyLoss(class_weight=cw)(logits, labels_no_ignore, ignore_index=255).item()
m["ce_class_weight_avg_non_ignore_no_ignore"] = CrossEntropyLoss(class_weight=cw, avg_non_ignore=True)(
    logits, labels_no_ignore, ignore_index=255
).item()
m["ce_no_ignore"] = CrossEntropyLoss()(logits, labels_no_ignore, ignore_index=255).item()
m["lovasz"] = LovaszLoss(loss_type="multi_class", per_image=False, reduction="none")(
    logits, labels, ignore_index=255
).item()
m["lovasz_per_image"] = LovaszLoss(loss_type="multi_class", per_image=True, reduction="mean")(
    logits, labels, ignore_index=255
).item()
m["lovasz_class_weight"] = LovaszLoss(loss_type="multi_class", per_image=False, reduction="none", class_weight=cw)(
    logits, labels, ignore_index=255
).item()
m["lovasz_all_classes"] = LovaszLoss(loss_type="multi_class", classes="all", per_image=False, reduction="none")(
    logits, labels, ignore_index=255
).item()
# Lovász on labels where class 4 never occurs: "present" skips it, "all" counts it.
labels_no4 = labels.clone()
labels_no4[labels_no4 == 4] = 255
out["labels_without_class_4"] = labels_no4.tolist()
m["lovasz_absent_class_present"] = LovaszLoss(loss_type="multi_class", per_image=False, reduction="none")(
    logits, labels_no4, ignore_index=255
).item()
m["lovasz_absent_class_all"] = LovaszLoss(loss_type="multi_class", classes="all", per_image=False, reduction="none")(
    logits, labels_no4, ignore_index=255
).item()


# --- mmsegmentation's decode head: loss_decode lists and the OHEM pixel sampler -----------------
def head_losses(loss_decode, sampler=None):
    head = FCNHead(
        in_channels=4,
        channels=4,
        num_convs=1,
        num_classes=K,
        loss_decode=loss_decode,
        sampler=sampler,
        align_corners=False,
    )
    samples = []
    for i in range(N):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=labels[i : i + 1].clone())
        samples.append(sample)
    losses = head.loss_by_feat(logits.clone(), samples)
    kept = None
    if sampler is not None:
        kept = head.sampler.sample(logits.clone(), labels.unsqueeze(1).clone())
    return {k: v.item() for k, v in losses.items() if k.startswith("loss")}, kept


cases = {
    "ce+0.5lovasz": (
        [
            dict(type="CrossEntropyLoss", loss_weight=1.0, avg_non_ignore=True),
            dict(type="LovaszLoss", loss_weight=0.5, reduction="none"),
        ],
        None,
    ),
}
ohem = [
    ("ohem_t0.7_k10", 0.7, 10),
    ("ohem_t0.3_k10", 0.3, 10),
    ("ohem_t0.7_k1000", 0.7, 1000),
    ("ohem_tnone_k25", None, 25),
]
for name, thresh, kept in ohem:
    for avg in (False, True):
        cases[f"{name}_avg_non_ignore_{avg}"] = (
            dict(type="CrossEntropyLoss", loss_weight=1.0, avg_non_ignore=avg),
            dict(type="OHEMPixelSampler", thresh=thresh, min_kept=kept),
        )
m["decode_head"] = {}
for name, (loss_decode, sampler) in cases.items():
    losses, kept_mask = head_losses(loss_decode, sampler)
    entry = {"losses": losses, "loss_decode": loss_decode, "sampler": sampler}
    if kept_mask is not None:
        entry["kept"] = kept_mask.to(torch.int64).tolist()
    m["decode_head"][name] = entry

# --- segmentation_models_pytorch 0.6.0 (focal and Dice: mmseg's are sigmoid-based / keep ignored pixels) ---
s["focal_gamma2"] = smp.losses.FocalLoss("multiclass", gamma=2.0, ignore_index=255)(logits, labels).item()
s["focal_gamma0.5_alpha0.25"] = smp.losses.FocalLoss("multiclass", gamma=0.5, alpha=0.25, ignore_index=255)(
    logits, labels
).item()
s["focal_class_weight"] = smp.losses.FocalLoss("multiclass", gamma=2.0, ignore_index=255, class_weights=cw)(
    logits, labels
).item()
s["dice"] = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=255)(logits, labels).item()
s["dice_smooth1"] = smp.losses.DiceLoss("multiclass", from_logits=True, smooth=1.0, ignore_index=255)(
    logits, labels
).item()
s["dice_class_weight"] = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=255, class_weights=cw)(
    logits, labels
).item()
s["dice_absent_class"] = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=255)(
    logits, labels_no4
).item()
s["lovasz"] = smp.losses.LovaszLoss("multiclass", ignore_index=255)(logits, labels).item()

# --- torch (label smoothing; the class-weighted mean over non-ignored pixels) -------------------
cwt = torch.tensor(cw)
t["ce_class_weight"] = F.cross_entropy(logits, labels, weight=cwt, ignore_index=255).item()
t["ce_label_smoothing_0.1"] = F.cross_entropy(logits, labels, ignore_index=255, label_smoothing=0.1).item()
t["ce_class_weight_label_smoothing_0.2"] = F.cross_entropy(
    logits, labels, weight=cwt, ignore_index=255, label_smoothing=0.2
).item()

Path(__file__).with_name("references.json").write_text(json.dumps(out) + "\n")
print({k: v for k, v in {**m, **s, **t}.items() if k != "decode_head"})
