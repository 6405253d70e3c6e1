"""Issue 19: confidence maps (maxprob, margin, entropy; their 8-bit scaling) and ``pspnet rank``,
which lists the pictures most worth labelling first."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pspnet_lib import build_pspnet, predict
from pspnet_lib.cli import main
from pspnet_lib.inference.confidence import confidence_map, to_uint8, uncertainty

from .infer_utils import save_model_dir, tiny_model

COLOURS = np.array([(220, 30, 30), (30, 220, 30), (30, 30, 220)], np.uint8)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64x64 picture of coloured rectangles; the class of a pixel is its colour."""
    rng = np.random.default_rng(seed)
    labels = np.full((64, 64), rng.integers(3), np.int64)
    for _ in range(3):
        y, x = rng.integers(0, 48, 2)
        h, w = rng.integers(16, 40, 2)
        labels[y : y + h, x : x + w] = rng.integers(3)
    return COLOURS[labels], labels


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A PSPNet whose head is fitted to colour scenes (the backbone stays random): confident on
    such scenes, unsure on noise. About a second on one core."""
    torch.manual_seed(0)
    model = build_pspnet("resnet18", num_classes=3, head_channels=16, aux_channels=16, ppm_channels=8).eval()
    scenes = [_scene(s) for s in range(4)]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.stack([s[0] for s in scenes])).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        features = model.forward_features(x)[3]
    labels = torch.from_numpy(np.stack([s[1] for s in scenes]))[:, None].float()
    target = F.interpolate(labels, size=features.shape[-2:], mode="nearest")[:, 0].long()
    optimiser = torch.optim.Adam(model.decode_head.parameters(), 0.03)
    for _ in range(40):
        loss = F.cross_entropy(model.decode_head(features), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.pretrained_cfg = {"inference": {"mode": "whole"}}
    return save_model_dir(model, tmp_path_factory.mktemp("fitted") / "model"), model


def test_maxprob_margin_entropy_of_predict():
    model = tiny_model(num_classes=3)
    picture = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    probs = predict(model, picture, return_probs=True).probs
    top = probs.topk(2, dim=0).values
    for kind, expected in (
        ("maxprob", probs.max(0).values),
        ("margin", top[0] - top[1]),
        ("entropy", -(probs * probs.log()).sum(0)),
    ):
        result = predict(model, picture, confidence=kind)
        assert result.confidence.shape == (37, 45) and result.confidence.dtype == torch.float32
        assert result.confidence_kind == kind and result.probs is None
        assert torch.allclose(result.confidence, expected, atol=1e-6), kind
    flipped = predict(model, picture, confidence="maxprob", flip=True, return_probs=True)  # over the averaged runs
    assert torch.allclose(flipped.confidence, flipped.probs.max(0).values)
    with pytest.raises(ValueError, match="maxprob, margin, entropy"):
        predict(model, picture, confidence="variance")


def test_uniform_prediction_has_entropy_log_k_and_picture_255():
    model = tiny_model(num_classes=5)
    torch.nn.init.zeros_(model.decode_head.classifier.weight)
    torch.nn.init.zeros_(model.decode_head.classifier.bias)
    result = predict(model, np.zeros((16, 16, 3), np.uint8), confidence="entropy")
    assert torch.allclose(result.confidence, torch.full((16, 16), math.log(5)))
    assert (to_uint8(result.confidence, "entropy", 5) == 255).all()  # entropy / ln K * 255
    maxprob = predict(model, np.zeros((16, 16, 3), np.uint8), confidence="maxprob").confidence
    assert torch.allclose(maxprob, torch.full((16, 16), 0.2)) and (to_uint8(maxprob, "maxprob", 5) == 51).all()
    certain = torch.tensor([[[1.0]], [[0.0]]])  # one pixel, two classes, sure of class 0
    assert float(confidence_map(certain, "entropy")) == 0.0 and float(confidence_map(certain, "margin")) == 1.0
    assert uncertainty(0.25, "maxprob") == 0.75 and uncertainty(0.25, "entropy") == 0.25


def test_pspnet_rank_puts_noise_above_a_picture_the_model_fits(fitted, tmp_path, capsys):
    weights_dir, model = fitted
    pictures = tmp_path / "unlabelled"
    pictures.mkdir()
    scene, labels = _scene(0)
    Image.fromarray(scene).save(pictures / "scene.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(pictures / "noise.png")
    Image.fromarray(_scene(99)[0]).save(pictures / "other_scene.png")
    assert (
        predict(model, scene).mask.numpy() == labels
    ).mean() > 0.85  # fits the scene (edges are blurred at stride 8)
    ranking = tmp_path / "to_label.jsonl"
    args = ["rank", str(pictures), "--weights", str(weights_dir), "--out", str(ranking), "--num-workers", "0"]
    assert main([*args, "--top", "2"]) == 0
    assert "ranked 3 picture(s), wrote the top 2" in capsys.readouterr().out
    records = [json.loads(line) for line in ranking.read_text().splitlines()]
    assert [r["rank"] for r in records] == [1, 2] and records[0]["input"].endswith("noise.png")
    assert records[0]["uncertainty"] > 2 * records[1]["uncertainty"]
    assert records[0]["confidence_kind"] == "entropy" and (records[0]["height"], records[0]["width"]) == (64, 64)

    # the same order from the manifests of a pspnet predict --confidence run (every shard's part)
    out = tmp_path / "masks"
    for shard in ("0/2", "1/2"):
        code = main(["predict", str(pictures), "--weights", str(weights_dir), "--out", str(out), "--shard", shard,
                     "--confidence", "entropy", "--num-workers", "0"])  # fmt: skip
        assert code == 0
    capsys.readouterr()
    assert main(["rank", "--manifest", str(out)]) == 0
    from_manifests = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in from_manifests[:2]] == [r["input"] for r in records]
    assert from_manifests[0]["uncertainty"] == pytest.approx(records[0]["uncertainty"], abs=1e-6)
    assert len(from_manifests) == 3 and from_manifests[0]["outputs"]["entropy"] == "noise_entropy.png"


def test_rank_refuses_what_it_cannot_order(fitted, tmp_path, caplog):
    weights_dir, _ = fitted
    pictures = tmp_path / "p"
    pictures.mkdir()
    Image.fromarray(_scene(1)[0]).save(pictures / "a.png")
    assert main(["predict", str(pictures), "--weights", str(weights_dir), "--out", str(tmp_path / "plain")]) == 0
    assert main(["rank", "--manifest", str(tmp_path / "plain")]) == 1
    assert "--confidence" in caplog.records[-1].getMessage()
    assert main(["rank", str(pictures)]) == 1 and "--weights" in caplog.records[-1].getMessage()
    assert main(["rank", str(pictures), "--weights", str(weights_dir), "--top", "0"]) == 1
