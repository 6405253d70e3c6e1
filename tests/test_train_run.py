"""``TrainingRun`` (the library behind ``pspnet train``), the flags derived from ``TrainConfig``'s
fields, ``SettingError``'s two spellings, and the shared CLI parsers."""

import argparse
import ast
import dataclasses
import json
from pathlib import Path

import pytest

from pspnet_lib.cli import build_parser, main
from pspnet_lib.data import write_synthetic_dataset
from pspnet_lib.engine import SettingError, TrainConfig, TrainingRun
from pspnet_lib.engine.checkpoint import load_checkpoint
from pspnet_lib.engine.config import setting_specs
from pspnet_lib.engine.run import resolve_settings

from ._engine_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {
    "_note": "a test recipe",
    "model": {"backbone": "resnet18", "stem": "standard", "head_channels": 16, "aux_channels": 8, "ppm_channels": 4},
    "augment": {"crop_size": [24, 24], "scale_range": [0.75, 1.25]},
    "train": {"batch_size": 2, "log_interval": 1, "ckpt_interval": 2, "num_workers": 0, "lr": 0.05},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "scenes"
    write_synthetic_dataset(root, 6, size=(32, 32), seed=0, splits={"train": 0.67, "val": 0.33})
    return root


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(RECIPE))
    return path


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_from_recipe_is_what_the_cli_runs(folder, recipe, tmp_path):
    """The same recipe and settings through the CLI and through TrainingRun.from_recipe give the same
    TrainConfig and, trained, the same weights (same seed, same data, same model)."""
    flags = "--iters 2 --seed 5 --momentum 0.8 --poly-power 1.0 --warmup-ratio 0.2 --eval-crop 16 --eval-stride 8"
    flags += " --eval-mode slide --clip-grad-norm 5 --no-sync-bn --no-progress --amp none --no-val"
    cli_out = tmp_path / "cli"
    argv = ["train", "--recipe", str(recipe), "--dataset", "folder", "--data-root", str(folder), "--out", str(cli_out)]
    assert main([*argv, *flags.split()]) == 0
    written = json.loads((cli_out / "train_config.json").read_text())
    overrides = {
        "iters": 2,
        "seed": 5,
        "momentum": 0.8,
        "poly_power": 1.0,
        "warmup_ratio": 0.2,
        "eval_crop": [16, 16],
        "eval_stride": [8, 8],
        "eval_mode": "slide",
        "clip_grad_norm": 5.0,
        "sync_bn": False,
        "progress": False,
        "amp": "none",
    }
    # The same run directory: building a run reads and checks, it writes nothing.
    same = TrainingRun.from_recipe(recipe, folder, dataset="folder", out_dir=cli_out, overrides=overrides)
    assert same.config.to_dict() == written
    assert same.config.lr == 0.05 and same.config.batch_size == 2  # the recipe's, not TrainConfig's defaults
    assert same.val_dataset is not None and same.train_dataset.classes == same.val_dataset.classes
    assert (
        TrainingRun.from_recipe(
            recipe, folder, dataset="folder", out_dir=cli_out, overrides=overrides, validate=False
        ).val_dataset
        is None
    )

    lib_out = tmp_path / "lib"
    run = TrainingRun.from_recipe(
        recipe, folder, dataset="folder", out_dir=lib_out, overrides=overrides, validate=False
    )
    assert run.out_dir == lib_out and run.settings["augment"]["crop_size"] == [24, 24]
    summary = run.fit()
    assert summary["iteration"] == 2 and load_checkpoint(lib_out / "checkpoints" / "latest.pt")["iteration"] == 2
    cli_weights = (cli_out / "model" / "model.safetensors").read_bytes()
    assert (lib_out / "model" / "model.safetensors").read_bytes() == cli_weights


