"""Every loss term and the OHEM sampler against values the implementations they are named after
computed on fixed logits/labels with ignore pixels (tests/data/losses/references.json, written by
tests/data/losses/gen_references.py with mmsegmentation 1.2.2, segmentation_models_pytorch 0.6.0
and torch; never by pspnet_lib)."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pspnet_lib.engine.loss import PSPNetLoss
from pspnet_lib.engine.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    OHEMPixelSampler,
    build_loss_terms,
    parse_loss,
    parse_sampler,
)

REF = json.loads((Path(__file__).parent / "data" / "losses" / "references.json").read_text())
LOGITS = torch.tensor(REF["logits"])
LABELS = {
    "labels": torch.tensor(REF["labels"]),
    "no_ignore": torch.tensor(REF["labels_no_ignore"]),
    "no_class_4": torch.tensor(REF["labels_without_class_4"]),
}
CW = REF["class_weight"]


def close(ours: torch.Tensor, reference: float) -> bool:
    """Equal to float32 rounding (the references are float32 results of other code)."""
    return math.isclose(
        float(ours.detach()) if isinstance(ours, torch.Tensor) else ours, reference, rel_tol=2e-6, abs_tol=1e-7
    )


# (term, labels, reference source, reference key)
CASES = [
    (CrossEntropyLoss(avg_non_ignore=False), "labels", "mmseg", "ce"),
    (CrossEntropyLoss(), "labels", "mmseg", "ce_avg_non_ignore"),
    (CrossEntropyLoss(avg_non_ignore=False), "no_ignore", "mmseg", "ce_no_ignore"),
    (CrossEntropyLoss(class_weight=CW, avg_non_ignore=False), "no_ignore", "mmseg", "ce_class_weight_no_ignore"),
    (CrossEntropyLoss(class_weight=CW), "no_ignore", "mmseg", "ce_class_weight_avg_non_ignore_no_ignore"),
    # mmseg's class-weighted cross-entropy fails on ignore pixels: PyTorch's weighted mean is the reference
    (CrossEntropyLoss(class_weight=CW), "labels", "torch", "ce_class_weight"),
    (CrossEntropyLoss(class_weight=CW, avg_non_ignore=False), "labels", "torch", "ce_class_weight"),
    (CrossEntropyLoss(label_smoothing=0.1), "labels", "torch", "ce_label_smoothing_0.1"),
    (CrossEntropyLoss(class_weight=CW, label_smoothing=0.2), "labels", "torch", "ce_class_weight_label_smoothing_0.2"),
    (FocalLoss(), "labels", "smp", "focal_gamma2"),
    (FocalLoss(gamma=0.5, alpha=0.25), "labels", "smp", "focal_gamma0.5_alpha0.25"),
    (FocalLoss(class_weight=CW), "labels", "smp", "focal_class_weight"),
    (DiceLoss(), "labels", "smp", "dice"),
    (DiceLoss(smooth=1.0), "labels", "smp", "dice_smooth1"),
    (DiceLoss(class_weight=CW), "labels", "smp", "dice_class_weight"),
    (DiceLoss(), "no_class_4", "smp", "dice_absent_class"),
    (LovaszLoss(), "labels", "mmseg", "lovasz"),
    (LovaszLoss(), "labels", "smp", "lovasz"),
    (LovaszLoss(per_image=True), "labels", "mmseg", "lovasz_per_image"),
    (LovaszLoss(class_weight=CW), "labels", "mmseg", "lovasz_class_weight"),
    (LovaszLoss(classes="all"), "labels", "mmseg", "lovasz_all_classes"),
    (LovaszLoss(), "no_class_4", "mmseg", "lovasz_absent_class_present"),
    (LovaszLoss(classes="all"), "no_class_4", "mmseg", "lovasz_absent_class_all"),
]


@pytest.mark.parametrize("term, labels, source, key", CASES, ids=[f"{c[0].name}-{c[2]}-{c[3]}-{c[1]}" for c in CASES])
def test_term_equals_its_reference(term, labels, source, key):
    assert close(term(LOGITS, LABELS[labels]), REF[source][key])
    # loss_weight scales the value, as mmsegmentation's loss_weight does
    term.loss_weight = 0.5
    assert close(term(LOGITS, LABELS[labels]), 0.5 * REF[source][key])
    term.loss_weight = 1.0


def _spec_of(loss_decode):
    """mmseg's loss_decode list as a pspnet_lib spec (CrossEntropyLoss / LovaszLoss entries only)."""
    entries = loss_decode if isinstance(loss_decode, list) else [loss_decode]
    spec = []
    for entry in entries:
        if entry["type"] == "CrossEntropyLoss":
            spec.append(
                {
                    "type": "ce",
                    "loss_weight": entry["loss_weight"],
                    "avg_non_ignore": entry.get("avg_non_ignore", False),
                }
            )
        else:
            spec.append({"type": "lovasz", "loss_weight": entry["loss_weight"]})
    return spec


