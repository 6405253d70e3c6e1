"""8-bit JPEG/PNG pictures decoded by torchvision.io give Pillow's exact pixels; EXIF orientation as before.

Each kind is read twice, by the reader as it is (torchvision.io for the kinds it decodes exactly)
and with ``PSPNET_IMAGE_DECODER=pillow`` (Pillow alone, the reader before torchvision took over),
and the arrays must be equal; for the kinds meant for torchvision the test also checks that Pillow
did not decode the pixels (so the fast path cannot silently be off).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from pspnet_lib.core.decode import exif_orientation, orient_array
from pspnet_lib.core.images import read_image, read_mask, read_pair, to_image_tensor

RNG = np.random.default_rng(7)


def _picture(height: int = 37, width: int = 53) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], -1)
    return (smooth + RNG.integers(-30, 30, smooth.shape)).clip(0, 255).astype(np.uint8)


def _paletted(indices: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices, mode="P")
    image.putpalette(RNG.integers(0, 256, 768).astype(np.uint8).tobytes())
    return image


def _write(kind: str, path) -> None:
    rgb = _picture()
    rgba = np.concatenate([rgb, RNG.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)], -1)
    if kind == "jpeg-420":
        Image.fromarray(rgb).save(path, quality=85, subsampling=2)
    elif kind == "jpeg-444-progressive":
        Image.fromarray(rgb).save(path, quality=95, subsampling=0, progressive=True)
    elif kind == "jpeg-grey":
        Image.fromarray(rgb[..., 0]).save(path, quality=90)
    elif kind == "png-rgb":
        Image.fromarray(rgb).save(path)
    elif kind == "png-rgb-trns":
        Image.fromarray(rgb).save(path, transparency=(10, 20, 30))
    elif kind == "png-rgba":
        Image.fromarray(rgba, "RGBA").save(path)
    elif kind == "png-grey":
        Image.fromarray(rgb[..., 1]).save(path)
    elif kind == "png-grey-alpha":
        Image.fromarray(rgba, "RGBA").convert("LA").save(path)
    elif kind == "png-paletted":
        _paletted(RNG.integers(0, 200, rgb.shape[:2]).astype(np.uint8)).save(path)
    elif kind == "png-paletted-trns":
        _paletted(RNG.integers(0, 200, rgb.shape[:2]).astype(np.uint8)).save(path, transparency=3)
    elif kind == "png-paletted-4bit":
        _paletted(RNG.integers(0, 16, rgb.shape[:2]).astype(np.uint8)).save(path, bits=4)
    elif kind == "png-16bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 250 + 3).save(path)
    elif kind == "tiff":
        Image.fromarray(rgb).save(path)
    else:  # pragma: no cover
        raise AssertionError(kind)


TORCHVISION_KINDS = [
    "jpeg-420",
    "jpeg-444-progressive",
    "jpeg-grey",
    "png-rgb",
    "png-rgb-trns",
    "png-rgba",
    "png-grey",
    "png-grey-alpha",
    "png-paletted",
    "png-paletted-trns",
]
PILLOW_KINDS = ["png-paletted-4bit", "png-16bit", "tiff"]


@pytest.fixture
def pillow_decodes(monkeypatch):
    """Counts Pillow's pixel decodes (ImageFile.load calls that find tiles to decode)."""
    calls = []
    original = ImageFile.ImageFile.load

    def load(self):
        if self.tile:
            calls.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


def _suffix(kind: str) -> str:
    return ".jpg" if kind.startswith("jpeg") else ".tif" if kind == "tiff" else ".png"


@pytest.mark.parametrize("kind", TORCHVISION_KINDS + PILLOW_KINDS)
def test_pictures_read_as_pillow_reads_them(kind, tmp_path, monkeypatch, pillow_decodes):
    path = tmp_path / f"picture{_suffix(kind)}"
    _write(kind, path)
    fast = read_image(path)
    fast_tensor = to_image_tensor(path)  # predict's and calibration's reading
    expected_pillow_decodes = 0 if kind in TORCHVISION_KINDS else 2
    assert len(pillow_decodes) == expected_pillow_decodes, pillow_decodes
    monkeypatch.setenv("PSPNET_IMAGE_DECODER", "pillow")
    slow = read_image(path)
    assert fast.dtype == slow.dtype == np.uint8 and fast.shape == slow.shape == (37, 53, 3)
    assert np.array_equal(fast, slow)
    assert np.array_equal(fast_tensor.permute(1, 2, 0).numpy(), slow)
    with Image.open(path) as image:  # and both are what Pillow's convert("RGB") gives (16-bit: v / 257)
        if kind == "png-16bit":
            expected = np.repeat((np.asarray(image, np.float64) / 257).round().astype(np.uint8)[..., None], 3, -1)
        else:
            expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(slow, expected)


