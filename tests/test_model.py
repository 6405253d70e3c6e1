import json

import pytest
import torch
import torch.nn as nn

from pspnet_lib import PSPNet, PSPNetConfig, PyramidPoolingModule, build_pspnet
from pspnet_lib.hub.formats.converters import convert_state_dict
from pspnet_lib.models import ResNet

from .reference import load_case


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SMALL = dict(head_channels=32, aux_channels=16, ppm_channels=8)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("stem", ["deep", "standard"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_strides_and_channels(depth, stem, output_stride):
    backbone = ResNet(depth, stem=stem, output_stride=output_stride).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    expansion = 1 if depth < 50 else 4
    expected_reductions = {8: [4, 8, 8, 8], 16: [4, 8, 16, 16], 32: [4, 8, 16, 32]}[output_stride]
    for f, info, red, i in zip(feats, backbone.feature_info, expected_reductions, range(4)):
        assert f.shape == (1, 64 * 2**i * expansion, 64 // red, 64 // red)
        assert info["num_chs"] == f.shape[1] and info["reduction"] == red


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("stem", ["deep", "standard"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (33, 65), (41, 23)])
def test_output_is_input_size_batch1_eval(backbone, stem, output_stride, size):
    model = build_pspnet(backbone, 4, stem=stem, output_stride=output_stride, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
        main, aux = model(torch.randn(1, 3, *size), return_aux=True)
    assert out.shape == (1, 4, *size)
    assert main.shape == aux.shape == (1, 4, *size)


@pytest.mark.parametrize("backbone", ["resnet34", "resnet101", "resnet152"])
def test_deeper_backbones_build_and_run(backbone):
    model = build_pspnet(backbone, 3, **SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 17, 19)).shape == (1, 3, 17, 19)


@pytest.mark.parametrize("preset", ["mmseg", "mmseg-b", "semseg"])
def test_batch2_train_mode_returns_tensor_and_tuple(preset):
    model = build_pspnet("resnet18", 6, preset=preset, **SMALL).train()
    x = torch.randn(2, 3, 25, 31)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 6, 25, 31)
    main, aux = model(x, return_aux=True)
    assert main.shape == aux.shape == (2, 6, 25, 31)


def test_every_parameter_gets_gradient_from_main_and_aux_loss():
    model = build_pspnet("resnet18", 3, **SMALL).train()
    x = torch.randn(2, 3, 40, 40)
    target = torch.randint(0, 3, (2, 40, 40))
    main, aux = model(x, return_aux=True)
    loss = nn.functional.cross_entropy(main, target) + 0.4 * nn.functional.cross_entropy(aux, target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_aux_head_gradient_flows_only_through_aux_loss():
    model = build_pspnet("resnet18", 3, **SMALL).train()
    main = model(torch.randn(2, 3, 32, 32))
    main.sum().backward()
    # In training mode model(x) joins the aux head to the graph with weight zero (so that DDP
    # needs no find_unused_parameters): its parameters get gradients, all exactly zero.
    assert all(p.grad is not None and not p.grad.any() for p in model.aux_head.parameters())


@pytest.mark.parametrize(
    "case, kwargs",
    [
        ("mmseg_r50_d8", dict(backbone="resnet50")),
        ("mmseg_r18_d8", dict(backbone="resnet18")),
        ("semseg_psp50", dict(backbone="resnet50", preset="semseg")),
    ],
)
def test_parameter_counts_equal_reference(case, kwargs):
    meta = load_case(case)["meta"]
    model = build_pspnet(num_classes=meta["classes"], **kwargs)
    assert n_params(model) == meta["n_params"]


@pytest.mark.parametrize(
    "case, preset, fmt",
    [("mmseg_r50_d8", "mmseg", "mmseg"), ("mmseg_r18_d8", "mmseg", "mmseg"), ("semseg_psp50", "semseg", "semseg")],
)
def test_reference_key_layout_maps_one_to_one(case, preset, fmt):
    data = load_case(case)
    meta = data["meta"]
    model = build_pspnet(f"resnet{meta['depth']}", meta["classes"], preset=preset)
    ref_shapes = {name: tuple(shape) for name, shape, _ in data["keys"]}
    renamed = convert_state_dict({k: torch.empty(s) for k, s in ref_shapes.items()}, fmt)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(renamed) == len(ref_shapes)  # the renaming is injective
    assert {k: tuple(v.shape) for k, v in renamed.items()} == ours


def test_config_round_trips_through_json():
    model = build_pspnet("resnet34", 7, preset="semseg", output_stride=16, aux=False, in_channels=4)
    cfg = PSPNetConfig.from_dict(json.loads(model.config.to_json()))
    rebuilt = PSPNet(cfg)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backbone, expansion", [("resnet18", 1), ("resnet50", 4)])
def test_base_channels_scales_every_stage_and_round_trips(backbone, expansion):
    """mmsegmentation's ``base_channels``: layer1 is that wide, each later stage twice the one before."""
    model = build_pspnet(backbone, 3, stem_channels=32, base_channels=16, **SMALL)
    assert model.backbone.out_channels == [16 * expansion, 32 * expansion, 64 * expansion, 128 * expansion]
    assert model.config.backbone_channels == model.backbone.out_channels
    assert model.config.ppm_channels == 8  # given; the default would follow the narrower layer4
    assert build_pspnet(backbone, 3, base_channels=16).config.ppm_channels == 128 * expansion // 4
    stored = json.loads(model.config.to_json())
    assert stored["base_channels"] == 16
    assert PSPNet(PSPNetConfig.from_dict(stored)).backbone.out_channels == model.backbone.out_channels
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 40, 40)).shape == (1, 3, 40, 40)
    # The published width is left out of stored configs, so every released config.json is unchanged.
    assert "base_channels" not in build_pspnet(backbone, 3).config.to_dict()


def test_base_channels_is_checked_and_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match=r"base_channels must be a positive integer \(at most 256\), got 0"):
        build_pspnet("resnet18", 3, base_channels=0)
    with pytest.raises(ValueError, match="no model of the zoo has this architecture .*base_channels=32"):
        build_pspnet("resnet18", 3, base_channels=32, weights="DEFAULT")


