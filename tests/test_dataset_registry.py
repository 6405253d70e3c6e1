"""One record per dataset: a dataset registered in a user's module is seen everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet_lib.cli import build_parser, main
from pspnet_lib.cli.common import add_dataset_args
from pspnet_lib.data import (
    DATASET_ALIASES,
    DATASET_INFO,
    DATASETS,
    DEFAULT_SPLITS,
    PREPARERS,
    ZOO_DATASETS,
    DatasetInfo,
    SegmentationDataset,
    build_dataset,
    dataset_record,
    register_dataset,
    unregister_dataset,
)
from pspnet_lib.data.metadata import get_dataset_info

TOY_INFO = DatasetInfo(
    name="toy-zoo",
    title="Toy",
    classes=("sea", "land"),
    palette=((0, 0, 255), (0, 255, 0)),
    ignore_index=255,
    reduce_zero_label=False,
    homepage="https://example.org/toy",
    label_convention="0 = sea, 1 = land; 255 = ignored.",
)


def prepare_toy(src, dst, *, tile_size: int = 4) -> dict[str, int]:
    """Writes one 4x4 picture and mask per split (the layout ToyDataset reads)."""
    dst, written = Path(dst), 0
    for split in ("fit", "check"):
        for kind, value in (("images", 128), ("masks", 1)):
            folder = dst / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((tile_size, tile_size), value, np.uint8)).save(folder / "a.png")
            written += 1
    return {"written": written, "skipped": 0}


class ToyDataset(SegmentationDataset):
    def __init__(self, root, split, transforms=None):
        root = Path(root)
        files = [(root / "images" / split / "a.png", root / "masks" / split / "a.png")]
        super().__init__(files, list(TOY_INFO.classes), list(TOY_INFO.palette), transforms, TOY_INFO.ignore_index)


@pytest.fixture
def toy():
    registered = register_dataset(
        "toy", splits=("fit", "check"), aliases=("toy-set",), info=TOY_INFO, prepare=prepare_toy
    )(ToyDataset)
    yield registered
    unregister_dataset("toy")


def test_a_registered_dataset_is_in_every_table(toy):
    assert DATASETS["toy"] is ToyDataset and DEFAULT_SPLITS["toy"] == ("fit", "check")
    assert ZOO_DATASETS["toy-zoo"] == "toy" and DATASET_INFO["toy-zoo"] is TOY_INFO
    assert get_dataset_info("toy-zoo") is TOY_INFO and PREPARERS["toy"] is prepare_toy
    assert DATASET_ALIASES["toy-set"] == "toy" and DATASET_ALIASES["toy-zoo"] == "toy"
    assert dataset_record("TOY-SET").key == "toy" and ToyDataset.record.zoo_key == "toy-zoo"
    with pytest.raises(ValueError, match=r"dataset name\(s\) \['toy-set'\] already registered \(by toy\)"):
        register_dataset("toy2", splits=("a", "b"), aliases=("toy-set",))(type("Toy2", (ToyDataset,), {}))
    unregister_dataset("toy")
    assert "toy" not in DATASETS and "toy-zoo" not in ZOO_DATASETS and "toy" not in PREPARERS
    register_dataset("toy", splits=("fit", "check"), info=TOY_INFO, prepare=prepare_toy)(ToyDataset)


def test_a_registered_dataset_is_a_cli_choice_prepared_and_built(toy, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_dataset_args(parser)
    for name in ("toy", "toy-set", "toy-zoo"):  # pspnet train/eval --dataset
        assert parser.parse_args(["--dataset", name]).dataset == "toy"
    assert build_parser().parse_args(["prepare", "toy", "src", "dst"]).dataset == "toy"

    assert main(["prepare", "toy", str(tmp_path / "src"), str(tmp_path / "dst"), "--tile-size", "3"]) == 0
    assert (
        capsys.readouterr().out
        == f"toy: wrote 4 file(s), 0 already there; use --dataset toy --data-root {tmp_path / 'dst'}\n"
    )
    assert main(["prepare", "toy", str(tmp_path / "src"), str(tmp_path / "dst"), "--patch-size", "3"]) == 1

    dataset = build_dataset("toy-zoo", tmp_path / "dst", None)  # the zoo key names it; default split: fit
    image, mask = dataset[0]
    assert image.shape[-2:] == (3, 3) and mask.unique().tolist() == [1] and dataset.classes == ["sea", "land"]


def test_datasets_means_one_thing_the_zoo_metadata_is_dataset_info():
    import pspnet_lib.data.metadata as metadata
    import pspnet_lib.hub as hub

    for module in (metadata, hub):
        with pytest.warns(DeprecationWarning, match="DATASETS is deprecated; use pspnet_lib.*DATASET_INFO"):
            assert module.DATASETS is DATASET_INFO
    assert DATASETS["voc"].record.zoo_key == "voc12aug" and DATASET_INFO["voc12aug"].num_classes == 21
