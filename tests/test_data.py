"""Datasets on tiny fake trees in their real layouts: label conventions and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from pspnet_lib.data import (
    ADE20KDataset,
    CityscapesDataset,
    FolderDataset,
    VOCAugDataset,
    build_dataset,
    cityscapes_labelids_to_trainids,
    create_cityscapes_trainids,
    read_palette_file,
)
from pspnet_lib.data.metadata import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
)
from pspnet_lib.inference.visualize import colorize

H, W = 12, 16


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)  # .jpg is lossy, so tests compare PNG pixels only
    return array


def _mask(path: Path, values: np.ndarray, paletted: bool = False, palette=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = (
        colorize(values.astype(np.uint8), palette) if paletted else Image.fromarray(values.astype(np.uint8), mode="L")
    )
    picture.save(path)


def _labels(seed: int, high: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size).astype(np.uint8)


def _check_contract(dataset, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = dataset[index]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape[0] == 3
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == image.shape[1:]
    assert dataset.ignore_index == 255 and dataset.num_classes == len(dataset.classes) == len(dataset.palette)
    assert len(dataset.files) == len(dataset)
    return image, mask


def test_metadata_lists():
    assert len(VOC_CLASSES) == 21 and VOC_PALETTE[15] == (192, 128, 128)  # person
    assert len(ADE20K_CLASSES) == len(ADE20K_PALETTE) == 150 and ADE20K_CLASSES[:3] == ["wall", "building", "sky"]
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_PALETTE) == 19 and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert sorted(CITYSCAPES_LABELID_TO_TRAINID.values()) == list(range(19))


# --- Pascal VOC + SBD -------------------------------------------------------------------------


def _voc_tree(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    names = ["2007_000032", "2007_000039", "2008_000002"]
    for i, name in enumerate(names):
        _image(voc / "JPEGImages" / f"{name}.jpg", i)
        labels = _labels(i, 21)
        labels[0, :] = 255  # object borders
        _mask(voc / "SegmentationClassAug" / f"{name}.png", labels)
        _mask(voc / "SegmentationClass" / f"{name}.png", labels, paletted=True, palette=VOC_PALETTE)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("\n".join(names[:2]) + "\n")
    (lists / "val.txt").write_text(names[2] + "\n")
    return voc


def test_voc_reads_splits_and_paletted_masks(tmp_path):
    voc = _voc_tree(tmp_path)
    train = VOCAugDataset(tmp_path, "train_aug")  # found below VOCdevkit/VOC2012
    assert len(train) == 2 and train.root == voc and train.classes == VOC_CLASSES
    assert train.files[0][1].parent.name == "SegmentationClassAug"
    _, mask = _check_contract(train)
    expected = _labels(0, 21)
    expected[0, :] = 255
    assert (mask.numpy() == expected).all()

    val = VOCAugDataset(voc, "val")  # paletted SegmentationClass, read as indices
    assert val.files[0][1].parent.name == "SegmentationClass"
    _, mask = _check_contract(val)
    expected = _labels(2, 21)
    expected[0, :] = 255
    assert (mask.numpy() == expected).all()


def test_voc_mmseg_aug_list_and_pair_lines(tmp_path):
    voc = _voc_tree(tmp_path)
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train_aug.txt").unlink()
    (lists / "aug.txt").write_text("2007_000039\n")
    assert [p.stem for p, _ in VOCAugDataset(voc, "train_aug").files] == ["2007_000039"]
    (lists / "pairs.txt").write_text("/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n")
    assert VOCAugDataset(voc, "pairs").files == [
        (voc / "JPEGImages/2008_000002.jpg", voc / "SegmentationClassAug/2008_000002.png")
    ]


def test_voc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected JPEGImages/, ImageSets/Segmentation/"):
        VOCAugDataset(tmp_path, "val")
    voc = _voc_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"available splits: train_aug, val"):
        VOCAugDataset(voc, "trainval")
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 file.*2007_000039.jpg"):
        VOCAugDataset(voc, "train_aug")


# --- ADE20K ------------------------------------------------------------------------------------


def _ade_tree(root: Path) -> Path:
    ade = root / "ADEChallengeData2016"
    for split, count in (("training", 2), ("validation", 1)):
        for i in range(count):
            name = f"ADE_{split[:5]}_{i:08d}"
            _image(ade / "images" / split / f"{name}.jpg", i)
            raw = _labels(i, 151)
            raw[0, 0], raw[0, 1], raw[0, 2] = 0, 1, 150
            _mask(ade / "annotations" / split / f"{name}.png", raw)
    return ade


def test_ade20k_reduces_zero_label(tmp_path):
    ade = _ade_tree(tmp_path)
    train = ADE20KDataset(tmp_path, "train")  # alias of "training", found below the parent
    assert train.split == "training" and len(train) == 2 and train.num_classes == 150
    _, mask = _check_contract(train)
    raw = _labels(0, 151)
    raw[0, 0], raw[0, 1], raw[0, 2] = 0, 1, 150
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert (mask.numpy() == expected).all()
    assert mask[0, 0] == 255 and mask[0, 1] == 0 and mask[0, 2] == 149
    assert len(ADE20KDataset(ade, "validation")) == 1


def test_ade20k_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotations/\{training,validation\}"):
        ADE20KDataset(tmp_path)
    ade = _ade_tree(tmp_path)
    with pytest.raises(ValueError, match="unknown ADE20K split 'test'"):
        ADE20KDataset(ade, "test")
    next((ade / "annotations" / "training").glob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="1 annotation"):
        ADE20KDataset(ade, "training")
    raw = np.full((H, W), 151, dtype=np.uint8)
    _mask(ade / "annotations" / "validation" / "ADE_valid_00000000.png", raw)
    with pytest.raises(ValueError, match=r"value\(s\) 151 outside the 150 classes"):
        ADE20KDataset(ade, "validation")[0]


# --- Cityscapes --------------------------------------------------------------------------------

LABEL_IDS = np.array([[0, 7, 8, 11], [24, 26, 33, 9], [1, 19, 20, 23]], dtype=np.uint8)
TRAIN_IDS = np.array([[255, 0, 1, 2], [11, 13, 18, 255], [255, 6, 7, 10]], dtype=np.uint8)


def _cityscapes_tree(root: Path, trainids: bool = True) -> Path:
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            prefix = f"{city}_000000_000019"
            _image(root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png", size=LABEL_IDS.shape)
            gt = root / "gtFine" / split / city
            _mask(gt / f"{prefix}_gtFine_labelIds.png", LABEL_IDS)
            if trainids:
                _mask(gt / f"{prefix}_gtFine_labelTrainIds.png", TRAIN_IDS)
    return root


def test_cityscapes_trainids(tmp_path):
    _cityscapes_tree(tmp_path)
    train = CityscapesDataset(tmp_path, "train")
    assert len(train) == 2 and train.classes == CITYSCAPES_CLASSES
    assert train.files[0][1].name == "aachen_000000_000019_gtFine_labelTrainIds.png"
    _, mask = _check_contract(train)
    assert (mask.numpy() == TRAIN_IDS).all()
    _, mask = CityscapesDataset(tmp_path, "val", labels="labelIds")[0]  # mapped on the fly
    assert (mask.numpy() == TRAIN_IDS).all()


def test_cityscapes_mapping_matches_official_table():
    assert (cityscapes_labelids_to_trainids(LABEL_IDS) == TRAIN_IDS).all()
    as_tensor = cityscapes_labelids_to_trainids(torch.from_numpy(LABEL_IDS).long())
    assert as_tensor.dtype == torch.int64 and (as_tensor.numpy() == TRAIN_IDS).all()
    every = cityscapes_labelids_to_trainids(np.arange(34, dtype=np.uint8))
    assert sorted(set(every.tolist()) - {255}) == list(range(19)) and (every != 255).sum() == 19


def test_cityscapes_only_labelids_explains_how_to_make_trainids(tmp_path):
    _cityscapes_tree(tmp_path, trainids=False)
    with pytest.raises(
        FileNotFoundError,
        match="only the \\*_gtFine_labelIds.png files exist.*csCreateTrainIdLabelImgs.*create_cityscapes_trainids",
    ):
        CityscapesDataset(tmp_path, "train")
    assert create_cityscapes_trainids(tmp_path, ("train", "val")) == 3
    assert create_cityscapes_trainids(tmp_path, ("train",)) == 0  # existing files kept
    assert not list(tmp_path.rglob(".*.png"))  # no temporary files left behind
    _, mask = CityscapesDataset(tmp_path, "train")[1]
    assert (mask.numpy() == TRAIN_IDS).all()


def test_cityscapes_labelids_stored_as_trainids_is_reported(tmp_path):
    _cityscapes_tree(tmp_path)
    wrong = tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelTrainIds.png"
    _mask(wrong, LABEL_IDS)  # someone copied labelIds under the trainIds name
    dataset = CityscapesDataset(tmp_path, "val")
    with pytest.raises(
        ValueError,
        match=r"frankfurt_000000_000019_gtFine_labelTrainIds.png holds value\(s\) 19, 20, 23, 24, 26, 33.*holds labelIds.*csCreateTrainIdLabelImgs",
    ):
        dataset[0]


def test_cityscapes_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected leftImg8bit/.*gtFine"):
        CityscapesDataset(tmp_path / "nowhere")


# --- Folder dataset ----------------------------------------------------------------------------


def _folder(
    root: Path, stems=("a", "b", "c"), classes=("bg", "cat", "dog"), sub: str = "", write_classes: bool = True
) -> Path:
    for i, stem in enumerate(stems):
        _image(root / "images" / sub / f"{stem}.png", i)
        _mask(root / "masks" / sub / f"{stem}.png", _labels(i, len(classes)), paletted=i % 2 == 1)
    if write_classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_folder_flat_with_classes_file(tmp_path):
    _folder(tmp_path)
    (tmp_path / "images" / "c.png").rename(tmp_path / "images" / "c.jpeg")  # any image extension pairs by stem
    dataset = FolderDataset(tmp_path)
    assert dataset.classes == ["bg", "cat", "dog"] and len(dataset) == 3
    assert [p.name for p, _ in dataset.files] == ["a.png", "b.png", "c.jpeg"]
    image, mask = _check_contract(dataset)
    assert (image.permute(1, 2, 0).numpy() == _image(tmp_path / "x" / "a.png", 0)).all()
    assert (mask.numpy() == _labels(0, 3)).all()
    _, mask = dataset[1]  # paletted mask read as indices
    assert (mask.numpy() == _labels(1, 3)).all()
    assert (
        dataset.verify()["class_pixels"]
        == np.bincount(np.concatenate([_labels(i, 3).ravel() for i in range(3)]), minlength=3).tolist()
    )
    assert len(build_dataset("folder", tmp_path, None)) == 3


def test_folder_splits_from_files_and_subfolders(tmp_path):
    _folder(tmp_path / "files", stems=("a", "b", "c", "d"))
    (tmp_path / "files" / "splits").mkdir()
    (tmp_path / "files" / "splits" / "train.txt").write_text("a\nc.jpg\nd\n")
    (tmp_path / "files" / "val.txt").write_text("b\n")
    assert [p.stem for p, _ in FolderDataset(tmp_path / "files", "train").files] == ["a", "c", "d"]
    assert [p.stem for p, _ in FolderDataset(tmp_path / "files", "val").files] == ["b"]

    _folder(tmp_path / "sub", stems=("a", "b"), sub="train")
    _folder(tmp_path / "sub", stems=("c",), sub="val", write_classes=False)
    assert len(FolderDataset(tmp_path / "sub", "train")) == 2 and len(FolderDataset(tmp_path / "sub", "val")) == 1
    with pytest.raises(FileNotFoundError, match="sub-folders train, val: pass split"):
        FolderDataset(tmp_path / "sub")


def test_folder_val_fraction_holdout_is_disjoint_and_fixed(tmp_path):
    _folder(tmp_path, stems=tuple("abcdefghij"))
    with pytest.raises(FileNotFoundError, match="val_fraction"):
        FolderDataset(tmp_path, "train")
    train = FolderDataset(tmp_path, "train", val_fraction=0.2)
    val = FolderDataset(tmp_path, "val", val_fraction=0.2)
    assert len(train) == 8 and len(val) == 2 and not set(train.files) & set(val.files)
    assert FolderDataset(tmp_path, "val", val_fraction=0.2).files == val.files


def test_folder_classes_argument_palette_and_label_map(tmp_path, caplog):
    _folder(tmp_path, write_classes=False)
    with pytest.raises(FileNotFoundError, match="write .*classes.txt .*or pass classes="):
        FolderDataset(tmp_path)
    names_file = tmp_path / "names.txt"
    names_file.write_text("x\ny\nz\n")
    assert FolderDataset(tmp_path, classes=names_file).classes == ["x", "y", "z"]
    dataset = FolderDataset(tmp_path, classes=["x", "y", "z"], label_map={2: 255})
    _, mask = dataset[0]
    assert (mask.numpy() == np.where(_labels(0, 3) == 2, 255, _labels(0, 3))).all()
    with caplog.at_level("WARNING", logger="pspnet_lib.data.datasets"):
        stats = dataset.verify()
    assert stats["class_pixels"][2] == 0 and stats["ignored_pixels"] > 0 and "no pixel of class(es) z" in caplog.text
    (tmp_path / "palette.txt").write_text("0 0 0\n255,0,0\n0 255 0\n")
    assert FolderDataset(tmp_path, classes=["x", "y", "z"]).palette == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    assert read_palette_file(tmp_path / "palette.txt")[1] == (255, 0, 0)


def test_folder_colour_masks_decoded_with_palette(tmp_path):
    _folder(tmp_path, stems=("a",))
    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    labels = _labels(0, 3)
    Image.fromarray(np.array(palette, dtype=np.uint8)[labels]).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="colour \\(RGB\\) image.*palette.txt"):
        FolderDataset(tmp_path)[0]
    _, mask = FolderDataset(tmp_path, palette=palette)[0]
    assert (mask.numpy() == labels).all()
    with pytest.raises(ValueError, match=r"colour\(s\) \(0, 0, 255\) that are not in the palette"):
        FolderDataset(tmp_path, classes=["bg", "cat"], palette=palette[:2])[0]


def test_folder_error_messages_name_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected images/ .* and masks/ .*does not exist"):
        FolderDataset(tmp_path / "missing")
    _folder(tmp_path, stems=("a", "b"))
    _image(tmp_path / "images" / "orphan.png")
    _mask(tmp_path / "masks" / "lonely.png", _labels(0, 3))
    with pytest.raises(
        FileNotFoundError, match=r"1 image\(s\) without a mask .*orphan.png.*1 mask\(s\) without an image .*lonely.png"
    ):
        FolderDataset(tmp_path)
    (tmp_path / "images" / "orphan.png").unlink()
    (tmp_path / "masks" / "lonely.png").unlink()

    _mask(tmp_path / "masks" / "b.png", np.full((H, W), 7, np.uint8))
    with pytest.raises(
        ValueError, match=r"b.png holds value\(s\) 7 outside the 3 classes.*must be 0..2 or 255.*--label-map 7:<class>"
    ):
        FolderDataset(tmp_path)[1]
    with pytest.raises(ValueError, match=r"^mask .*b.png holds value\(s\) 7[^\n]*$"):  # one problem: one line
        FolderDataset(tmp_path).verify()
    _mask(tmp_path / "masks" / "a.png", np.full((H, W), 8, np.uint8))
    with pytest.raises(ValueError, match=r"(?s)2 problem\(s\).*a.png holds value\(s\) 8.*b.png holds value\(s\) 7"):
        FolderDataset(tmp_path).verify()
    _mask(tmp_path / "masks" / "a.png", _labels(0, 3))

    _mask(tmp_path / "masks" / "b.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"image .*b.png is 16x12 .* mask .*b.png is 16x13"):
        FolderDataset(tmp_path)[1]

    (tmp_path / "masks" / "b.png").unlink()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "masks" / "b.jpg")
    with pytest.raises(ValueError, match="lossless.*b.jpg"):
        FolderDataset(tmp_path)

    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        FolderDataset(tmp_path, "test")


def test_build_dataset_names_and_transforms(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'coco'; expected one of voc, ade20k, cityscapes, pascal-context, .*, isaid, folder",
    ):
        build_dataset("coco", tmp_path, "train")
    _cityscapes_tree(tmp_path)
    dataset = build_dataset("Cityscapes", tmp_path, "val", transforms=lambda image, mask: (image.float(), mask + 1))
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and (mask.numpy() == TRAIN_IDS.astype(np.int64) + 1).all()
    assert isinstance(build_dataset("cityscapes", tmp_path, None), CityscapesDataset)  # default train split


def test_visualize_imports_before_data():
    # inference.visualize and the datasets both colour masks through core.palette: no cycle at import.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import pspnet_lib.inference.visualize"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_create_cityscapes_trainids_refuses_colour_and_broken_files(tmp_path):
    _cityscapes_tree(tmp_path, trainids=False)
    colour = sorted((tmp_path / "gtFine/train").glob("*/*_gtFine_labelIds.png"))[0]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(colour)  # a colour rendering under the labelIds name
    with pytest.raises(ValueError, match=rf"{colour.name}: expected a single-channel labelIds PNG.*got mode 'RGB'"):
        create_cityscapes_trainids(tmp_path, ("train",))
    colour.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=rf"{colour.name}: not a readable PNG"):
        create_cityscapes_trainids(tmp_path, ("train",))
    assert not list(tmp_path.rglob(".*.png")) and not list(tmp_path.rglob(f"{colour.name[:-14]}*TrainIds.png"))
