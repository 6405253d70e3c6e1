"""The paper's augmentation keeps image and mask aligned; eval transform; synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from pspnet_lib.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SYNTHETIC_CLASSES,
    FolderDataset,
    RandomScale,
    SyntheticScenes,
    eval_transforms,
    train_transforms,
    write_synthetic_dataset,
)

# Flat, far-apart colours per class, none close to the ImageNet mean used as fill colour.
COLOURS = torch.tensor([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]], dtype=torch.float32)
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _blocks(size: int = 64, block: int = 16, seed: int = 0) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """An image whose pixels are the colour of their mask's class (blocks of random classes)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, len(COLOURS), (size // block, size // block), generator=g)
    mask = cells.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = COLOURS[mask].permute(2, 0, 1).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask.long())


def _decode(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class of the nearest flat colour for each pixel of a normalised image, and its distance."""
    rgb = (image * STD + MEAN) * 255.0
    distance = ((rgb.permute(1, 2, 0)[..., None, :] - COLOURS) ** 2).sum(-1).sqrt()
    best, cls = distance.min(-1)
    return cls, best


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood has a single mask value (away from resampled borders)."""
    m = mask[None, None].float()
    high = F.max_pool2d(m, 3, 1, 1)
    low = -F.max_pool2d(-m, 3, 1, 1)
    return (high == low)[0, 0]


def _agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    cls, _ = _decode(image)
    keep = _interior(mask) & (mask != 255)
    return float((cls[keep] == mask[keep]).float().mean())


def test_train_transform_keeps_image_and_mask_aligned():
    transform = train_transforms(48, rotation_p=1.0, blur_p=0.0, flip_p=0.5)
    agreements, flipped_controls = [], []
    for seed in range(24):
        torch.manual_seed(seed)
        image, mask = _blocks(seed=seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 48, 48) and out_image.dtype == torch.float32
        assert out_mask.shape == (48, 48) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {255}
        agreements.append(_agreement(out_image, out_mask))
        flipped_controls.append(_agreement(out_image, out_mask.flip(-1)))
    assert min(agreements) > 0.99, agreements
    # The check can fail: a mask flipped against its image disagrees badly.
    assert np.mean(flipped_controls) < 0.8


def test_alignment_survives_blur_away_from_borders():
    transform = train_transforms(48, scale_range=(1.0, 1.5), rotation=0, blur_p=1.0, flip_p=0.5)
    for seed in range(6):
        torch.manual_seed(seed)
        image, mask = _blocks(seed=seed)
        out_image, out_mask = transform(image, mask)
        keep = F.max_pool2d((~_interior(out_mask)).float()[None, None], 5, 1, 2)[0, 0] == 0  # 2 px further in
        cls, _ = _decode(out_image)
        assert (cls[keep & (out_mask != 255)] == out_mask[keep & (out_mask != 255)]).float().mean() > 0.99


def test_crop_pads_image_with_mean_and_mask_with_ignore():
    transform = train_transforms(40, scale_range=None, rotation=0, blur_p=0, flip_p=0)
    image, mask = _blocks(size=24, block=8)
    torch.manual_seed(0)
    out_image, out_mask = transform(image, mask)
    padded = out_mask == 255
    assert 0 < padded.sum() < 40 * 40
    assert out_image[:, padded].abs().max() < 1e-5  # the mean colour, 0 after normalisation
    assert (out_image[:, ~padded].abs().amax(0) > 0.5).all()  # picture pixels are far from the mean


def test_rotation_fills_image_with_mean_and_mask_with_ignore():
    transform = train_transforms(None, scale_range=None, rotation=10, rotation_p=1.0, blur_p=0, flip_p=0)
    filled = 0
    for seed in range(8):
        torch.manual_seed(seed)
        image, mask = _blocks(size=64, block=16, seed=seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 64, 64)
        ignore_inside = (out_mask == 255) & _interior(out_mask)
        filled += int(ignore_inside.sum())
        assert out_image[:, ignore_inside].abs().max() < 1e-4 if ignore_inside.any() else True
    assert filled > 0


def test_random_scale_range_and_base_size():
    image, mask = _blocks(size=64, block=16)
    torch.manual_seed(0)
    sizes = [RandomScale((0.5, 2.0))(image, mask)[1].shape for _ in range(40)]
    assert all(32 <= h <= 128 and h == w for h, w in sizes) and len(set(sizes)) > 10
    wide = tv_tensors.Image(torch.zeros(3, 40, 80, dtype=torch.uint8))
    out = RandomScale((1.0, 1.0), base_size=(200, 100))(wide)
    assert out.shape[-2:] == (100, 200)  # fitted into (long 200, short 100), then scaled by 1
    scaled_image, scaled_mask = RandomScale((2.0, 2.0))(image, mask)
    assert (scaled_mask == mask.repeat_interleave(2, 0).repeat_interleave(2, 1)).all()  # nearest, exact
    with pytest.raises(ValueError, match="0 < low <= high"):
        RandomScale((2.0, 1.0))


def test_every_step_can_be_disabled():
    image, mask = _blocks()
    plain = train_transforms(None, scale_range=None, rotation=0, blur_p=0, flip_p=0)(image, mask)
    reference = eval_transforms()(image, mask)
    assert torch.equal(plain[0], reference[0]) and torch.equal(plain[1], reference[1])
    with pytest.raises(ValueError, match="flip_p must be a probability"):
        train_transforms(32, flip_p=1.5)


def test_blur_changes_image_only():
    image, mask = _blocks()
    out_image, out_mask = train_transforms(None, scale_range=None, rotation=0, blur_p=1.0, flip_p=0)(image, mask)
    reference, _ = eval_transforms()(image, mask)
    assert torch.equal(out_mask, mask.as_subclass(torch.Tensor)) and not torch.allclose(out_image, reference)


def test_eval_transform_is_deterministic_and_exact():
    image, mask = _blocks(size=30, block=10)
    mask[0, 0] = 255
    transform = eval_transforms()
    first, second = transform(image, mask), transform(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    expected = (image.float() / 255 - MEAN) / STD
    assert torch.allclose(first[0], expected, atol=1e-6) and first[0].shape == (3, 30, 30)
    assert first[1].dtype == torch.int64 and first[1][0, 0] == 255
    raw_image, raw_mask = eval_transforms(normalize=False)(image, mask)
    assert raw_image.dtype == torch.uint8 and torch.equal(raw_image, image.as_subclass(torch.Tensor))


def test_train_batches_through_a_dataloader():
    dataset = SyntheticScenes(4, size=(40, 56), seed=3, transforms=train_transforms(32))
    images, masks = next(iter(DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= set(range(len(SYNTHETIC_CLASSES))) | {255}


# --- synthetic scenes --------------------------------------------------------------------------


def test_synthetic_scenes_are_deterministic_and_have_every_class():
    first, second = SyntheticScenes(6, size=(64, 80), seed=5), SyntheticScenes(6, size=(64, 80), seed=5)
    image, mask = first[2]
    assert (
        image.dtype == torch.uint8
        and image.shape == (3, 64, 80)
        and mask.dtype == torch.int64
        and mask.shape == (64, 80)
    )
    assert first.num_classes == 6 and first.classes == SYNTHETIC_CLASSES and first.ignore_index == 255
    for i in range(6):
        assert torch.equal(first[i][0], second[i][0]) and torch.equal(first[i][1], second[i][1])
    assert not torch.equal(SyntheticScenes(6, size=(64, 80), seed=6)[2][0], image)
    assert not torch.equal(first[3][0], image)
    present = torch.cat([first[i][1].flatten() for i in range(6)]).unique().tolist()
    assert present == list(range(6))
    assert all(len(first[i][1].unique()) >= 5 for i in range(6))
    border = SyntheticScenes(2, size=(64, 64), seed=5, border_ignore=True)[0][1]
    assert (border == 255).any() and ((border == 255).float().mean() < 0.2)


def test_colour_alone_does_not_solve_synthetic_scenes():
    """A per-pixel colour lookup (the best colour-only rule, fitted on held-in scenes) stays well short."""
    scenes = SyntheticScenes(40, size=(64, 64), seed=0)
    arrays = [scenes.generate(i) for i in range(40)]
    rgb = np.stack([a[0] for a in arrays]).reshape(-1, 3).astype(np.int64) // 32
    labels = np.stack([a[1] for a in arrays]).ravel().astype(np.int64)
    code = rgb[:, 0] * 64 + rgb[:, 1] * 8 + rgb[:, 2]
    half = len(code) // 2
    table = np.zeros((512, 6))
    np.add.at(table, (code[:half], labels[:half]), 1)
    prediction, truth = table.argmax(1)[code[half:]], labels[half:]
    ious = [
        ((prediction == c) & (truth == c)).sum() / max(((prediction == c) | (truth == c)).sum(), 1) for c in range(6)
    ]
    assert np.mean(ious) < 0.6, ious


def test_write_synthetic_dataset_round_trips_through_folder_dataset(tmp_path):
    root = write_synthetic_dataset(tmp_path / "scenes", 10, size=(32, 40), seed=1, splits={"train": 0.8, "val": 0.2})
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert len(train) == 8 and len(val) == 2 and train.classes == SYNTHETIC_CLASSES
    assert train.palette == SyntheticScenes(1).palette
    scenes = SyntheticScenes(10, size=(32, 40), seed=1)
    for dataset, offset in ((train, 0), (val, 8)):
        for i in range(len(dataset)):
            assert torch.equal(dataset[i][0], scenes[offset + i][0]) and torch.equal(
                dataset[i][1], scenes[offset + i][1]
            )
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_synthetic_dataset(root, 4, size=(32, 32))
    write_synthetic_dataset(root, 3, size=(32, 32), overwrite=True)  # no splits: flat layout
    assert len(FolderDataset(root)) == 3 and not (root / "images" / "train").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]  # no staging directories left
    with pytest.raises(ValueError, match="summing to 1"):
        write_synthetic_dataset(tmp_path / "other", 4, splits={"train": 0.5})


def test_plain_inputs_are_wrapped_so_the_mask_follows_the_image():
    from PIL import Image

    image, mask = _blocks()
    transform = train_transforms(48, rotation_p=1.0, blur_p=0.0, flip_p=0.5)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    for inputs in (
        (image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)),
        (pil, Image.fromarray(mask.numpy().astype(np.uint8))),
    ):
        for seed in range(4):
            torch.manual_seed(seed)
            out_image, out_mask = transform(*inputs)
            assert out_mask.dtype == torch.int64 and _agreement(out_image, out_mask) > 0.99
    with pytest.raises(ValueError, match="differs from mask size"):
        transform(image, mask[:10])
