"""Activation checkpointing gives the same training step as plain training, and stores less."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pspnet_lib import build_pspnet
from pspnet_lib._testing import smooth_image

SMALL = {"head_channels": 32, "aux_channels": 16, "ppm_channels": 8}


def _batch(size=(41, 37), n=2, classes=5, seed=0):
    x = smooth_image(n, *size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n, *size), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.1] = 255
    return x, y


def _loss(model, x, y):
    main, aux = model(x, return_aux=True)
    return F.cross_entropy(main, y, ignore_index=255) + 0.4 * F.cross_entropy(aux, y, ignore_index=255)


def _step(model, x, y, seed=123):
    torch.manual_seed(seed)  # same dropout masks for both models
    loss = _loss(model, x, y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize(
    "backbone,overrides",
    [("resnet18", {}), ("resnet50", {"stem": "standard"}), ("resnet18", {"preset": "semseg", "dropout": 0.3})],
)
def test_checkpointing_gives_identical_gradients_and_running_stats(backbone, overrides):
    plain = build_pspnet(backbone, 5, **SMALL, **overrides).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x, y = _batch()
    loss_plain = _step(plain, x, y)
    loss_ckpt = _step(ckpt, x, y)
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=1e-6, atol=0)
    for (name, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert q.grad is not None, name
        scale = p.grad.abs().max().clamp_min(1e-12)
        assert (p.grad - q.grad).abs().max() / scale <= 1e-5, name
    for (name, b), (_, c) in zip(plain.named_buffers(), ckpt.named_buffers()):
        # running statistics updated exactly once (not again during the recomputation)
        torch.testing.assert_close(c, b, rtol=1e-6, atol=1e-7, msg=name)
    assert all(int(m.num_batches_tracked) == 1 for m in ckpt.modules() if isinstance(m, nn.BatchNorm2d))


def _saved_bytes(model, x, y) -> int:
    """Bytes of tensors autograd keeps for backward outside checkpointed regions."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _loss(model, x, y)
    return total


def test_checkpointing_stores_far_fewer_activations():
    model = build_pspnet("resnet50", 5, **SMALL).train()
    x, y = _batch(size=(65, 65))
    plain = _saved_bytes(model, x, y)
    model.set_grad_checkpointing(True)
    ckpt = _saved_bytes(model, x, y)
    # Only stage boundaries, the auxiliary head and the loss remain (the stem is checkpointed too).
    assert ckpt < 0.25 * plain, (ckpt, plain)
    model.set_grad_checkpointing(False)
    assert _saved_bytes(model, x, y) == plain


def test_checkpointing_is_off_in_eval_and_no_grad():
    model = build_pspnet("resnet18", 5, **SMALL)
    model.set_grad_checkpointing(True)
    x, _ = _batch()
    with torch.no_grad():
        out_train = model.train()(x)
    out_eval = model.eval()(x)
    assert out_train.shape == out_eval.shape == (2, 5, 41, 37)


def test_bf16_channels_last_training_step_matches_fp32_direction():
    """bf16 autocast + channels_last: a usable step (gradients point the same way as fp32's)."""
    fp32 = build_pspnet("resnet18", 5, **SMALL).train()
    bf16 = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    bf16.set_grad_checkpointing(True)
    x, y = _batch(size=(49, 49))
    loss32 = _step(fp32, x, y)
    torch.manual_seed(123)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        main, aux = bf16(x.contiguous(memory_format=torch.channels_last), return_aux=True)
        loss = F.cross_entropy(main.float(), y, ignore_index=255) + 0.4 * F.cross_entropy(
            aux.float(), y, ignore_index=255
        )
    loss.backward()
    g32 = torch.cat([p.grad.flatten() for p in fp32.parameters()])
    g16 = torch.cat([p.grad.flatten().float() for p in bf16.parameters()])
    assert all(p.grad.dtype == torch.float32 for p in bf16.parameters())  # master weights stay fp32
    assert torch.isfinite(g16).all()
    assert abs(loss.detach().item() - loss32.item()) <= 2e-2 * loss32.item()
    # At random initialisation bf16 rounding moves individual gradients noticeably (cosine ~0.9
    # here); a broken step (wrong layout, dtype or scale) would be far off.
    assert F.cosine_similarity(g32, g16, dim=0) > 0.8
