"""timm / Hugging Face Hub conventions: from_pretrained(num_classes=), wrapper prefixes, EMA copies, classifiers."""

import logging

import pytest
import torch

from pspnet_lib import PSPNet, build_pspnet, load_pretrained
from pspnet_lib.hub.formats.converters import select_ema, strip_wrappers

from .hub_utils import SMALL


def _model(num_classes=5, **kw):
    torch.manual_seed(0)
    return build_pspnet("resnet18", num_classes, **SMALL, **kw).eval()


def _same(a, b):
    x = torch.randn(1, 3, 33, 41, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_from_pretrained_num_classes_replaces_classifiers_with_the_load_report(tmp_path):
    model = _model()
    model.pretrained_cfg = {"classes": list("abcde"), "name": "toy"}
    model.save_pretrained(tmp_path)
    tuned = PSPNet.from_pretrained(tmp_path, num_classes=3)
    expected = load_pretrained(tmp_path, num_classes=3)
    assert tuned.num_classes == 3 and not tuned.training
    assert tuned.load_report.to_dict() == expected.load_report.to_dict()
    assert sorted(tuned.load_report.reinitialised) == sorted(
        [
            "decode_head.classifier.weight",
            "decode_head.classifier.bias",
            "aux_head.classifier.weight",
            "aux_head.classifier.bias",
        ]
    )
    assert "classes" not in tuned.pretrained_cfg  # the old class names no longer apply
    assert torch.equal(
        tuned.state_dict()["backbone.layer4.1.conv2.weight"], model.state_dict()["backbone.layer4.1.conv2.weight"]
    )
    same = PSPNet.from_pretrained(tmp_path, strict=True)
    assert same.num_classes == 5 and _same(same, model)


def test_wrapped_and_compiled_state_dicts_load(tmp_path):
    model = _model()
    compiled = torch.compile(model)  # no call: compiling is lazy, the state dict is what matters
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    torch.save(compiled.state_dict(), tmp_path / "compiled.pth")
    torch.save(
        {"state_dict": {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pth"
    )
    for name in ("compiled.pth", "ddp.pth"):
        loaded = load_pretrained(tmp_path / name, num_classes=None)
        assert loaded.load_report.ok and _same(loaded, model), name


def test_ema_weights_are_preferred_with_a_log_line(tmp_path, caplog):
    model, ema = _model(), _model()
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01)
    sd, ema_sd = model.state_dict(), ema.state_dict()
    files = {
        "timm.pth": {"state_dict": sd, "state_dict_ema": ema_sd},
        "copies.pth": {"model": {**sd, **{f"ema.{k}": v for k, v in ema_sd.items()}}},
        "mmcv.pth": {
            "state_dict": {
                **{f"module.{k}": v for k, v in sd.items()},
                **{f"module.ema_{k.replace('.', '_')}": v for k, v in ema.named_parameters()},
            }
        },
        "averaged.pth": {
            "state_dict": sd,
            "ema_state_dict": {"steps": torch.tensor(3), **{f"module.{k}": v for k, v in ema_sd.items()}},
        },
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pspnet_lib"):
            loaded = load_pretrained(tmp_path / name)
        assert _same(loaded, ema) and not _same(loaded, model), name
        assert any("EMA" in r.getMessage() or "ema" in r.getMessage() for r in caplog.records), name
    # without EMA: the state dict itself
    assert select_ema({"state_dict": sd}, sd) == sd and strip_wrappers({"module.a": 1}) == {"a": 1}


def test_reset_classifier_zero_returns_head_features():
    model = _model()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model.forward_head(model.forward_features(x))
        assert torch.allclose(
            torch.nn.functional.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False),
            model(x),
            atol=1e-6,
        )
    assert model.get_classifier() is model.decode_head.classifier and model.get_classifier().out_channels == 5
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0
    with torch.no_grad():
        features = model(x)
        main, aux = model(x, return_aux=True)
    assert features.shape == (2, SMALL["head_channels"], 5, 6) and torch.allclose(features, pre, atol=1e-6)
    assert aux.shape == (2, SMALL["aux_channels"], 5, 6)
    model.train()(x).sum().backward()  # trains as a feature extractor (e.g. under a new head)
    model.reset_classifier(7)
    assert model.eval()(x).shape == (2, 7, 40, 48)
    with pytest.raises(ValueError, match=r"non-negative integer"):
        model.reset_classifier(-1)
    built = build_pspnet("resnet18", 0, **SMALL).eval()
    assert built(x).shape == (2, SMALL["head_channels"], 5, 6)
