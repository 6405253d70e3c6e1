"""predict(): every input kind, mixed sizes, preprocessing from pretrained_cfg, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import Prediction, predict, sample_images
from pspnet_lib.core.constants import IMAGENET_MEAN, IMAGENET_STD
from pspnet_lib.inference.modes import InferenceProtocol, infer

from .infer_utils import CLASSES, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def configured(model):
    """The shared model; a test may set its pretrained_cfg, which is reset afterwards."""
    yield model
    model.pretrained_cfg = {}


@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def _reference_probs(model, array: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD, **protocol) -> torch.Tensor:
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return infer(model, x, protocol=InferenceProtocol(**protocol))[0].softmax(0)


def test_every_input_kind_gives_the_same_segmentation(model, picture, tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    tensor = torch.from_numpy(picture).permute(2, 0, 1).contiguous()
    inputs = {
        "numpy": picture,
        "pil": Image.fromarray(picture),
        "str path": str(path),
        "Path": path,
        "uint8 tensor": tensor,
        "float tensor": tensor.float() / 255,
        "float numpy": picture.astype(np.float32) / 255,
    }
    expected = _reference_probs(model, picture)
    # One call with every kind (they share a size, so one batch), and a single-image call each
    # for the two kinds that go through different code (file reading, float conversion).
    results = predict(model, list(inputs.values()), batch_size=8, return_probs=True)
    results += [predict(model, path, return_probs=True), predict(model, inputs["float tensor"], return_probs=True)]
    for kind, result in zip([*inputs, "single path", "single float tensor"], results):
        assert isinstance(result, Prediction), kind
        assert result.mask.shape == (37, 53) and result.mask.dtype == torch.int64, kind
        assert torch.allclose(result.probs, expected, atol=1e-5), kind
        assert torch.equal(result.mask, expected.argmax(0)), kind
        assert result.image.shape == (37, 53, 3) and result.image.dtype == np.uint8, kind
    assert results[2].source == str(path) and results[0].source is None


def test_mixed_sizes_in_one_call_come_back_in_order_at_original_size(model):
    rng = np.random.default_rng(1)
    sizes = [(37, 53), (30, 30), (37, 53), (20, 90), (37, 53)]
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    results = predict(model, images, batch_size=2, return_probs=True)
    assert isinstance(results, list) and len(results) == len(images)
    for image, (h, w), result in zip(images, sizes, results):
        assert result.mask.shape == (h, w)
        assert result.probs.shape == (5, h, w)
        # Batching same-size images together must not change any image's result.
        assert torch.allclose(result.probs, _reference_probs(model, image), atol=1e-5)


def test_grayscale_and_rgba_are_converted_to_rgb(model, picture):
    gray = picture[..., 0]
    rgb_from_gray = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([picture, np.full(picture.shape[:2] + (1,), 77, np.uint8)], axis=2)
    grays = [
        gray,
        Image.fromarray(gray, mode="L"),
        torch.from_numpy(gray),
        torch.from_numpy(gray)[None],
        gray[..., None],
    ]
    rgbas = [rgba, Image.fromarray(rgba, mode="RGBA"), torch.from_numpy(rgba).permute(2, 0, 1)]
    results = predict(model, [rgb_from_gray, *grays, picture, *rgbas], batch_size=16, return_probs=True)
    for result in results[1:6]:
        assert torch.allclose(result.probs, results[0].probs, atol=1e-6)
    for result in results[7:]:
        assert torch.allclose(result.probs, results[6].probs, atol=1e-6)
    assert not torch.allclose(results[0].probs, results[6].probs, atol=1e-3)


def test_normalisation_comes_from_the_weights(configured, picture):
    model = configured
    model.pretrained_cfg = {"mean": [0.3, 0.4, 0.5], "std": [0.2, 0.25, 0.3]}
    result = predict(model, picture, return_probs=True)
    assert torch.allclose(
        result.probs, _reference_probs(model, picture, mean=[0.3, 0.4, 0.5], std=[0.2, 0.25, 0.3]), atol=1e-5
    )
    assert not torch.allclose(result.probs, _reference_probs(model, picture), atol=1e-3)


def test_protocol_defaults_come_from_the_weights_and_can_be_overridden(configured, picture):
    model = configured
    model.pretrained_cfg = {"inference": {"mode": "whole", "resize": [40, 20]}}
    resized = predict(model, picture, return_probs=True)
    assert resized.mask.shape == (37, 53)  # resized for the model, returned at the original size
    assert torch.allclose(resized.probs, _reference_probs(model, picture, resize=(40, 20)), atol=1e-5)
    own_size = predict(model, picture, resize=False, return_probs=True)
    assert torch.allclose(own_size.probs, _reference_probs(model, picture), atol=1e-5)
    short_side = predict(model, picture, resize=25, return_probs=True)
    assert torch.allclose(short_side.probs, _reference_probs(model, picture, resize=(1 << 30, 25)), atol=1e-5)

    model.pretrained_cfg = {"inference": {"mode": "slide", "crop": 32, "stride": 24, "resize": None}}
    slid = predict(model, picture, return_probs=True)
    assert torch.allclose(slid.probs, _reference_probs(model, picture, mode="slide", crop=32, stride=24), atol=1e-5)
    whole = predict(model, picture, mode="whole", return_probs=True)
    assert torch.allclose(whole.probs, _reference_probs(model, picture), atol=1e-5)


def test_predict_takes_the_protocol_object_and_the_old_size_keyword_warns(configured, picture):
    model = configured
    model.pretrained_cfg = {"inference": {"mode": "whole", "resize": [40, 20]}}
    protocol = InferenceProtocol(mode="slide", crop=32, stride=24, flip=True)
    given = predict(model, picture, protocol=protocol, return_probs=True)  # used as it is, not over the stored one
    expected = predict(model, picture, mode="slide", crop=32, stride=24, flip=True, resize=False, return_probs=True)
    assert torch.equal(given.probs, expected.probs)
    with pytest.raises(ValueError, match=r"not both.*protocol.replace"):
        predict(model, picture, protocol=protocol, flip=True)
    with pytest.warns(DeprecationWarning, match=r"predict\(size=...\) is deprecated; pass resize"):
        old = predict(model, picture, size=25, return_probs=True)
    assert torch.equal(old.probs, predict(model, picture, resize=25, return_probs=True).probs)
    with pytest.raises(ValueError, match="resize= only"):
        predict(model, picture, size=25, resize=25)


def test_flip_and_scales_average_probabilities(model, picture):
    result = predict(model, picture, flip=True, scales=(0.75, 1.0), return_probs=True)
    assert result.probs.shape == (5, 37, 53)
    assert torch.allclose(result.probs.sum(0), torch.ones(37, 53), atol=1e-5)
    assert torch.equal(result.mask, result.probs.argmax(0))
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = infer(model, x, protocol=InferenceProtocol(flip=True, scales=(0.75, 1.0)))[0]
    assert torch.allclose(result.probs, expected, atol=1e-5)


def test_batches_and_return_types(model, picture):
    batch = torch.from_numpy(np.stack([picture, picture[::-1].copy()])).permute(0, 3, 1, 2)
    results = predict(model, batch)
    assert isinstance(results, list) and len(results) == 2 and results[0].mask.shape == (37, 53)
    assert predict(model, []) == []
    single = predict(model, (picture,))
    assert isinstance(single, list) and len(single) == 1
    # Returned masks are ordinary tensors the caller may edit.
    single[0].mask[0, 0] = 3
    assert single[0].mask[0, 0] == 3


def test_training_mode_is_restored_and_ignored_for_prediction(model, picture):
    expected = predict(model, picture, return_probs=True).probs
    model.train()
    try:
        result = predict(model, picture, return_probs=True)
        assert model.training
    finally:
        model.eval()
    assert torch.allclose(result.probs, expected, atol=1e-6)


def test_prediction_pictures_use_the_weights_classes_and_palette(configured, picture):
    model = configured
    palette = [(10, 20, 30), (200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)]
    model.pretrained_cfg = {"classes": CLASSES, "palette": palette}
    result = predict(model, picture)
    coloured = result.colorize()
    assert coloured.mode == "P" and coloured.size == (53, 37)
    assert np.array_equal(np.asarray(coloured), result.mask.numpy())
    assert coloured.getpalette()[:15] == [c for colour in palette for c in colour]
    over = result.overlay(alpha=1.0)
    assert over.mode == "RGB" and over.size == (53, 37)
    expected = np.asarray(palette, dtype=np.uint8)[result.mask.numpy()]
    assert np.array_equal(np.asarray(over), expected)
    assert result.classes == CLASSES and result.class_name(2) == "road"
    assert result.present == sorted(set(result.mask.flatten().tolist()))
    assert result.legend().mode == "RGB"


def test_autocast_dtype_runs(model, picture):
    result = predict(model, picture, amp_dtype=torch.bfloat16, return_probs=True)
    assert result.mask.shape == (37, 53) and result.probs.dtype == torch.float32
    reference = _reference_probs(model, picture)
    assert (result.mask == reference.argmax(0)).float().mean() > 0.9


@pytest.mark.parametrize(
    "image, error, message",
    [
        ({"not": "an image"}, TypeError, "cannot use an object of type dict"),
        (np.zeros((8, 8, 3), np.uint16), TypeError, "uint16"),
        (np.zeros((8, 8, 3), np.bool_), TypeError, "bool"),
        (torch.randn(3, 8, 8), ValueError, "[0, 1]"),
        (torch.zeros(5, 8, 8, dtype=torch.uint8), ValueError, "5 channels"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, "permute(2, 0, 1)"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, "expected 1 (grayscale), 3 (RGB) or 4 (RGBA)"),
        (np.zeros((2, 2, 8, 8, 3), np.uint8), ValueError, "5-D"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
        (12, TypeError, "type int"),
    ],
)
def test_bad_inputs_are_named_in_the_error(model, image, error, message):
    with pytest.raises(error) as info:
        predict(model, image)
    assert message in str(info.value)
    assert "expected" in str(info.value) or "use" in str(info.value) or "Pass" in str(info.value)


def test_bad_files_and_options(model, picture, tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        predict(model, tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot read .*corrupt.jpg as an image"):
        predict(model, corrupt)
    with pytest.raises(TypeError, match="input 1 of 2"):
        predict(model, [picture, object()])
    with pytest.raises(ValueError, match="unknown inference mode 'tiles'"):
        predict(model, picture, mode="tiles")
    with pytest.raises(ValueError, match="crop=... and stride=..."):
        predict(model, picture, mode="slide")
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, picture, batch_size=0)
    with pytest.raises(ValueError, match="size must be"):
        predict(model, picture, resize=(1, 2, 3))


def test_sample_images_are_small_real_photos(model):
    paths = sample_images()
    assert [p.name for p in paths] == ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"]
    for path in paths:
        assert path.stat().st_size < 100_000
        with Image.open(path) as image:
            assert image.mode == "RGB" and 256 <= max(image.size) <= 512
            # A photo, not a flat synthetic picture: many distinct colours.
            assert len(image.getcolors(maxcolors=1 << 20) or []) > 5000
    results = predict(model, paths, resize=64)
    assert [r.mask.shape for r in results] == [(400, 400), (300, 451), (320, 480)]
