"""``pspnet convert SRC OUT_DIR``: any supported checkpoint -> a ``save_pretrained`` folder."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("pspnet_lib.cli.convert")

#: What ``save_pretrained`` writes into the output folder.
SAVED_FILES = ("config.json", "model.safetensors", "README.md")


def _bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(
        f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=None, help=help
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..core.constants import MAX_NUM_CLASSES
    from ..hub.converters import FORMATS
    from .common import int_in

    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint (mmsegmentation, semseg, torchvision, zoo name, ...) to a save_pretrained folder",
        description=(
            "Convert SRC into OUT_DIR (config.json + model.safetensors + README.md model card), loadable with "
            "load_pretrained(OUT_DIR), PSPNet.from_pretrained(OUT_DIR) or pushable to the Hugging Face Hub. "
            "SRC is a zoo name, 'hf-hub:org/repo', a file, a folder or a URL."
        ),
    )
    parser.add_argument("source", metavar="SRC", help="zoo name, hf-hub:org/repo, checkpoint file/folder or URL")
    parser.add_argument(
        "out_dir", nargs="?", metavar="OUT_DIR", type=Path, help="folder to write (created; must be empty or absent)"
    )
    # --out as in the other commands; without it argparse would read --out as an abbreviation of --output-stride.
    parser.add_argument("--out", dest="out_option", metavar="OUT_DIR", type=Path, help="the same as OUT_DIR")
    parser.add_argument("--format", choices=FORMATS, help="checkpoint layout (default: detected from the keys)")
    parser.add_argument(
        "--num-classes", type=int_in(1, MAX_NUM_CLASSES), help="replace the classifiers for this many classes"
    )
    parser.add_argument(
        "--classes", type=Path, help="text file with one class name per line (stored in pretrained_cfg)"
    )
    _bool_flag(parser, "aux", "keep / drop the auxiliary head (default: as in the checkpoint)")
    _bool_flag(parser, "align-corners", "align_corners of the upsampling (mmseg 769x769 and semseg models: true)")
    _bool_flag(parser, "contract-dilation", "halve the dilation of the first block of dilated stages (mmseg: true)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="total backbone stride")
    parser.add_argument(
        "--dilations", type=int, nargs=4, metavar="D", help="per-stage dilations, e.g. 1 1 2 4 (mmseg D32)"
    )
    parser.add_argument("--no-strict", dest="strict", action="store_false", help="load what fits instead of failing")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow arbitrary pickled objects (trusted files only)"
    )
    parser.add_argument("--cache-dir", type=Path, help="download/cache folder (default: torch hub checkpoints)")
    parser.add_argument("--local-files-only", action="store_true", help="never download")
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.pretrained_cfg import PretrainedCfg
    from ..hub.loading import load_pretrained

    if args.out_dir is not None and args.out_option is not None and args.out_dir != args.out_option:
        raise ValueError(f"two output folders given ({args.out_dir} and --out {args.out_option}); pass one")
    out: Path | None = args.out_dir or args.out_option
    if out is None:
        raise ValueError("no output folder: pspnet convert SRC OUT_DIR (or --out OUT_DIR)")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    from .._files import check_outputs_spare_inputs, local_files, sibling_folder

    # Converting a save_pretrained folder into itself (with --force) would replace its own files.
    check_outputs_spare_inputs(
        [out / name for name in SAVED_FILES],
        local_files(args.source) + ([args.classes] if args.classes is not None else []),
        advice=f"choose another output folder, e.g. {sibling_folder(out, 'converted')}",
    )
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} is not empty; choose another folder or pass --force to overwrite its files")
    overrides = {}
    for key in ("align_corners", "contract_dilation", "output_stride", "dilations"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    extra_cfg = None
    if args.classes is not None:
        from ..data.datasets import read_classes_file

        extra_cfg = {"classes": read_classes_file(args.classes)}
    model = load_pretrained(
        args.source,
        num_classes=args.num_classes,
        aux=args.aux,
        strict=args.strict,
        format=args.format,
        cache_dir=args.cache_dir,
        local_files_only=args.local_files_only,
        trust_pickle=args.trust_pickle,
        pretrained_cfg=extra_cfg,
        **overrides,
    )
    classes = PretrainedCfg.of(model).classes
    if classes is not None and len(classes) != model.config.num_classes:
        raise ValueError(f"{len(classes)} class names given for a model with {model.config.num_classes} classes")
    model.save_pretrained(out)
    summary = {
        "out_dir": str(out),
        "backbone": model.config.backbone,
        "num_classes": model.config.num_classes,
        "load_report": {k: len(v) for k, v in model.load_report.to_dict().items() if isinstance(v, list)},
    }
    logger.info("wrote %s (%s)", out, model.load_report)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