@pytest.mark.parametrize("kind", ["grey", "paletted", "paletted-4bit", "grey-16bit"])
def test_masks_read_as_pillow_reads_them(kind, tmp_path, monkeypatch, pillow_decodes):
    values = RNG.integers(0, 150, (37, 53)).astype(np.uint8)
    path = tmp_path / "mask.png"
    if kind == "grey":
        Image.fromarray(values).save(path)  # 8-bit grey: torchvision.io
    elif kind == "grey-16bit":
        Image.fromarray(values.astype(np.uint16) * 300).save(path)
    else:
        _paletted(values % 16 if kind.endswith("4bit") else values).save(
            path, **({"bits": 4} if "4bit" in kind else {})
        )
    fast = read_mask(path)
    assert len(pillow_decodes) == (0 if kind == "grey" else 1), pillow_decodes
    monkeypatch.setenv("PSPNET_IMAGE_DECODER", "pillow")
    slow = read_mask(path)
    with Image.open(path) as image:
        assert fast.dtype == slow.dtype and np.array_equal(fast, slow) and np.array_equal(slow, np.asarray(image))


def _with_orientation(rgb: np.ndarray, path, orientation: int) -> None:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_turns_pictures_exactly_as_pillow(suffix, tmp_path, pillow_decodes):
    rgb = _picture(12, 20)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}{suffix}"
        _with_orientation(rgb, path, orientation)
        with Image.open(path) as image:
            expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        pillow_decodes.clear()
        got = read_image(path)
        assert not pillow_decodes, (orientation, pillow_decodes)  # the tag was read without decoding
        assert np.array_equal(got, expected), orientation
        assert np.array_equal(
            orient_array(rgb, orientation), np.asarray(ImageOps.exif_transpose(_tagged(rgb, orientation)))
        )
        with Image.open(path) as image:  # the stored pixels on request
            assert np.array_equal(read_image(path, exif_orientation=False), np.asarray(image.convert("RGB")))


def _tagged(rgb: np.ndarray, orientation: int) -> Image.Image:
    image = Image.fromarray(rgb)
    image.getexif()[0x0112] = orientation
    return image


def _move_exif_after_pixels(path) -> None:
    """Rewrite a PNG so that its eXIf chunk follows the pixel data (allowed by the PNG spec)."""
    data = path.read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert exif and rest[-1][4:8] == b"IEND"
    path.write_bytes(data[:8] + b"".join(rest[:-1] + exif + rest[-1:]))
    with Image.open(path) as image:  # still a valid PNG whose orientation Pillow reads after decoding
        image.load()
        assert image.getexif()[0x0112] == 6
        assert zlib.crc32(exif[0][4:-4]) == struct.unpack(">I", exif[0][-4:])[0]


def test_png_with_exif_after_its_pixels_is_still_turned(tmp_path):
    rgb = _picture(12, 20)
    path = tmp_path / "late.png"
    _with_orientation(rgb, path, 6)
    _move_exif_after_pixels(path)
    with Image.open(path) as image:
        assert exif_orientation(image) == 6
    assert np.array_equal(read_image(path), np.rot90(rgb, -1))


def test_masks_stay_as_stored_and_the_quarter_turn_rule_holds(tmp_path):
    rgb = _picture(12, 20)
    picture = tmp_path / "photo.jpg"
    _with_orientation(rgb, picture, 6)  # turned a quarter: 20 x 12 upright
    indices = RNG.integers(0, 150, (12, 20)).astype(np.uint8)
    stored_mask = tmp_path / "stored.png"
    tagged = _paletted(indices)
    tagged.getexif()[0x0112] = 6
    tagged.save(stored_mask, exif=tagged.getexif())
    assert np.array_equal(read_mask(stored_mask), indices)  # a mask's EXIF tag is never applied
    # A mask of the stored size: the picture is used as stored (the mask was drawn on those pixels).
    pair = read_pair(picture, stored_mask)
    with Image.open(picture) as image:
        assert np.array_equal(pair.image, np.asarray(image.convert("RGB")))
    assert pair.unapplied_orientation == 6
    # A mask of the upright size: the picture is turned.
    upright_mask = tmp_path / "upright.png"
    _paletted(np.rot90(indices, -1).copy()).save(upright_mask)
    pair = read_pair(picture, upright_mask)
    assert pair.unapplied_orientation is None and pair.image.shape == (20, 12, 3)
    with Image.open(picture) as image:
        assert np.array_equal(pair.image, np.asarray(ImageOps.exif_transpose(image).convert("RGB")))


def test_damaged_files_are_one_error_naming_them(tmp_path):
    path = tmp_path / "cut.jpg"
    _write("jpeg-420", path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cannot read .*cut\.jpg as an image"):
        read_image(path)
