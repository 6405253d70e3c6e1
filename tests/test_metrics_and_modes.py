import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pspnet_lib import build_pspnet
from pspnet_lib.engine.evaluate import evaluate
from pspnet_lib.engine.metrics import ConfusionMatrix, format_metrics_table, metrics_to_json
from pspnet_lib.inference.modes import InferenceProtocol, infer, infer_slide, rescale_size


def test_metrics_equal_hand_computed_confusion_matrix():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 17, 13))
    target[0, :3] = 255
    pred = rng.integers(0, 4, size=(3, 17, 13))
    cm = ConfusionMatrix(4)
    for t, p in zip(target, pred):  # accumulated image by image
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    hand = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            hand[t, p] += 1
    assert np.array_equal(cm.matrix.numpy(), hand)
    m = cm.compute()
    tp = np.diag(hand)
    iou = tp / (hand.sum(0) + hand.sum(1) - tp)
    acc = tp / hand.sum(1)
    assert np.allclose(m["IoU"], iou) and math.isclose(m["mIoU"], iou.mean())
    assert np.allclose(m["Acc"], acc) and math.isclose(m["mAcc"], acc.mean())
    assert math.isclose(m["aAcc"], tp.sum() / hand.sum())
    assert m["pixels"] == (target != 255).sum()


def test_class_absent_everywhere_is_nan_and_skipped():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    m = cm.compute()
    assert math.isnan(m["IoU"][2]) and math.isclose(m["mIoU"], (0.5 + 0.5) / 2)
    assert "nan" in format_metrics_table(m, ["a", "b", "c"])
    assert '"c": {\n      "IoU": null' in metrics_to_json(m, ["a", "b", "c"])


def test_out_of_range_target_is_a_clear_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, 3\)"):
        cm.update(torch.tensor([0, 1]), torch.tensor([7, 255]))


class CountingModel(nn.Module):
    """Logits that reveal coverage: class 0 = 1 everywhere the window saw."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        return torch.cat([torch.ones_like(x[:, :1]), x[:, :1]], dim=1)


@pytest.mark.parametrize(
    "size, crop, stride", [((50, 70), 32, 21), ((31, 31), 16, 16), ((10, 12), 32, 20), ((65, 97), (33, 40), (20, 30))]
)
def test_slide_covers_every_pixel_and_averages(size, crop, stride):
    model = CountingModel()
    x = torch.randn(2, 3, *size)
    out = infer_slide(model, x, crop, stride)
    assert torch.allclose(out[:, 0], torch.ones(2, *size))  # every pixel covered, count-averaged
    assert torch.allclose(out[:, 1], x[:, 0], atol=1e-6)  # overlaps average to the same value
    crop_hw = (crop, crop) if isinstance(crop, int) else crop
    assert all(h <= crop_hw[0] and w <= crop_hw[1] for h, w in model.calls)


def test_slide_equals_whole_when_crop_covers_image():
    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=8).eval()
    x = torch.randn(1, 3, 41, 37)
    whole = infer(model, x)
    slide = infer(model, x, protocol=InferenceProtocol(mode="slide", crop=64, stride=48))
    torch.testing.assert_close(slide, whole)


def test_multiscale_flip_returns_probabilities_at_input_size():
    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=8).eval()
    x = torch.randn(1, 3, 33, 45)
    probs = infer(model, x, protocol=InferenceProtocol(scales=(0.5, 1.0, 1.5), flip=True))
    assert probs.shape == (1, 3, 33, 45)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 33, 45))


def test_rescale_size_keeps_ratio_within_limits():
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert rescale_size(1024, 2048, (2048, 512)) == (512, 1024)
    assert rescale_size(300, 400, (2048, 512)) == (512, 683)
    assert rescale_size(300, 400, None) == (300, 400)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="tiles"), "unknown inference mode"),
        (dict(mode="slide"), "needs crop and stride"),
        (dict(scales=(0,)), "positive"),
    ],
)
def test_bad_protocols(kwargs, message):
    with pytest.raises(ValueError, match=message):
        infer(CountingModel(), torch.randn(1, 3, 8, 8), **kwargs)
    with pytest.raises(ValueError, match=kwargs and next(iter(kwargs))):  # the object names the field
        infer(CountingModel(), torch.randn(1, 3, 8, 8), protocol=InferenceProtocol(**kwargs))


class ListDataset(torch.utils.data.Dataset):
    classes = ["a", "b", "c"]

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_scores_model_predictions_against_masks():
    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=8).eval()
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in [(20, 30), (33, 17)]]
    # Ground truth = the model's own predictions, with some pixels ignored: a perfect score.
    from pspnet_lib.engine.evaluate import normalize_images

    masks = []
    for img in images:
        with torch.no_grad():
            pred = model(normalize_images(img[None], model)).argmax(1)[0]
        pred[:2] = 255
        masks.append(pred)
    metrics = evaluate(model, ListDataset(list(zip(images, masks))), progress=False)
    assert metrics["aAcc"] == 1.0 and metrics["classes"] == ["a", "b", "c"]
    assert metrics["pixels"] == sum(int((m != 255).sum()) for m in masks)


def test_out_of_range_predictions_are_misses_of_their_true_class():
    # mmsegmentation's convention: the pixels count for their ground-truth class, for no prediction
    cm = ConfusionMatrix(3)
    cm.update([3, 5], [0, 0])
    m = cm.compute()
    assert m["IoU"][0] == 0.0 and m["Acc"][0] == 0.0
    assert math.isnan(m["IoU"][1]) and math.isnan(m["IoU"][2])
    assert math.isnan(m["Acc"][1]) and math.isnan(m["Acc"][2])
    assert m["pixels"] == 2 and m["aAcc"] == 0.0 and m["out_of_range"] == 2
    assert cm.matrix.sum() == 0 and cm.matrix[1].sum() == 0  # nothing filed under another class
    assert cm.out_of_range.tolist() == [2, 0, 0]


def test_out_of_range_predictions_never_shift_other_rows():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2, 7, -1, 1]), torch.tensor([0, 1, 2, 1, 2, 255]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    m = cm.compute()
    assert m["IoU"] == [1.0, 0.5, 0.5] and m["pixels"] == 5


class _SixClasses(torch.utils.data.Dataset):
    num_classes = 3

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.zeros(3, 16, 16, dtype=torch.uint8), torch.zeros(16, 16, dtype=torch.int64)


def test_evaluate_with_a_model_of_another_class_count_is_one_clear_error():
    model = build_pspnet("resnet18", 6, head_channels=8, aux_channels=8, ppm_channels=8)
    with pytest.raises(ValueError, match=r"num_classes=3\) but the model predicts 6 classes"):
        evaluate(model, _SixClasses(), num_classes=3, progress=False)
    with pytest.raises(ValueError, match=r"model predicts 6 classes but the dataset \(_SixClasses\) has 3"):
        evaluate(model, _SixClasses(), progress=False)