def test_narrow_widths_fail_early_with_the_fix():
    with pytest.raises(
        ValueError, match=r"ppm_channels would be 0 \(layer4's 8 channels over 9 bins\); set ppm_channels"
    ):
        build_pspnet("resnet18", 3, base_channels=1, bins=[1, 2, 3, 6, 7, 8, 9, 10, 11])
    assert build_pspnet("resnet18", 3, base_channels=1, bins=[1, 2, 3, 6, 7, 8, 9, 10, 11], ppm_channels=1)
    for value in (0, True, "32"):
        with pytest.raises(ValueError, match=f"base_channels must be a positive integer, got {value!r}"):
            ResNet(18, base_channels=value)


def test_presets_set_the_documented_fields():
    cfg = build_pspnet("resnet50", preset="semseg").config
    assert (cfg.stem, cfg.stem_channels, cfg.contract_dilation, cfg.align_corners) == ("deep", 128, False, True)
    cfg = build_pspnet("resnet50").config
    assert (cfg.stem, cfg.stem_channels, cfg.contract_dilation, cfg.align_corners) == ("deep", 64, True, False)
    assert build_pspnet("resnet50", preset="mmseg-b").config.stem == "standard"


def test_contract_dilation_controls_first_block_of_dilated_stages():
    contracted = ResNet(50, contract_dilation=True)
    full = ResNet(50, contract_dilation=False)
    assert contracted.layer3[0].conv2.dilation == (1, 1) and contracted.layer3[1].conv2.dilation == (2, 2)
    assert contracted.layer4[0].conv2.dilation == (2, 2) and contracted.layer4[2].conv2.dilation == (4, 4)
    assert all(b.conv2.dilation == (2, 2) for b in full.layer3)
    assert all(b.conv2.dilation == (4, 4) for b in full.layer4)
    assert all(b.conv2.stride == (1, 1) for b in full.layer4)


def test_dilated_basic_block_dilates_first_conv_only():
    backbone = ResNet(18)
    block = backbone.layer4[1]
    assert block.conv1.dilation == (4, 4) and block.conv2.dilation == (1, 1)


def test_in_channels_other_than_three():
    model = build_pspnet("resnet18", 2, in_channels=5, **SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 5, 21, 21)).shape == (1, 2, 21, 21)


@pytest.mark.parametrize("norm", ["group", "frozenbatch", "syncbatch"])
def test_norm_layers(norm):
    # GroupNorm(32) needs >= 2 channels per group on the 1x1 pyramid branch at batch 1.
    model = build_pspnet("resnet18", 2, norm=norm, **{**SMALL, "ppm_channels": 64})
    x = torch.randn(1 if norm in ("group", "frozenbatch") else 2, 3, 24, 24)
    if norm == "syncbatch":  # SyncBatchNorm runs on CPU only in eval mode or under DDP
        model.eval()
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    else:
        model.train()
    assert model(x).shape == (x.shape[0], 2, 24, 24)


