"""Parsers and flags shared by the sub-commands: value types, dataset flags, flags derived from
``TrainConfig``'s fields, and the command line's spelling of a library ``SettingError``."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..core.inference_protocol import MAX_SIDE
from ..data import DATASET_ALIASES, DATASETS
from ..engine.config import SettingError, setting_specs
from ..engine.run import check_dataset_options

__all__ = [
    "DATASET_CHOICES",
    "add_dataset_args",
    "add_setting_args",
    "colour",
    "dataset_kwargs",
    "dataset_name",
    "dataset_options",
    "flag_names",
    "float_in",
    "floats",
    "int_in",
    "int_list",
    "ints",
    "label_map",
    "render_setting_error",
    "setting_overrides",
]

#: ``--dataset`` choices: the datasets ``build_dataset`` knows (a live view of the dataset records).
DATASET_CHOICES = DATASETS.keys()


def ints(text: str) -> list[int]:
    """``512`` or ``512,1024`` / ``512x1024`` -> [512, 512] / [512, 1024] (pixel sizes in [1, MAX_SIDE])."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or H,W (e.g. 512 or 512,1024), got {text[:40]!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1 or max(values) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"expected N or H,W with values in [1, {MAX_SIDE}] pixels, got {text[:40]!r}")
    return values


def int_list(text: str) -> list[int]:
    """``3,2,1`` -> [3, 2, 1] (the checks of their meaning are the library's)."""
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def floats(text: str) -> list[float]:
    """``0.5,1,1.5`` -> [0.5, 1.0, 1.5] (finite numbers)."""
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text[:40]!r}")
    return values


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            within = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {within}, got {text[:40]!r}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number between ``low`` and ``high`` (bounds included unless open)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (math.isfinite(value) and above and below):
            within = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {within}, got {text[:40]!r}")
        return value

    parse.__name__ = "number"
    return parse


def device_name(text: str) -> str:
    """argparse type of ``--device``: a device torch can parse (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...)."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def colour(text: str) -> tuple[int, int, int]:
    """``224,224,192`` -> (224, 224, 192)."""
    try:
        values = [int(v) for v in text.replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B with values 0..255 such as 224,224,192, got {text!r}")
    return values[0], values[1], values[2]


def label_map(text: str) -> dict[int, int]:
    """``255:1`` or ``1:0,2:255`` -> {255: 1} / {1: 0, 2: 255}."""
    mapping = {}
    for item in (part for part in text.split(",") if part.strip()):
        try:
            source, target = (int(v) for v in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected SRC:DST pairs of integers such as 255:1, got {text!r}"
            ) from None
        mapping[source] = target
    if not mapping:
        raise argparse.ArgumentTypeError(f"expected SRC:DST pairs of integers such as 255:1, got {text!r}")
    return mapping


def dataset_name(text: str) -> str:
    """A ``--dataset`` value: case-insensitive, zoo aliases (voc12aug) accepted."""
    key = text.strip().lower()
    return DATASET_ALIASES.get(key, key)


def add_dataset_args(parser: argparse.ArgumentParser, *, workers: bool = True) -> argparse._ArgumentGroup:
    """Dataset flags shared by ``train`` and ``eval`` (``workers``: add ``--num-workers`` too;
    ``train`` derives it from ``TrainConfig``). Returns the group, for more flags."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        type=dataset_name,
        choices=tuple(DATASETS),
        help="dataset layout (see docs/datasets.md; the zoo's voc12aug is voc); a recipe sets it",
    )
    group.add_argument("--data-root", metavar="DIR", help="the dataset's directory")
    group.add_argument(
        "--classes",
        metavar="FILE|A,B,..",
        help="folder datasets: class names (a file with one per line, or comma-separated); "
        "default DATA_ROOT/classes.txt",
    )
    group.add_argument(
        "--val-fraction",
        type=float_in(0, 1, open_low=True, open_high=True),
        metavar="F",
        help="folder datasets without split information: hold out this fraction as 'val'",
    )
    group.add_argument(
        "--mask-suffix",
        metavar="SUFFIX",
        help="folder datasets: mask stem = image stem + SUFFIX (e.g. _mask pairs a.jpg with a_mask.png)",
    )
    group.add_argument(
        "--label-map",
        type=label_map,
        metavar="SRC:DST,..",
        help="folder datasets: remap stored mask values, e.g. 255:1 for binary masks saved as 0/255 "
        "(255 otherwise means 'ignore')",
    )
    group.add_argument(
        "--ignore-colour",
        "--ignore-color",
        dest="ignore_colours",
        type=colour,
        action="append",
        metavar="R,G,B",
        help="folder datasets with colour masks: a colour read as ignore (255), e.g. "
        "255,255,255; repeatable (VOC's void colour 224,224,192 is ignored with the VOC palette anyway)",
    )
    if workers:
        group.add_argument("--num-workers", type=int_in(0, 1024), metavar="N", help="DataLoader workers per process")
    return group


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The folder-dataset ``build_dataset`` options given as flags (a class file stays a path)."""
    options: dict[str, Any] = {}
    if args.classes:
        options["classes"] = (
            args.classes if os.path.isfile(args.classes) else [c.strip() for c in args.classes.split(",")]
        )
    if args.val_fraction is not None:
        options["val_fraction"] = args.val_fraction
    for name in ("mask_suffix", "label_map", "ignore_colours"):
        if getattr(args, name, None):
            options[name] = getattr(args, name)
    return options


def dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Extra ``build_dataset`` arguments from the flags; folder-only flags with another ``--dataset``
    are a :class:`SettingError`."""
    options = dataset_options(args)
    check_dataset_options(args.dataset, options)
    return options


