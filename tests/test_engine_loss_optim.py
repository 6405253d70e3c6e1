"""PSPNetLoss (ignore index, aux weighting, label validation) and the optimiser / poly schedule."""

import pytest
import torch
import torch.nn.functional as F

from pspnet_lib.engine.loss import PSPNetLoss
from pspnet_lib.engine.optim import PolyLambda, build_optimizer, build_poly_scheduler, param_groups

from ._engine_helpers import one_thread, tiny_pspnet  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(n=2, k=5, h=6, w=7, requires_grad=True):
    return torch.randn(n, k, h, w, requires_grad=requires_grad)


def test_loss_ignores_255_exactly():
    logits = _logits()
    target = torch.randint(0, 5, (2, 6, 7))
    target[0, :3] = 255
    target[1, :, 4:] = 255
    loss = PSPNetLoss(aux_weight=0.0)(logits, target)
    valid = target != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    # Logits at ignored pixels have no influence at all: zero gradient there.
    loss.backward()
    grad = logits.grad.permute(0, 2, 3, 1)
    assert torch.count_nonzero(grad[~valid]) == 0
    assert torch.count_nonzero(grad[valid]) > 0
    # ... and changing them leaves the value bit-for-bit unchanged.
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 1)[~valid] = 1e4
    assert PSPNetLoss(aux_weight=0.0)(changed, target) == loss.detach()


def test_loss_adds_weighted_aux_and_accepts_n1hw_and_uint8():
    main, aux = _logits(), _logits()
    target = torch.randint(0, 5, (2, 6, 7))
    terms = PSPNetLoss(aux_weight=0.4).components((main, aux), target)
    torch.testing.assert_close(terms["main"], F.cross_entropy(main, target))
    torch.testing.assert_close(terms["aux"], F.cross_entropy(aux, target))
    torch.testing.assert_close(terms["loss"], terms["main"] + 0.4 * terms["aux"])
    same = PSPNetLoss(aux_weight=0.4)((main, aux), target[:, None].to(torch.uint8))
    torch.testing.assert_close(same, terms["loss"])
    # A plain Tensor means no aux term.
    torch.testing.assert_close(PSPNetLoss()(main, target), terms["main"])


def test_loss_all_ignored_is_zero_not_nan():
    logits = _logits()
    loss = PSPNetLoss()(logits, torch.full((2, 6, 7), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize(
    "bad_value, num_classes, cause",
    [
        (150, 150, "ADE20K"),  # un-shifted ADE20K annotation (0 = other, 1..150)
        (33, 19, "labelIds"),  # Cityscapes labelIds instead of trainIds
        (-1, 21, "negative"),
        (40, 21, "num_classes=21 may be wrong"),
    ],
)
def test_loss_rejects_out_of_range_labels_with_cause(bad_value, num_classes, cause):
    logits = torch.randn(1, num_classes, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, :2] = bad_value
    target[0, 1, 0] = 255  # the ignore index itself is fine
    with pytest.raises(ValueError) as info:
        PSPNetLoss()(logits, target)
    message = str(info.value)
    assert f"[{bad_value}]" in message and f"[0, {num_classes})" in message and "2 pixels" in message
    assert cause in message


def test_loss_rejects_float_and_wrong_shapes_clearly():
    logits = _logits()
    with pytest.raises(TypeError, match="integer class indices.*tv_tensors.Mask"):
        PSPNetLoss()(logits, torch.rand(2, 6, 7))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 1, H, W\)"):
        PSPNetLoss()(logits, torch.zeros(2, 3, 6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="spatial size"):
        PSPNetLoss()(logits, torch.zeros(2, 5, 7, dtype=torch.long))


def test_poly_schedule_values_with_warmup_and_floor():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = build_poly_scheduler(opt, total_iters=100, power=0.9)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for i in (0, 1, 37, 99):
        assert lrs[i] == pytest.approx(0.01 * (1 - i / 100) ** 0.9, rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.0  # the end of the schedule
    # Warm-up ramps linearly from warmup_ratio; min_lr is mmseg's eta_min.
    f = PolyLambda(100, 0.9, warmup_iters=10, warmup_ratio=0.1, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1 * (0.99 * 1.0 + 0.01))
    assert f(5) == pytest.approx((0.1 + 0.9 * 0.5) * (0.99 * 0.95**0.9 + 0.01))
    assert f(50) == pytest.approx(0.99 * 0.5**0.9 + 0.01)
    assert f(100) == pytest.approx(0.01) and f(150) == pytest.approx(0.01)


def test_param_groups_heads_at_10x_and_no_decay_option():
    model = tiny_pspnet()
    groups = param_groups(model, lr=0.01, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "head"}
    assert by_name["backbone"]["lr"] == 0.01 and by_name["head"]["lr"] == pytest.approx(0.1)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in by_name["backbone"]["params"]} == backbone_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    groups = param_groups(model, lr=0.01, weight_decay=1e-4, no_decay_norm_bias=True)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    norm = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    no_decay_ids = {id(p) for p in by_name["backbone_no_decay"]["params"]}
    assert id(norm.weight) in no_decay_ids and id(norm.bias) in no_decay_ids
    assert id(model.decode_head.classifier.bias) in {id(p) for p in by_name["head_no_decay"]["params"]}
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["head_no_decay"]["lr"] == pytest.approx(0.1)
    assert all(p.ndim > 1 for p in by_name["head"]["params"])  # conv weights only

    # Frozen parameters are left out; the scheduler keeps each group's own base LR.
    model.backbone.requires_grad_(False)
    opt = build_optimizer(model, "sgd", 0.01)
    assert [g["name"] for g in opt.param_groups] == ["head"]
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    adamw = build_optimizer(tiny_pspnet(), "adamw", 1e-4, weight_decay=0.01)
    assert isinstance(adamw, torch.optim.AdamW)
    sched = build_poly_scheduler(adamw, 10, min_lr=1e-6)
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([1e-4, 1e-3])
    for _ in range(10):
        adamw.step()
        sched.step()
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([1e-6, 1e-5])
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "lion", 0.01)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_optimizer_gives_the_standard_update(name):
    # The default uses PyTorch's fused kernel where available; it must train exactly like the
    # standard implementation (same rule, same state), only faster.
    models = [tiny_pspnet(), tiny_pspnet()]
    models[1].load_state_dict(models[0].state_dict())
    opts = [build_optimizer(models[0], name, 0.01, fused=False), build_optimizer(models[1], name, 0.01)]
    assert not opts[0].defaults.get("fused")
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    # (One AdamW step: later ones divide by sqrt(v) of near-zero gradients, where the kernels'
    # last-bit differences grow into visible ones.)
    for step in range(3 if name == "sgd" else 1):
        for model, opt in zip(models, opts):
            torch.manual_seed(step)  # the same dropout masks for both
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert opts[1].state_dict()["state"].keys() == opts[0].state_dict()["state"].keys()