def test_custom_norm_layer_callable():
    model = build_pspnet("resnet18", 2, norm_layer=lambda c: nn.GroupNorm(4, c), **SMALL).train()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_frozen_batchnorm_stays_in_eval_mode():
    model = build_pspnet("resnet18", 2, norm="frozenbatch", **SMALL).train()
    bn = model.backbone.layer1[0].bn1
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_reset_classifier():
    model = build_pspnet("resnet18", 5, **SMALL).eval()
    model.reset_classifier(9)
    main, aux = model(torch.randn(1, 3, 20, 20), return_aux=True)
    assert main.shape[1] == aux.shape[1] == 9 == model.config.num_classes


def test_forward_features_and_feature_info():
    model = build_pspnet("resnet50", 3).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info] == [256, 512, 1024, 2048]
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]


# --- PyramidPoolingModule on its own ---


def test_ppm_output_channels_order_and_small_inputs():
    ppm = PyramidPoolingModule(16, bins=(1, 2, 3, 6)).eval()
    assert ppm.branch_channels == 4 and ppm.out_channels == 32
    for size in [(1, 1), (2, 5), (6, 6), (13, 9)]:
        x = torch.randn(2, 16, *size)
        with torch.no_grad():
            y = ppm(x)
        assert y.shape == (2, 32, *size)
        assert torch.equal(y[:, :16], x)  # input first, then branches in the order of bins
        with torch.no_grad():
            first_branch = ppm.branches[0](x).expand(-1, -1, *size)
        torch.testing.assert_close(y[:, 16:20], first_branch)


def test_ppm_keeps_channels_last():
    # A channels-last feature map must give a channels-last concatenation (otherwise the
    # bottleneck convolution re-lays out 4096 channels at full resolution, forward and backward).
    ppm = PyramidPoolingModule(16, bins=(1, 2, 3, 6)).eval()
    x = torch.randn(2, 16, 12, 10)
    with torch.no_grad():
        ref = ppm(x)
        y = ppm(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref)


def test_ppm_custom_bins_and_channels():
    ppm = PyramidPoolingModule(10, bins=(1, 4), branch_channels=3, align_corners=True).eval()
    assert ppm(torch.randn(1, 10, 9, 9)).shape == (1, 16, 9, 9)


# --- bad input gets a clear message ---


@pytest.fixture(scope="module")
def tiny_model():
    return build_pspnet("resnet18", 3, **SMALL).eval()


def test_3d_input_says_add_batch_dimension(tiny_model):
    with pytest.raises(ValueError, match=r"4-D input.*unsqueeze\(0\)"):
        tiny_model(torch.randn(3, 32, 32))


def test_wrong_channel_count(tiny_model):
    with pytest.raises(ValueError, match=r"built for 3 input channels, got 4"):
        tiny_model(torch.randn(1, 4, 32, 32))


def test_channels_last_layout_hint(tiny_model):
    with pytest.raises(ValueError, match=r"permute"):
        tiny_model(torch.randn(1, 32, 32, 3))


def test_integer_input_says_convert_and_normalise(tiny_model):
    with pytest.raises(TypeError, match=r"floating-point input, got torch.uint8.*normalis"):
        tiny_model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_non_tensor_input(tiny_model):
    with pytest.raises(TypeError, match=r"expects a torch.Tensor"):
        tiny_model([[1.0]])


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet42'.*resnet18, resnet34, resnet50"):
        build_pspnet("resnet42")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown PSPNet option\(s\) \['dilation'\].*output_stride"):
        build_pspnet("resnet50", dilation=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(output_stride=4), "output_stride must be one of"),
        (dict(stem="wide"), "unknown stem 'wide'"),
        (dict(norm="layer"), "unknown norm 'layer'"),
        (dict(preset="detectron"), "unknown preset 'detectron'"),
        (
            dict(num_classes=-1),
            r"num_classes must be an integer in \[1, 65536\] \(the number of classes\), or 0 for no classifier .*; got -1$",
        ),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_pspnet("resnet50", **kwargs)


def test_aux_from_model_without_aux_head():
    model = build_pspnet("resnet18", 3, aux=False, **SMALL).eval()
    assert model.aux_head is None
    with pytest.raises(ValueError, match=r"built with aux=False"):
        model(torch.randn(1, 3, 16, 16), return_aux=True)


def test_batch_size_one_in_training_explains_batchnorm():
    model = build_pspnet("resnet18", 3, **SMALL).train()
    with pytest.raises(ValueError, match=r"batch size 1.*BatchNorm.*at least 2.*eval\(\).*norm='group'"):
        model(torch.randn(1, 3, 32, 32))
