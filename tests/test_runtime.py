"""The fast inference path equals the model it was built from; space-to-batch is exact."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pspnet_lib
from pspnet_lib import build_pspnet
from pspnet_lib._testing import randomize_batchnorm_, smooth_image
from pspnet_lib.runtime import (
    FastPSPNet,
    agreement_stats,
    compare_models,
    native_dtype_support,
    optimize_for_inference,
)
from pspnet_lib.runtime.head import interpolation_matrix
from pspnet_lib.runtime.space_to_batch import from_subgrids, space_to_batch_conv2d, to_subgrids, zero_subgrid_padding
from pspnet_lib.runtime.winograd import winograd_conv3x3, winograd_weight

SMALL = {"head_channels": 32, "aux_channels": 16, "ppm_channels": 8}
BF16_NATIVE = native_dtype_support(torch.bfloat16, "cpu")[0]


def small_model(backbone: str = "resnet18", **overrides) -> nn.Module:
    kw = dict(SMALL, **overrides)
    return randomize_batchnorm_(build_pspnet(backbone, 5, **kw)).eval()


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    return agreement_stats(ref, out)["max_rel_err"]


# --- space-to-batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (13, 10), (1, 1), (3, 2), (17, 4)])
@pytest.mark.parametrize("dilation,factor", [(2, 2), (4, 4), (4, 2), (3, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_batch_conv_equals_dilated_conv(size, dilation, factor, channels_last):
    x = torch.randn(2, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(5, 6, 3, 3), torch.randn(5)
    ref = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    out = space_to_batch_conv2d(x, weight, bias, dilation=dilation, factor=factor)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_space_to_batch_5x5_kernel():
    x = torch.randn(1, 3, 11, 14)
    weight = torch.randn(4, 3, 5, 5)
    ref = F.conv2d(x, weight, padding=4, dilation=2)
    torch.testing.assert_close(space_to_batch_conv2d(x, weight, dilation=2), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 12), (9, 7), (5, 3)])
def test_subgrid_round_trip_and_padding(size):
    x = torch.randn(2, 3, *size).contiguous(memory_format=torch.channels_last)
    xs = to_subgrids(x, 4)
    assert xs.shape == (32, 3, -(-size[0] // 4), -(-size[1] // 4))
    assert xs.is_contiguous(memory_format=torch.channels_last)
    # Sub-grid (a, b) of image n holds x[n, :, a::4, b::4] (zero-padded at the end).
    for a in range(4):
        for b in range(4):
            sub = x[1, :, a::4, b::4]
            grid = xs[16 + 4 * a + b]
            assert torch.equal(grid[:, : sub.shape[1], : sub.shape[2]], sub)
            assert not grid[:, sub.shape[1] :, :].any() and not grid[:, :, sub.shape[2] :].any()
    assert torch.equal(from_subgrids(xs, 4, *size), x)
    # Garbage written into the padding (as a biased conv would) is cleared again.
    polluted = xs + 1.0
    zero_subgrid_padding(polluted, 4, *size)
    assert torch.equal(polluted, to_subgrids(x + 1.0, 4))


def test_space_to_batch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divide"):
        space_to_batch_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3), dilation=4, factor=3)
    with pytest.raises(ValueError, match="odd kernel"):
        space_to_batch_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 2, 2), dilation=2)


# --- Winograd ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1), (2, 3), (16, 5), (13, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_conv_equals_conv(size, channels_last, tile):
    x = torch.randn(2, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias, residual = torch.randn(5, 6, 3, 3), torch.randn(5), torch.randn(2, 5, *size)
    u = winograd_weight(weight, tile=tile)
    assert u.shape == ((tile + 2) ** 2, 6, 5)
    # F(4x4)'s transforms hold larger constants (up to 8 and 1/15): a little more rounding.
    tol = {"rtol": 1e-5, "atol": 1e-5} if tile == 2 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(winograd_conv3x3(x, u), F.conv2d(x, weight, padding=1), **tol)
    ref = (F.conv2d(x, weight, bias, padding=1) + residual).relu()
    torch.testing.assert_close(winograd_conv3x3(x, u, bias, residual, relu=True), ref, **tol)


# --- pyramid head algebra ----------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_size,out_size", [(1, 7), (2, 9), (3, 3), (6, 65), (6, 4), (3, 1)])
def test_interpolation_matrix_matches_interpolate(in_size, out_size, align_corners):
    x = torch.randn(2, 4, in_size, 5, dtype=torch.float64)
    ref = F.interpolate(x, size=(out_size, 5), mode="bilinear", align_corners=align_corners)
    mat = interpolation_matrix(in_size, out_size, align_corners)
    torch.testing.assert_close(torch.einsum("oi,ncih->ncoh", mat, x), ref)


# --- optimised model == original model ---------------------------------------------------------


@pytest.mark.parametrize(
    "backbone,overrides,size",
    [
        ("resnet18", {}, (67, 45)),
        ("resnet34", {"preset": "semseg"}, (41, 57)),
        ("resnet50", {}, (49, 38)),
        ("resnet50", {"preset": "mmseg-b", "output_stride": 16}, (50, 63)),
        ("resnet101", {"preset": "semseg"}, (33, 41)),
    ],
)
def test_fast_fp32_equals_model(backbone, overrides, size):
    model = small_model(backbone, **overrides)
    x = smooth_image(2, *size, seed=1)
    with torch.no_grad():
        ref = model(x)
    for space_to_batch, winograd in ((False, False), (True, 2), (True, 4), ("auto", "auto")):
        out = optimize_for_inference(model, torch.float32, space_to_batch=space_to_batch, winograd=winograd)(x)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert rel_err(ref, out) <= 1e-4, (space_to_batch, winograd)


def test_fast_fp32_resnet152_once():
    model = small_model("resnet152")
    x = smooth_image(1, 35, 29, seed=2)
    with torch.no_grad():
        ref = model(x)
    assert rel_err(ref, optimize_for_inference(model, space_to_batch=True, winograd=True)(x)) <= 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        {"norm": "group"},  # not foldable: kept, and never run on sub-grids
        {"norm": "frozenbatch", "bins": [1, 3, 8], "align_corners": True},
        {"output_stride": 32, "dilations": [1, 1, 2, 4], "stem": "standard"},
        {"aux": False, "dropout": 0.0},
    ],
)
def test_fast_fp32_other_configs(overrides):
    model = small_model("resnet18", **overrides)
    x = smooth_image(2, 45, 39, seed=3)
    with torch.no_grad():
        ref = model(x)
    for channels_last in (True, False):  # oneDNN fused kernels / plain F.conv2d
        for winograd in (False, 2, 4):
            fast = optimize_for_inference(model, channels_last=channels_last, space_to_batch=True, winograd=winograd)
            assert rel_err(ref, fast(x)) <= 1e-4, (channels_last, winograd)


def test_fast_accepts_tiny_and_strided_inputs():
    model = small_model("resnet18")
    x = smooth_image(3, 70, 70, seed=4)[:, :, 3:20, 5:6]  # non-contiguous, 17 x 1
    fast = optimize_for_inference(model)
    with torch.no_grad():
        ref = model(x)
    assert rel_err(ref, fast(x)) <= 1e-4
    assert rel_err(ref, fast(x.double())) <= 1e-4  # any float dtype is accepted


def test_auto_space_to_batch_calibrates_per_shape():
    model = small_model("resnet50")
    fast = optimize_for_inference(model, space_to_batch="auto")
    for size in ((40, 40), (33, 47), (40, 40)):
        x = smooth_image(1, *size, seed=5)
        with torch.no_grad():
            ref = model(x)
        assert rel_err(ref, fast(x)) <= 1e-4
    plans = fast.space_to_batch_plans()
    # layer3/layer4 are dilated: one decision per distinct input shape, each a valid factor.
    assert len(plans[2]) == 2 and len(plans[3]) == 2
    for plan in list(plans[2].values()) + list(plans[3].values()):
        assert set(plan) <= {1, 2, 4}


def test_auto_winograd_decisions_are_shared_and_capped(monkeypatch, tmp_path):
    from pspnet_lib.runtime import conv

    monkeypatch.setattr(conv, "_MAX_CALIBRATED_SHAPES", 1)
    model = small_model("resnet18")
    fast = optimize_for_inference(model, winograd="auto", space_to_batch=False, tuning_cache=tmp_path / "t.json")
    for size in ((48, 40), (33, 47)):
        x = smooth_image(1, *size, seed=7)
        with torch.no_grad():
            ref = model(x)
        assert rel_err(ref, fast(x)) <= 1e-4
    # One decision per distinct convolution (>= 64 input channels), for the first shape only.
    sections = {k: v for k, v in fast.tuning.sections().items() if "|winograd_tile|" in k}
    assert sections and all(len(shapes) == 1 for shapes in sections.values())
    assert all(int(k.split("|winograd_tile|")[1].split("->")[0]) >= conv.WINOGRAD_MIN_CHANNELS for k in sections)
    assert all(tile in (0, 2, 4) for shapes in sections.values() for tile in shapes.values())


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU has no native bfloat16")
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_fast_bf16_within_tolerance(backbone):
    model = small_model(backbone)
    x = smooth_image(2, 73, 65, seed=6)
    for winograd in (False, 2, 4):
        fast = optimize_for_inference(model, torch.bfloat16, space_to_batch=True, winograd=winograd)
        stats = compare_models(model, fast, x)
        assert fast.dtype == torch.bfloat16
        assert stats["max_rel_err"] <= 3e-2, winograd
        assert stats["argmax_agreement"] >= 0.98, winograd


def test_unsupported_dtype_falls_back_with_warning():
    supported, _ = native_dtype_support(torch.float16, "cpu")
    if supported:
        pytest.skip("this CPU runs float16 natively")
    model = small_model("resnet18")
    with pytest.warns(RuntimeWarning, match="falling back to torch.float32"):
        fast = optimize_for_inference(model, torch.float16)
    assert fast.dtype == torch.float32


# --- contract: refuses training mode, leaves the original alone, is inference-only --------------


def test_refuses_training_mode():
    model = build_pspnet("resnet18", 3, **SMALL).train()
    with pytest.raises(ValueError, match=r"eval mode.*model\.eval\(\)"):
        optimize_for_inference(model)


def test_original_model_untouched():
    model = small_model("resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = smooth_image(1, 40, 40)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, space_to_batch=True)
    fast(x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]) and after[k].data_ptr() == ptrs[k], k
    assert [m.training for m in model.modules()] == modes
    assert not any(m is n for m in fast.modules() for n in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_fast_module_is_inference_only():
    model = small_model("resnet18")
    fast = optimize_for_inference(model)
    assert isinstance(fast, FastPSPNet) and not fast.training
    fast.eval()  # allowed
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()
    assert fast.to("cpu") is fast  # no-op moves are fine
    with pytest.raises(RuntimeError, match="optimize_for_inference on it again"):
        fast.double()
    x = smooth_image(1, 33, 33).requires_grad_(True)
    out = fast(x)
    assert not out.requires_grad
    assert fast.num_classes == 5 and fast.config.align_corners == model.config.align_corners
    assert next(fast.parameters()).device == torch.device("cpu")


def test_bad_arguments_and_inputs():
    model = small_model("resnet18")
    with pytest.raises(TypeError, match="PSPNet"):
        optimize_for_inference(nn.Conv2d(3, 3, 3).eval())
    with pytest.raises(ValueError, match="dtype"):
        optimize_for_inference(model, torch.int8)
    with pytest.raises(ValueError, match="space_to_batch"):
        optimize_for_inference(model, space_to_batch="yes")
    for bad in (1, 3, 2.0, "f4"):
        with pytest.raises(ValueError, match="winograd"):
            optimize_for_inference(model, winograd=bad)
    fast = optimize_for_inference(model)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fast(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        fast(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_top_level_export():
    assert pspnet_lib.optimize_for_inference is optimize_for_inference


def test_agreement_stats():
    ref = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2): argmax 0, 1
    same = agreement_stats(ref, ref.clone())
    assert same["max_rel_err"] == 0 and same["argmax_agreement"] == 1.0 and same["pixels"] == 2
    flipped = ref.clone()
    flipped[0, 1, 0, 0] = 1.5  # pixel 0 now predicts class 1
    stats = agreement_stats(ref, flipped)
    assert stats["argmax_agreement"] == 0.5 and stats["max_rel_err"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="shapes differ"):
        agreement_stats(ref, ref[..., :1])


def test_smooth_image_is_reproducible_and_normalised():
    a, b = smooth_image(2, 64, 48, seed=3), smooth_image(2, 64, 48, seed=3)
    assert torch.equal(a, b) and a.shape == (2, 3, 64, 48)
    assert a.mean().abs() < 1e-4 and (a.std() - 1).abs() < 0.05
    # Smooth: neighbouring pixels are strongly correlated.
    assert F.cosine_similarity(a[..., 1:, :].flatten(), a[..., :-1, :].flatten(), dim=0) > 0.8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth_image(1, 1, 1)


def test_test_tooling_is_not_public_runtime_api():
    """0.1 exported test tooling from pspnet_lib.runtime; old imports still work, with a warning."""
    import pspnet_lib._testing as testing
    import pspnet_lib.runtime as runtime

    for name in ("smooth_image", "randomize_batchnorm_", "to_subgrids", "from_subgrids", "space_to_batch_conv2d"):
        assert name not in runtime.__all__
    with pytest.warns(DeprecationWarning, match=r"pspnet_lib\._testing"):
        assert runtime.smooth_image is testing.smooth_image
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        runtime.nope  # noqa: B018