def test_print_config_is_resolve_settings(recipe, capsys):
    assert main(["train", "--recipe", str(recipe), "--dataset", "folder", "--iters", "7", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == resolve_settings(recipe, dataset="folder", train={"iters": 7})
    assert printed["train"]["out_dir"] == str(Path("runs") / "folder")
    assert resolve_settings(printed) == printed  # resolving again changes nothing
    assert resolve_settings(RECIPE, dataset="folder", train={"amp": "auto", "device": "cpu"})["train"]["amp"] == "bf16"


def test_every_train_config_field_has_a_flag():
    """A new TrainConfig field gets its flag from its metadata; one without (help, group) or without
    a flag must say why (``no_flag=``)."""
    parser = _train_parser()
    options = {flag: action for action in parser._actions for flag in action.option_strings}
    specs = {spec.name: spec for spec in setting_specs()}
    assert list(specs) == [f.name for f in dataclasses.fields(TrainConfig)]
    examples = {"int": "3", "float": "0.5", "str": None, "ints": "16,24", "floats": "0.5,1"}
    for name, spec in specs.items():
        assert spec.help and spec.group, f"TrainConfig.{name} needs help= and group= (engine/config.py)"
        if spec.flag is None:
            assert spec.no_flag and len(spec.no_flag) > 20, f"TrainConfig.{name}: no flag and no reason"
            continue
        assert spec.flag in options and options[spec.flag].dest == name, (name, spec.flag)
        if spec.kind == "bool":
            argv = [spec.flag]
        else:
            value = examples[spec.kind] or (spec.options.get("choices") or ["x"])[-1]
            argv = [spec.flag, value]
        given = vars(parser.parse_args(argv))
        assert given[name] is not None, name
        others = [k for k in specs if k != name and given.get(k) is not None]
        assert not others, (name, others)  # every other setting stays "not given"
    assert specs["ignore_index"].flag == "--ignore-index"  # reaches the folder dataset, the padding, the loss
    assert specs["out_dir"].flag == "--out" and specs["sync_bn"].flag == "--no-sync-bn"
    assert vars(parser.parse_args(["--no-progress"]))["progress"] is False
    assert vars(parser.parse_args(["--amp"]))["amp"] == "auto"


def test_setting_errors_name_python_arguments_or_flags(folder, tmp_path, caplog):
    with pytest.raises(SettingError) as info:
        TrainingRun.from_recipe(RECIPE, folder, dataset="folder", num_classes=3, out_dir=tmp_path / "o")
    message = str(info.value)
    assert message.startswith("num_classes=3 but the folder dataset") and "6 classes" in message
    assert info.value.settings == ["num_classes"] and "\n" not in message
    with pytest.raises(SettingError, match=r"^iters must be a positive integer, got 0$"):
        TrainConfig(iters=0)
    with pytest.raises(SettingError, match="classes applies to dataset='folder' only"):
        TrainingRun.from_recipe(None, folder, dataset="voc", dataset_options={"classes": ["a", "b"]})
    with pytest.raises(SettingError, match=r"out_dir .*scenes is the dataset's directory data_root"):
        TrainingRun.from_recipe(RECIPE, folder, dataset="folder", out_dir=folder)
    # Typos and impossible values are refused up front, in one line, not in a DataLoader worker.
    with pytest.raises(SettingError, match=r"^unknown dataset='foldr'; expected one of voc, .*folder"):
        TrainingRun.from_recipe(RECIPE, folder, dataset="foldr", out_dir=tmp_path / "o")
    for crop in (0, -5, [64, 0], "64"):
        with pytest.raises(SettingError, match=r"^crop_size=.* must be a positive integer"):
            TrainingRun.from_recipe(
                RECIPE, folder, dataset="folder", augment={"crop_size": crop}, out_dir=tmp_path / "o"
            )
    with pytest.raises(SettingError, match=r"unknown augmentation setting\(s\) \['crop'\]; expected some of crop_size"):
        TrainingRun.from_recipe(RECIPE, folder, dataset="folder", augment={"crop": 64}, out_dir=tmp_path / "o")
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) \['val_fractoin'\] for the folder dataset; it takes .*val_fraction"
    ):
        TrainingRun.from_recipe(
            RECIPE, folder, dataset="folder", dataset_options={"val_fractoin": 0.1}, out_dir=tmp_path / "o"
        )
    # The same errors from the command line name its flags.
    base = ["train", "--dataset", "folder", "--data-root", str(folder), "--out", str(tmp_path / "o")]
    assert main([*base, "--iters", "0"]) == 1
    assert "--iters must be a positive integer, got 0" in caplog.text
    assert main([*base, "--eval-mode", "slide", "--iters", "1"]) == 1
    assert "--eval-mode slide needs --eval-crop and --eval-stride" in caplog.text
    assert main(["train", "--dataset", "voc", "--data-root", str(folder), "--classes", "a,b"]) == 1
    assert "--classes applies to --dataset folder only" in caplog.text
    assert main(["train", "--dataset", "folder"]) == 1
    assert "--data-root is required" in caplog.text
    assert not (tmp_path / "o").exists()


def test_cli_modules_import_no_private_names_of_each_other():
    """Shared parsers live in cli/common.py: no sub-command imports another one's private helpers."""
    cli = Path(__file__).resolve().parents[1] / "pspnet_lib" / "cli"
    modules = {p.stem for p in cli.glob("*.py")}
    offenders = []
    for path in sorted(cli.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            inside_cli = (node.level == 1 and module.split(".")[0] in modules) or module.startswith("pspnet_lib.cli")
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            if inside_cli and private:
                offenders.append(f"{path.name}: from {'.' * node.level}{module} import {', '.join(private)}")
    assert not offenders, offenders
    evaluate = ast.parse((cli / "evaluate.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(evaluate) if isinstance(n, ast.ImportFrom) and n.module == "train"]


def test_recipe_sections_are_declared_once_by_the_typed_recipe():
    from pspnet_lib.recipes import RECIPE_SECTIONS, RECIPES, Recipe, check_recipe

    assert RECIPE_SECTIONS == ("dataset", "num_classes", "model", "augment", "train", "gpus")
    assert set(RECIPE_SECTIONS) <= set(Recipe.__annotations__)
    for name, recipe in RECIPES.items():  # every built-in recipe passes the one check
        assert check_recipe(recipe, name) == recipe
    with pytest.raises(ValueError, match=r"my recipe has unknown section\(s\) \['trian'\]; expected \['dataset'"):
        check_recipe({"dataset": "voc", "trian": {}}, "my recipe")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['optim'\]"):
        resolve_settings({"dataset": "voc", "optim": {}})