@pytest.mark.parametrize("case", sorted(REF["mmseg"]["decode_head"]))
def test_decode_head_loss_lists_and_ohem_equal_mmsegmentation(case):
    """mmseg's decode head (FCNHead.loss_by_feat) with a loss_decode list and/or OHEMPixelSampler:
    the same loss terms from PSPNetLoss (main head only), and the sampler keeps the same pixels."""
    entry = REF["mmseg"]["decode_head"][case]
    sampler = entry["sampler"]
    ours = PSPNetLoss(
        aux_weight=0,
        loss=_spec_of(entry["loss_decode"]),
        sampler=None
        if sampler is None
        else {"type": "ohem", "thresh": sampler["thresh"], "min_kept": sampler["min_kept"]},
    )
    terms = ours.components(LOGITS, LABELS["labels"])
    values = [v for k, v in terms.items() if k.startswith("main.")] or [terms["main"]]
    for value, reference in zip(values, entry["losses"].values(), strict=True):
        assert close(value, reference)
    assert close(terms["loss"], sum(entry["losses"].values()))
    if sampler is not None:
        kept = ours.sampler.sample(LOGITS, LABELS["labels"], ours.pixel_losses)
        assert torch.equal(kept.long(), torch.tensor(entry["kept"]))


def test_default_loss_keeps_the_trainers_numerics():
    """The default (what every recipe uses) is bit-identical to the cross-entropy the trainer always
    computed: the sum over scored pixels divided by their count (PyTorch's mean)."""
    labels = LABELS["labels"]
    aux = LOGITS.flip(-1)
    before = F.cross_entropy(LOGITS, labels, ignore_index=255, reduction="sum") / (labels != 255).sum()
    before_aux = F.cross_entropy(aux, labels, ignore_index=255, reduction="sum") / (labels != 255).sum()
    terms = PSPNetLoss().components((LOGITS, aux), labels)
    assert set(terms) == {"loss", "main", "aux"}
    assert torch.equal(terms["main"], before) and torch.equal(terms["aux"], before_aux)
    assert torch.equal(terms["loss"], before + 0.4 * before_aux)
    assert close(terms["main"], REF["mmseg"]["ce_avg_non_ignore"])


SPEC = "ce(class_weight=[0.5, 1, 2, 0.8, 3]) + 0.5*focal + dice + 2*lovasz(per_image=true)"


def test_every_term_respects_the_ignore_index():
    """Logits at ignored pixels change no value and get no gradient, for every term (and OHEM), with
    the default ignore index and another one (the run's ignore_index reaches every term)."""
    labels = LABELS["labels"]
    ignored = labels == 255
    noisy = LOGITS + 5 * torch.randn_like(LOGITS) * ignored.unsqueeze(1)
    for ignore_index in (255, 7):
        target = torch.where(ignored, torch.full_like(labels, ignore_index), labels)
        loss = PSPNetLoss(ignore_index=ignore_index, loss=SPEC, sampler="ohem(thresh=0.7, min_kept=10)")
        expected = loss.components((LOGITS, LOGITS), target)
        logits = noisy.clone().requires_grad_(True)
        values = loss.components((logits, logits), target)
        assert len(values) == 11  # loss, main, aux and the four terms of each head
        for name, value in values.items():
            assert close(value, float(expected[name])), name
            (grad,) = torch.autograd.grad(value, logits, retain_graph=True)
            assert grad[ignored.unsqueeze(1).expand_as(grad)].abs().max() == 0, name


