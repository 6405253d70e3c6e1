"""Tiled inference (issue 20): the default blend is ``slide``, the Hann blend hides seams, bad windows are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib import predict, predict_raster
from pspnet_lib.inference.modes import infer_slide, slide_spans
from pspnet_lib.inference.tiled import blend_profile, infer_tiled, resolve_tiling

from .infer_utils import tiny_model

# A picture that fits in memory, not a multiple of the windows; windows of unequal sides.
HEIGHT, WIDTH = 900, 1100
CROP, STRIDE = (320, 384), (290, 360)  # 3 x 3 windows, overlapping by 30 and 24 pixels


def _smooth(channels: int, seed: int = 0) -> np.ndarray:
    """(H, W, C) uint8 with structure at several scales, so that windows see different content."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (HEIGHT // 50 + 1, WIDTH // 50 + 1, channels), dtype=np.uint8)
    image = Image.fromarray(small.squeeze(-1) if channels == 1 else small).resize((WIDTH, HEIGHT), Image.BICUBIC)
    noise = rng.integers(-20, 21, (HEIGHT, WIDTH, channels))
    return np.clip(np.asarray(image, dtype=np.int64).reshape(HEIGHT, WIDTH, channels) + noise, 0, 255).astype(np.uint8)


def _normalised(model, image: np.ndarray) -> torch.Tensor:
    from pspnet_lib import PretrainedCfg

    cfg = PretrainedCfg.of(model)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    mean, std = torch.tensor(cfg.mean).view(-1, 1, 1), torch.tensor(cfg.std).view(-1, 1, 1)
    return ((x - mean) / std)[None]


def _one_channel_model() -> torch.nn.Module:
    """A 1-channel PSPNet on timm's smallest test ResNet (a quarter of R18's time per window)."""
    pytest.importorskip("timm")
    from pspnet_lib import build_pspnet
    from pspnet_lib._testing import randomize_batchnorm_

    torch.manual_seed(0)
    model = build_pspnet(
        "timm:test_resnet", num_classes=21, output_stride=32, in_channels=1, head_channels=32, ppm_channels=8
    )
    return randomize_batchnorm_(model).eval()


@pytest.mark.parametrize("channels", [3, 1], ids=["r18-21-classes-rgb", "one-channel"])
def test_mean_blend_is_slide_inference(channels, tmp_path):
    """The issue's example: 1,100 x 900, R18 at 21 classes and a 1-channel model: the same argmax as
    predict(mode="slide") through the file path, and logits within 1e-5, across strip boundaries."""
    model = tiny_model(num_classes=21, output_stride=32) if channels == 3 else _one_channel_model()
    with torch.no_grad():  # without the classifier's bias the classes follow the picture (several of them)
        model.decode_head.classifier.bias.zero_()
    image = _smooth(channels)
    x = _normalised(model, image)
    with torch.no_grad():
        reference = infer_slide(model, x, CROP, STRIDE)
        tiled = infer_tiled(model, x, CROP, STRIDE, strip_width=512)  # 3 strips: sums carried between them
    assert torch.allclose(tiled, reference, rtol=0, atol=1e-5)
    _same_classes_but_float_ties(tiled.argmax(1)[0], reference)

    expected = predict(model, image if channels == 3 else image[..., 0], mode="slide", crop=CROP, stride=STRIDE)
    if channels == 3:  # a GeoTIFF, read window by window with rasterio
        import rasterio

        source = tmp_path / "scene.tif"
        profile = dict(driver="GTiff", height=HEIGHT, width=WIDTH, count=3, dtype="uint8", tiled=True)
        with rasterio.open(source, "w", blockxsize=256, blockysize=256, **profile) as dst:
            dst.write(image.transpose(2, 0, 1))
        out = tmp_path / "scene_labels.tif"
        predict_raster(model, source, out, crop=CROP, stride=STRIDE, progress=False)
        with rasterio.open(out) as result:
            mask = result.read(1)
    else:  # a grey PNG, decoded by Pillow; the output is the paletted PNG pspnet predict writes
        source = tmp_path / "scan.png"
        Image.fromarray(image[..., 0], mode="L").save(source)
        out = tmp_path / "scan_labels.png"
        predict_raster(model, source, out, crop=CROP, stride=STRIDE, progress=False)
        written = Image.open(out)
        assert written.mode == "P" and written.getpalette() == expected.colorize().getpalette()
        mask = np.asarray(written)
    _same_classes_but_float_ties(torch.from_numpy(mask.astype(np.int64)), reference)
    assert np.array_equal(expected.mask.numpy(), reference.argmax(1)[0].numpy())  # predict(mode="slide") is that
    assert len(np.unique(mask)) > 1  # a test that could fail: the model does not answer one class