_TYPES = {"int": int, "float": float, "str": str, "ints": ints, "floats": floats}
_METAVARS = {"int": "N", "float": "X", "ints": "N|H,W", "floats": "V1,V2,.."}


def add_setting_args(parser: argparse.ArgumentParser, groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One flag per :class:`~pspnet_lib.engine.TrainConfig` field (see ``setting_specs``), in the
    group the field names (``groups`` maps titles to groups; missing ones are added). Every flag
    defaults to None (not given), so that a recipe's value stays unless the flag is given."""
    for spec in setting_specs():
        if spec.flag is None:
            continue
        group = groups.get(spec.group) or groups.setdefault(spec.group, parser.add_argument_group(spec.group))
        options = dict(spec.options)
        text = spec.help
        if spec.kind == "bool":
            # --x turns a setting on; --no-x (for one on by default) turns it off.
            options = {"action": "store_const", "const": options.pop("const", spec.default is not True), **options}
            if spec.default is True:
                text = f"turn off: {text}"
        else:
            options = {"type": _TYPES[spec.kind], **options}
            if "choices" not in options:
                options.setdefault("metavar", _METAVARS.get(spec.kind))
            if spec.default is not None and "default" not in text:
                shown = ",".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
                text = f"{text} (default {shown})"
        group.add_argument(spec.flag, dest=spec.name, default=None, help=text, **options)


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields whose flags were given (the rest keep the recipe's or default values)."""
    return {
        spec.name: getattr(args, spec.name)
        for spec in setting_specs()
        if spec.flag is not None and getattr(args, spec.name, None) is not None
    }


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: first option string}`` of ``parser``'s flags: how the command spells each setting."""
    return {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}


def render_setting_error(error: SettingError, flags: Mapping[str, str]) -> str:
    """``error``'s message with the settings spelled as flags (``--num-classes 3``)."""

    def name_value(flag: str, value: Any) -> str:
        if value is None or isinstance(value, bool):
            return flag
        if isinstance(value, Mapping):  # a label map: 255:1 as --label-map takes it
            value = ",".join(f"{k}:{v}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        return f"{flag} {value}"

    return error.render(lambda key: flags.get(key, key), name_value)