def test_all_ignored_batch_gives_zero_not_nan():
    target = torch.full_like(LABELS["labels"], 255)
    for term in build_loss_terms("ce + ce(avg_non_ignore=false) + focal + dice + lovasz + lovasz(per_image=true)"):
        logits = LOGITS.clone().requires_grad_(True)
        value = term(logits, target)
        value.backward()
        assert float(value.detach()) == 0.0 and torch.isfinite(logits.grad).all(), term.name
    assert float(PSPNetLoss(loss=SPEC, sampler="ohem")(LOGITS, target)) == 0.0


def test_spec_line_and_list_forms_are_the_same():
    line = "ce + 0.5*dice(smooth=1) + lovasz(classes=all, per_image=true) + 2 * focal(gamma=1, alpha=none)"
    listed = [
        {"type": "cross_entropy"},
        {"type": "dice", "loss_weight": 0.5, "smooth": 1},
        {"type": "lovasz_softmax", "classes": "all", "per_image": True},
        {"type": "focal", "loss_weight": 2, "gamma": 1, "alpha": None},
    ]
    assert parse_loss(line) == parse_loss(listed) == parse_loss(parse_loss(line))
    assert parse_loss(line)[1] == {"type": "dice", "loss_weight": 0.5, "smooth": 1}
    assert parse_sampler("ohem") == {"type": "ohem", "thresh": None, "min_kept": 100000}  # mmseg's defaults
    assert parse_sampler({"type": "OHEMPixelSampler", "thresh": 0.7}) == {
        "type": "ohem",
        "thresh": 0.7,
        "min_kept": 100000,
    }
    assert parse_sampler("none") is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("dic", "unknown loss term 'dic'; expected one of cross_entropy (ce), focal, dice, lovasz"),
        ("ce(gama=2)", "the cross_entropy loss has no option gama; its options: loss_weight, class_weight"),
        ("ce(label_smoothing=1.0)", "label_smoothing must be in [0, 1)"),
        ("focal(gamma=-1)", "gamma must be a finite number >= 0"),
        ("lovasz(classes=some)", "classes must be 'present' or 'all'"),
        ("ce(class_weight=[1, -1])", "class_weight must hold finite weights >= 0, got -1.0"),
        ("ce(class_weight=[1, 1e999])", "class_weight must hold finite weights >= 0, got inf"),
        ("0*ce", "every loss term has loss_weight 0"),
        ("ce +", "cannot read 'ce +'"),
        ("ce - dice", "expected NAME, W*NAME or NAME(key=value, ...)"),
        ("__import__('os')", "expected NAME, W*NAME or NAME(key=value, ...)"),
    ],
)
def test_bad_loss_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError) as error:
        parse_loss(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("ohem(thresh=0)", "thresh must be in (0, 1) or None, got 0"),
        ("ohem(thresh=1)", "thresh must be in (0, 1) or None, got 1"),
        ("ohem(thresh=1.5)", "thresh must be in (0, 1) or None, got 1.5"),
        ("ohem(min_kept=1)", "min_kept must be an integer > 1"),
        ("ohem(keep=3)", "the ohem sampler has no option keep; its options: thresh, min_kept"),
        ("hard", "unknown sampler 'hard'; expected ohem"),
    ],
)
def test_bad_sampler_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=None) as error:
        parse_sampler(spec)
    assert message in str(error.value)
    with pytest.raises(ValueError):
        OHEMPixelSampler(thresh=1.0)
