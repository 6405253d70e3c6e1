"""What users meet walking through the README and docs: file permissions, CLI argument forms,
clear one-line errors for realistic mistakes (bad masks, wrong paths, batch size 1)."""

import logging
import os
import stat
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib._files import atomic_output, atomic_write_bytes
from pspnet_lib.cli import main

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@posix_only
def test_atomic_writes_get_ordinary_permissions(tmp_path):
    # mkstemp makes 0600 files; outputs (masks, models, exports) must be readable like any file.
    old = os.umask(0o022)
    try:
        target = tmp_path / "out" / "mask.png"
        atomic_write_bytes(target, b"data")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        os.umask(0o027)
        other = tmp_path / "other.bin"
        atomic_write_bytes(other, b"x")
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    # Replacing a file keeps that file's permissions.
    os.chmod(target, 0o600)
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600


@posix_only
def test_synthetic_dataset_folder_is_not_private(tmp_path):
    from pspnet_lib.data import write_synthetic_dataset

    old = os.umask(0o022)
    try:
        root = write_synthetic_dataset(tmp_path / "scenes", 2, size=(16, 16), seed=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def _folder(root, n=4, classes=("a", "b", "c"), size=(24, 32), seed=0):
    """A small folder dataset: random pictures, masks with values 0..len(classes)-1."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        Image.fromarray(rng.integers(0, len(classes), size, dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    return root


TINY = [
    "--backbone",
    "resnet18",
    "--crop-size",
    "16",
    "--batch-size",
    "2",
    "--iters",
    "1",
    "--no-progress",
    "--no-val",
    "--lr",
    "0.001",
]


def test_bad_mask_found_in_a_dataloader_worker_is_one_line(tmp_path, caplog):
    from pspnet_lib import build_pspnet
    from pspnet_lib.data import FolderDataset
    from pspnet_lib.engine import TrainConfig, Trainer

    root = _folder(tmp_path / "data")
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "0.png")
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "1.png")
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "2.png")
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "3.png")
    dataset = FolderDataset(root)
    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4)
    config = TrainConfig(iters=1, batch_size=2, num_workers=1, out_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(ValueError) as info:
        Trainer(model, dataset, None, config).fit()
    assert "DataLoader worker" in str(info.value)  # what torch makes of it: a traceback as message
    from pspnet_lib.cli import user_message

    shown = user_message(info.value)
    assert "\n" not in shown and shown.startswith("mask ") and "value(s) 7" in shown and "0..2 or 255" in shown


def test_batch_size_one_is_refused_before_training_with_cli_advice(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--val-fraction",
        "0.25",
        "--out",
        str(out),
        "--num-workers",
        "0",
        *TINY,
    ]
    args[args.index("--batch-size") + 1] = "1"
    caplog.set_level(logging.ERROR)
    assert main(args) == 1
    assert "--batch-size 2" in caplog.text and "--freeze-bn" in caplog.text
    assert not (out / "checkpoints").exists()
    # With frozen statistics batch size 1 trains.
    caplog.clear()
    assert main(args + ["--freeze-bn", "--out", str(tmp_path / "run2")]) == 0


def test_training_reads_16_bit_pictures_like_predict(tmp_path):
    from pspnet_lib.core.images import to_rgb_tensor
    from pspnet_lib.data import FolderDataset

    root = _folder(tmp_path / "data", n=2)
    ramp = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80  # 0..61,360: 16-bit grayscale
    (root / "images" / "0.jpg").unlink()
    Image.fromarray(ramp).save(root / "images" / "0.png")
    assert Image.open(root / "images" / "0.png").mode.startswith("I")
    image, _ = FolderDataset(root)[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.uint8
    assert len(torch.unique(image[0])) > 200  # a ramp, not clipped to white
    assert torch.equal(image, to_rgb_tensor(root / "images" / "0.png"))
    # One fixed 16-bit -> 8-bit scale, not each picture's own maximum: a darker picture stays darker.
    assert int(image[0, -1, -1]) == round(int(ramp[-1, -1]) / 257)


def test_train_checks_masks_before_starting(tmp_path, caplog):
    # A bad mask among many is found before the run starts, not when a worker meets it.
    root = _folder(tmp_path / "data", n=6)
    Image.fromarray(np.full((24, 32), 9, np.uint8)).save(root / "masks" / "4.png")
    out = tmp_path / "run"
    caplog.set_level(logging.ERROR)
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--no-val", "--out", str(out), *TINY]) == 1
    assert "masks/4.png holds value(s) 9" in caplog.text and "\n" not in caplog.text.strip()
    assert not out.exists()


def test_binary_masks_saved_as_0_255(tmp_path, caplog):
    """The most common fine-tuning mistake: 255 means 'ignore', so the object class is never trained."""
    from pspnet_lib.data import FolderDataset

    root = _folder(tmp_path / "data", n=3, classes=("background", "object"))
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray((rng.integers(0, 2, (24, 32)) * 255).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    caplog.set_level(logging.WARNING)
    FolderDataset(root).verify(max_images=2)
    assert "no pixel of class(es) object in 2 of 3 samples" in caplog.text
    assert "label_map={255: 1}" in caplog.text and "--label-map 255:1" in caplog.text
    assert FolderDataset(root, label_map={255: 1}).verify()["ignored_pixels"] == 0
    caplog.clear()
    FolderDataset(root).verify(warn_absent=False)  # what pspnet train does for voc/ade20k/cityscapes
    assert "no pixel" not in caplog.text


def test_train_on_a_flat_folder_with_no_val_mask_suffix_and_label_map(tmp_path, caplog):
    root = _folder(tmp_path / "data", n=3, classes=("background", "object"))
    for i in range(3):  # masks named <stem>_mask.png, the object stored as 255
        mask = np.array(Image.open(root / "masks" / f"{i}.png")) * 255
        (root / "masks" / f"{i}.png").unlink()
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i}_mask.png")
    caplog.set_level(logging.ERROR)
    base = ["train", "--dataset", "folder", "--data-root", str(root), "--no-val", "--num-workers", "0", *TINY]
    assert main(base + ["--out", str(tmp_path / "r0")]) == 1
    assert "--mask-suffix _mask" in caplog.text  # the error says how these files pair up
    caplog.clear()
    caplog.set_level(logging.WARNING)
    out = tmp_path / "run"
    assert main(base + ["--out", str(out), "--mask-suffix", "_mask", "--label-map", "255:1"]) == 0
    assert "no pixel of class" not in caplog.text
    assert (out / "model" / "model.safetensors").is_file()
    # Folder-only flags on another dataset are an error, not silently ignored.
    assert main(["train", "--dataset", "voc", "--data-root", str(root), "--label-map", "255:1"]) == 1
    assert "--label-map applies to --dataset folder only" in caplog.text


def test_convert_takes_out_like_the_other_commands(tmp_path, caplog):
    from pspnet_lib import build_pspnet, load_pretrained

    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4)
    model.save_pretrained(tmp_path / "src")
    caplog.set_level(logging.ERROR)
    # `--out` used to be taken as an abbreviation of --output-stride ("invalid int value").
    assert main(["convert", str(tmp_path / "src"), "--out", str(tmp_path / "dst")]) == 0
    assert load_pretrained(tmp_path / "dst").config == model.config
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 1
    assert "two output folders" in caplog.text
    assert main(["convert", str(tmp_path / "src")]) == 1
    assert "no output folder" in caplog.text
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "c"), "--classes", str(tmp_path / "none.txt")]) == 1
    assert "classes file" in caplog.text and "does not exist" in caplog.text


def test_predict_takes_sizes_and_scales_with_commas_like_eval(tmp_path):
    from pspnet_lib.cli import build_parser
    from pspnet_lib.cli.predict import _flat, _pair

    parse = build_parser().parse_args
    spaced = parse(["predict", "x.jpg", "--weights", "w", "--out", "o", "--crop", "32", "48", "--scales", "0.5", "1.0"])
    commas = parse(["predict", "x.jpg", "--weights", "w", "--out", "o", "--crop", "32,48", "--scales", "0.5,1.0"])
    for args in (spaced, commas):
        assert _pair(_flat(args.crop), "crop") == (32, 48) and _flat(args.scales) == [0.5, 1.0]
    assert _flat(parse(["predict", "x.jpg", "--weights", "w", "--out", "o"]).scales) == [1.0]
    with pytest.raises(SystemExit):
        parse(["predict", "x.jpg", "--weights", "w", "--out", "o", "--size", "5l2"])


def test_weights_that_are_not_weights_say_what_to_pass(tmp_path):
    from pspnet_lib import build_pspnet, load_pretrained

    run = tmp_path / "run"
    build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4).save_pretrained(run / "model")
    (run / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"run directory: use .*run/model .* or .*checkpoints/best.pt"):
        load_pretrained(run)  # the run directory instead of its model/
    with pytest.raises(ValueError, match=r"config.json is a JSON file, not weights; pass the folder .*run/model"):
        load_pretrained(run / "model" / "config.json")
    with pytest.raises(ValueError, match=r"there is no file or folder .*run/model/nope.pt \(.*run/model exists"):
        load_pretrained(str(run / "model" / "nope.pt"))
    with pytest.raises(ValueError, match=r"write 'hf-hub:someone/pspnet'"):
        load_pretrained("someone/pspnet")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.pth .*It is not a PyTorch checkpoint") as info:
        load_pretrained(tmp_path / "notes.pth")
    assert "delete" not in str(info.value)  # never advise deleting a file that may be the user's own


def test_hub_unreachable_is_not_reported_as_downloads_disabled(tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    from pspnet_lib.hub import hf

    def unreachable(**kwargs):
        assert kwargs["local_files_only"] is False
        raise LocalEntryNotFoundError("connection error")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "hf_hub_download", unreachable)
    with pytest.raises(OSError) as info:
        hf.hf_file("someone/pspnet", "config.json", cache_dir=tmp_path)
    message = str(info.value)
    assert "could not be reached" in message and "hf download someone/pspnet" in message
    assert "downloads are disabled" not in message


def test_doc_snippets_rebuild_a_model_from_its_config(tmp_path):
    """docs/model.md and docs/hub.md: rebuilding the architecture from config.json."""
    import json

    from pspnet_lib import PSPNet, PSPNetConfig, build_pspnet

    model = build_pspnet(
        "resnet18", num_classes=6, aux=False, output_stride=16, in_channels=4, head_channels=16, ppm_channels=4
    )
    assert PSPNet(PSPNetConfig.from_dict(json.loads(model.config.to_json()))).config == model.config
    model.pretrained_cfg = {"classes": list("abcdef")}
    model.save_pretrained(tmp_path / "my_model")
    saved = json.loads((tmp_path / "my_model" / "config.json").read_text())
    rebuilt = PSPNet(saved["config"], pretrained_cfg=saved["pretrained_cfg"])
    assert rebuilt.config == model.config and rebuilt.pretrained_cfg["classes"] == list("abcdef")
    with pytest.raises(ValueError, match=r"config.json of a save_pretrained folder.*values\['config'\]"):
        PSPNetConfig.from_dict(saved)


def test_load_pretrained_reads_a_training_checkpoint_with_its_architecture_and_classes(tmp_path):
    """pspnet convert / load_pretrained on a checkpoint of a non-default layout must rebuild that layout."""
    from pspnet_lib import load_pretrained
    from pspnet_lib.engine import TrainConfig, Trainer

    from ._engine_helpers import ColourBlocks, tiny_pspnet

    model = tiny_pspnet(preset="semseg", output_stride=16)  # align_corners=True, no contracted dilation
    config = TrainConfig(iters=1, batch_size=2, num_workers=0, out_dir=str(tmp_path / "run"), progress=False)
    Trainer(model, ColourBlocks(4, size=24), None, config).fit()
    loaded = load_pretrained(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert loaded.config == model.config  # the weights alone would give align_corners=False, output stride 8
    assert loaded.pretrained_cfg["classes"] == list(ColourBlocks.classes)
    assert loaded.pretrained_cfg["palette"] == [list(c) for c in ColourBlocks.palette]
    model.eval()
    x = torch.randn(1, 3, 40, 36)
    torch.testing.assert_close(loaded(x), model(x))
    # pspnet convert keeps all of it in the save_pretrained folder.
    assert main(["convert", str(tmp_path / "run" / "checkpoints" / "latest.pt"), str(tmp_path / "converted")]) == 0
    converted = load_pretrained(tmp_path / "converted")
    assert converted.config == model.config and converted.pretrained_cfg["classes"] == list(ColourBlocks.classes)


def test_info_describes_a_saved_model(tmp_path, capsys):
    from pspnet_lib import build_pspnet

    model = build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4)
    model.pretrained_cfg = {"classes": ["road", "car", "tree"], "inference": {"mode": "whole", "resize": [64, 32]}}
    model.save_pretrained(tmp_path / "model")
    assert main(["info", str(tmp_path / "model"), "--classes"]) == 0
    out = capsys.readouterr().out
    assert '"backbone": "resnet18"' in out and '"resize": [64, 32]' in out and "  2 tree" in out


def test_phone_photo_with_exif_rotation_pairs_with_a_mask_drawn_upright(tmp_path):
    from pspnet_lib.data import FolderDataset

    root = _folder(tmp_path / "data", n=2)
    stored = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": viewers show it 24 wide, 32 high
    Image.fromarray(stored).save(root / "images" / "0.jpg", exif=exif, quality=95)
    Image.fromarray(np.zeros((32, 24), np.uint8)).save(root / "masks" / "0.png")  # drawn on the upright photo
    image, mask = FolderDataset(root)[0]
    assert tuple(image.shape) == (3, 32, 24) and tuple(mask.shape) == (32, 24)
    from pspnet_lib.core.images import to_rgb_tensor

    assert torch.equal(image, to_rgb_tensor(root / "images" / "0.jpg"))  # what predict sees
    # A mask matching the stored pixels still pairs with them.
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "0.png")
    assert tuple(FolderDataset(root)[0][0].shape) == (3, 24, 32)


def test_export_warns_when_the_suffix_does_not_match_the_format(tmp_path, caplog):
    from pspnet_lib import build_pspnet

    build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4).save_pretrained(tmp_path / "m")
    caplog.set_level(logging.WARNING)
    assert (
        main(
            [
                "export",
                "--weights",
                str(tmp_path / "m"),
                "--format",
                "torchscript",
                "--out",
                str(tmp_path / "m.onnx"),
                "--height",
                "32",
                "--width",
                "32",
            ]
        )
        == 0
    )
    assert "does not end in .pt" in caplog.text


def test_grey_masks_with_an_alpha_channel_are_read_as_grey(tmp_path):
    from pspnet_lib.data import FolderDataset

    root = _folder(tmp_path / "data", n=1)
    labels = np.random.default_rng(2).integers(0, 3, (24, 32)).astype(np.uint8)
    Image.fromarray(np.stack([labels, np.full_like(labels, 255)], -1), mode="LA").save(root / "masks" / "0.png")
    _, mask = FolderDataset(root)[0]
    assert np.array_equal(mask.numpy(), labels)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_and_export_on_a_missing_gpu_say_use_cpu(tmp_path, caplog):
    from pspnet_lib import build_pspnet

    build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4).save_pretrained(tmp_path / "m")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    caplog.set_level(logging.ERROR)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "a.png"),
                "--weights",
                str(tmp_path / "m"),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cuda",
            ]
        )
        == 1
    )
    assert (
        main(
            [
                "export",
                "--weights",
                str(tmp_path / "m"),
                "--format",
                "torchscript",
                "--out",
                str(tmp_path / "m.pt"),
                "--device",
                "cuda",
            ]
        )
        == 1
    )
    assert caplog.text.count("CUDA is not available; use --device cpu") == 2


def test_an_output_path_blocked_by_a_file_is_one_clear_error(tmp_path, caplog):
    from pspnet_lib import build_pspnet

    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should go")
    with pytest.raises(NotADirectoryError, match=r"cannot create the folder .*results/sub: .*results is a file"):
        atomic_write_bytes(blocker / "sub" / "x.png", b"")
    build_pspnet("resnet18", 3, head_channels=16, aux_channels=8, ppm_channels=4).save_pretrained(tmp_path / "m")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    caplog.set_level(logging.ERROR)
    assert main(["predict", str(tmp_path / "a.png"), "--weights", str(tmp_path / "m"), "--out", str(blocker)]) == 1
    assert "results is a file" in caplog.text and "Errno" not in caplog.text
