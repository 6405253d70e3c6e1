"""``pspnet prepare``: turn a dataset's official downloads into the layout ``--dataset`` reads."""

from __future__ import annotations

import argparse
import sys

from ..data import DATASETS, PREPARERS, dataset_record

#: ``pspnet prepare`` choices: the datasets with a preparer (a live view of the dataset records).
PREPARE_CHOICES = PREPARERS.keys()


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..core.inference_protocol import MAX_SIDE
    from .common import int_in

    p = subparsers.add_parser(
        "prepare",
        help="prepare a zoo dataset from its official downloads",
        description="Read a dataset's official archives (or their extracted folders) from SRC and write the "
        "layout `pspnet train/eval --dataset NAME --data-root DST` reads (mmsegmentation's prepared layout). "
        "Finished files are skipped, so an interrupted run continues where it stopped. PASCAL Context's "
        "masks serve both pascal-context and pascal-context-59. See docs/datasets.md for each dataset's inputs.",
    )
    p.add_argument("dataset", choices=tuple(PREPARERS), help="which dataset")
    p.add_argument("src", metavar="SRC", help="folder holding the downloaded archives (or their extracted folders)")
    p.add_argument("dst", metavar="DST", help="folder to write the prepared dataset to (may be SRC)")
    p.add_argument(
        "--annotations",
        metavar="FILE",
        help="pascal-context: the trainval_merged.json file (default SRC/trainval_merged.json)",
    )
    p.add_argument(
        "--tile-size",
        type=int_in(1, MAX_SIDE),
        metavar="PX",
        help="potsdam/vaihingen: tile size (default 512, as upstream)",
    )
    p.add_argument(
        "--stride",
        type=int_in(1, MAX_SIDE),
        metavar="PX",
        help="potsdam/vaihingen: tile stride (default 256, as upstream)",
    )
    p.add_argument(
        "--patch-size", type=int_in(1, MAX_SIDE), metavar="PX", help="isaid: patch size (default 896, as upstream)"
    )
    p.add_argument(
        "--overlap", type=int_in(0, MAX_SIDE), metavar="PX", help="isaid: patch overlap (default 384, as upstream)"
    )
    p.set_defaults(func=run)


#: The preparation options this command has flags for (a preparer's keyword-only parameters).
_OPTIONS = ("annotations", "tile_size", "stride", "patch_size", "overlap")


def run(args: argparse.Namespace) -> int:
    import inspect

    def takes(dataset: str) -> set[str]:
        params = inspect.signature(PREPARERS[dataset]).parameters.values()
        return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    kwargs = {}
    for option in _OPTIONS:
        value = getattr(args, option)
        if value is None:
            continue
        if option not in takes(args.dataset):
            datasets = [d for d in PREPARERS if option in takes(d)]
            raise ValueError(f"--{option.replace('_', '-')} applies to {', '.join(datasets)} only, not {args.dataset}")
        kwargs[option] = value
    result = PREPARERS[args.dataset](args.src, args.dst, **kwargs)
    record = dataset_record(args.dataset)
    served = [record.key] + [r.key for r in map(dataset_record, DATASETS) if r.prepared_with == record.key]
    sys.stdout.write(
        f"{args.dataset}: wrote {result['written']} file(s), {result['skipped']} already there; "
        f"use --dataset {' or '.join(served)} --data-root {args.dst}\n"
    )
    return 0
