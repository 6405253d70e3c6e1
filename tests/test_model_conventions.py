"""timm's and smp's habits on PSPNet (issue 23, item 7), for the ResNet and a timm backbone alike.

freeze_backbone / unfreeze_backbone (BatchNorm statistics frozen too), forward_intermediates,
num_features, no_weight_decay, group_matcher (timm's layer-wise decay), torch.jit.script refused.
"""

from __future__ import annotations

import pytest
import torch

from pspnet_lib import build_pspnet
from pspnet_lib.models.conventions import JIT_SCRIPT_REFUSAL

SMALL = {"head_channels": 16, "aux_channels": 8}
BACKBONES = ["resnet18", "timm:efficientnet_b0"]


@pytest.fixture(scope="module", params=BACKBONES)
def model(request):
    if request.param.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    return build_pspnet(request.param, num_classes=3, **SMALL)


def test_freeze_backbone_freezes_parameters_and_batchnorm_statistics(model):
    model.freeze_backbone()
    try:
        model.train()  # as a training loop would, after freezing
        assert model.backbone_frozen and not model.backbone.training and model.decode_head.training
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert all(p.requires_grad for p in model.decode_head.parameters())
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
        head_before = model.decode_head.classifier.weight.clone()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        after = model.backbone.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics
        assert not torch.equal(head_before, model.decode_head.classifier.weight)  # the heads trained
    finally:
        model.unfreeze_backbone()
    assert not model.backbone_frozen and model.backbone.training
    assert all(p.requires_grad for p in model.backbone.parameters())
    model.eval()
    assert not model.backbone.training


def test_forward_intermediates_returns_the_stage_features(model):
    model.eval()
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        stages = model.forward_features(x)
        final, intermediates = model.forward_intermediates(x)
        assert torch.equal(final, stages[-1]) and len(intermediates) == len(stages) == len(model.feature_info)
        assert all(torch.equal(a, b) for a, b in zip(intermediates, stages))
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in stages[-2:]]
        picked = model.forward_intermediates(x, indices=[0, -1], output_fmt="NHWC", intermediates_only=True)
        assert torch.equal(picked[1], stages[-1].permute(0, 2, 3, 1))
        # timm's idiom: the head on the final features gives the logits at feature size
        assert torch.equal(model.forward_head(final), model.forward_head(stages))
    assert model.num_features == stages[-1].shape[1] == model.feature_info[-1]["num_chs"]
    assert model.head_hidden_size == SMALL["head_channels"]
    for bad, message in (
        (dict(indices=len(stages) + 1), r"the last \d+ stages; the backbone has"),
        (dict(indices=[len(stages)]), r"outside the backbone's"),
        (dict(norm=True), r"norm=True and stop_early=True are not supported"),
        (dict(output_fmt="NLC"), r"output_fmt must be"),
    ):
        with pytest.raises(ValueError, match=message):
            model.forward_intermediates(x, **bad)


def test_timm_optimizer_factory_reads_group_matcher_and_no_weight_decay(model):
    timm_optim = pytest.importorskip("timm.optim")
    assert model.no_weight_decay() == set()  # neither backbone has position embeddings or the like
    optimizer = timm_optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scale = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scale[names[id(p)]] = group["lr_scale"]
    stem = [v for k, v in scale.items() if k.startswith(("backbone.stem.", "backbone.model.conv_stem."))]
    heads = [v for k, v in scale.items() if k.startswith(("decode_head.", "aux_head."))]
    stages = [v for k, v in scale.items() if k.startswith("backbone.") and v not in stem]
    assert stem and set(heads) == {1.0}  # the heads: the last group, full learning rate
    assert max(stem) < min(stages) <= max(stages) < 1.0  # shallow to deep, decayed
    for coarse in (False, True):
        matcher = model.group_matcher(coarse=coarse)
        assert matcher["stem"] and matcher["blocks"]
    from timm.models import group_parameters

    fine, coarse = (len(group_parameters(model, model.group_matcher(c))) for c in (False, True))
    assert fine > coarse > 2


def test_torch_jit_script_is_refused_with_the_supported_routes(model):
    with pytest.raises(RuntimeError) as exc:
        torch.jit.script(model)
    assert str(exc.value) == JIT_SCRIPT_REFUSAL
    assert "torch.export.export" in JIT_SCRIPT_REFUSAL and "torch.jit.trace" in JIT_SCRIPT_REFUSAL