def _same_classes_but_float_ties(classes: torch.Tensor, reference: torch.Tensor) -> None:
    """``classes`` (H, W) is ``reference.argmax`` except where the best two logits of ``reference``
    (1, K, H, W) tie within float rounding (a batched forward rounds differently from one window at a
    time: predict itself gives such pixels different classes at different batch sizes)."""
    top = reference[0].topk(2, dim=0).values
    differ = classes != reference[0].argmax(0)
    assert int(differ.sum()) <= 10, f"{int(differ.sum())} pixels differ"
    assert bool(((top[0] - top[1])[differ] < 1e-5).all())


class _WindowMean(torch.nn.Module):
    """Logits constant over each window (its mean brightness): every window border is a step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *x.shape[2:])
        return torch.cat([level, -level], dim=1)


def test_hann_blend_hides_the_seams_the_mean_blend_leaves():
    ramp = torch.linspace(-2, 2, 600).expand(1, 3, 200, 600).contiguous()  # windows see different levels
    mean = infer_tiled(_WindowMean(), ramp, 128, 96)[0, 0]
    hann = infer_tiled(_WindowMean(), ramp, 128, 96, blend="hann")[0, 0]
    jump_mean = (mean[:, 1:] - mean[:, :-1]).abs().max()
    jump_hann = (hann[:, 1:] - hann[:, :-1]).abs().max()
    assert jump_mean > 0.2  # steps where a window begins or ends
    assert jump_hann < jump_mean / 5
    # Both are weighted means of the same windows' logits: same range.
    assert hann.min() >= mean.min() - 1e-5 and hann.max() <= mean.max() + 1e-5


def test_blend_profiles():
    assert torch.equal(blend_profile("mean", 5), torch.ones(5, dtype=torch.float64))
    hann = blend_profile("hann", 512)
    assert hann.min() > 0 and hann[255:257].min() > 0.999 and hann[0] < 1e-4
    assert torch.allclose(hann, hann.flip(0))
    with pytest.raises(ValueError, match="blend must be one of mean, hann"):
        blend_profile("gaussian", 5)


def test_slide_spans_are_the_slide_windows():
    assert slide_spans(900, 320, 200) == [(0, 320), (200, 520), (400, 720), (580, 900)]
    assert slide_spans(100, 320, 200) == [(0, 100)]  # shorter than the crop: one window
    with pytest.raises(ValueError, match="0 < stride <= crop"):
        slide_spans(900, 320, 0)


def test_window_errors_name_the_option():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^stride \(--stride\) must be between 1 and the crop 256x256.*got 0x0"):
        resolve_tiling(model, 256, 0)
    with pytest.raises(ValueError, match=r"^stride \(--stride\) must be between 1 and the crop"):
        resolve_tiling(model, 256, 300)  # gaps between windows
    with pytest.raises(ValueError, match=r"^crop \(--crop\) 512x512 is larger than the picture \(300x400 pixels\)"):
        resolve_tiling(model, 512, 256, size=(300, 400))
    with pytest.raises(ValueError, match="strip_width must be an integer of at least the crop width 128"):
        infer_tiled(model, torch.zeros(1, 3, 200, 300), 128, 96, strip_width=64)


def test_window_defaults_come_from_the_weights():
    model = tiny_model()
    assert resolve_tiling(model) == ((512, 512), (341, 341))  # nothing stored: 512, two thirds
    model.pretrained_cfg["crop_size"] = [769, 769]  # the zoo records the training crop
    assert resolve_tiling(model) == ((769, 769), (513, 513))
    model.pretrained_cfg["inference"] = {"mode": "slide", "crop": [480, 480], "stride": [320, 320]}
    assert resolve_tiling(model) == ((480, 480), (320, 320))  # a stored slide protocol wins
    assert resolve_tiling(model, crop=256) == ((256, 256), (171, 171))
    assert resolve_tiling(model, crop=(256, 384), stride=(128, 200)) == ((256, 384), (128, 200))
