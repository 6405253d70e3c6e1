"""``pspnet rank``: the pictures most worth labelling next, most uncertain first, as JSON Lines.

    pspnet rank unlabelled/ -r --weights runs/mine/model --top 100 --out to_label.jsonl
    pspnet rank --manifest masks/ --top 1000 --out to_label.jsonl     # after pspnet predict --confidence entropy

Parses the flags and prints; the work is :mod:`pspnet_lib.inference.rank`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.confidence import CONFIDENCE_KINDS
from .common import device_name, floats


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rank",
        help="order pictures by the model's uncertainty (what to label next), as JSON Lines",
        description=(
            "Order pictures by the model's mean uncertainty, most uncertain first, and write the top K as JSON "
            "Lines (rank, input, uncertainty, confidence_kind, confidence_mean, height, width). Either run the "
            "model over INPUTs (--weights), or rank the manifests of pspnet predict --confidence runs (--manifest)."
        ),
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or quoted glob patterns")
    parser.add_argument("--files-from", type=Path, metavar="FILE", help="also rank the files listed in FILE")
    parser.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders of folder inputs")
    parser.add_argument("--weights", help="zoo name, hf-hub:org/repo, a save_pretrained folder or a checkpoint file")
    parser.add_argument(
        "--manifest",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="rank the records of pspnet predict --confidence manifests (a --out folder: all its parts) instead",
    )
    parser.add_argument(
        "--confidence",
        choices=CONFIDENCE_KINDS,
        default="entropy",
        help="the uncertainty: 1 - mean maxprob, 1 - mean margin, or mean entropy / ln K (default entropy)",
    )
    parser.add_argument("--top", type=int, metavar="K", help="list only the K most uncertain (default: all)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="JSON Lines file to write (default: standard output)")
    parser.add_argument(
        "--flip", action="store_true", help="average over the mirrored picture too (test-time augmentation)"
    )
    parser.add_argument(
        "--scales", type=floats, nargs="+", default=[[1.0]], metavar="S", help="multi-scale factors, e.g. 0.75 1.0 1.25"
    )
    parser.add_argument(
        "--device", type=device_name, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="pictures per forward pass (default 1)")
    parser.add_argument("--num-workers", type=int, default=2, metavar="N", help="decoding processes (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._files import check_outputs_spare_inputs
    from ..hub.loading import load_pretrained
    from ..inference.batch import default_device
    from ..inference.inputs import list_inputs
    from ..inference.rank import rank_manifests, rank_pictures, write_ranking

    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    if args.manifest:
        if args.inputs or args.files_from or args.weights:
            raise ValueError("--manifest ranks earlier pspnet predict runs; do not also pass INPUTs or --weights")
        ranking = rank_manifests(args.manifest, top=args.top)
        sources: list[str] = [str(p) for p in args.manifest]
    else:
        if not args.inputs and args.files_from is None:
            raise ValueError("nothing to rank: name pictures, folders or glob patterns (with --weights), or --manifest")
        if not args.weights:
            raise ValueError("--weights is required to rank pictures (or pass --manifest to rank pspnet predict runs)")
        if args.batch_size < 1 or args.num_workers < 0:
            raise ValueError("--batch-size must be at least 1 and --num-workers 0 or more")
        sources = [item.path for item in list_inputs(args.inputs, recursive=args.recursive, files_from=args.files_from)]
        if not sources:
            raise ValueError("no image files to rank among the inputs")
        if args.out is not None:
            check_outputs_spare_inputs([args.out], sources, advice="choose another --out file")
        model = load_pretrained(args.weights, device=default_device(args.device))
        ranking = rank_pictures(
            model,
            sources,
            confidence=args.confidence,
            top=args.top,
            flip=args.flip,
            scales=[s for group in args.scales for s in group] or [1.0],
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
    if args.out is not None:
        write_ranking(ranking.records, args.out)
    else:
        import json

        for record in ranking.records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = f"ranked {ranking.considered - len(ranking.failed)} picture(s)"
    summary += f", wrote the top {len(ranking.records)} to {args.out}" if args.out is not None else ""
    if ranking.failed:
        shown = ", ".join(path for path, _ in ranking.failed[:5])
        summary += f"; {len(ranking.failed)} failed: {shown}" + (" and more" if len(ranking.failed) > 5 else "")
    (sys.stdout if args.out is not None else sys.stderr).write(summary + "\n")
    return 1 if ranking.failed else 0


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["rank", *sys.argv[1:]]))
