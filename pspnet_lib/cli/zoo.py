"""``pspnet list``, ``pspnet info NAME`` and ``pspnet download NAME...``: the weights zoo from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list the pretrained weights zoo", description="List the zoo entries.")
    parser.add_argument("pattern", nargs="?", help="shell-style filter, e.g. '*ade20k*'")
    parser.add_argument("--task", choices=("semantic-segmentation", "backbone"), help="one kind of entry only")
    parser.add_argument("--aliases", action="store_true", help="also list the short aliases")
    parser.add_argument("--cache-dir", type=Path, help="cache folder to check (default: torch hub checkpoints)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_list)

    parser = subparsers.add_parser(
        "info",
        help="show one zoo entry (or a saved model)",
        description="Show everything known about a zoo entry, or the architecture, classes and protocol of a "
        "saved model (a save_pretrained folder, a training checkpoint or a weights file).",
    )
    parser.add_argument("name", help="zoo name or alias, or the path of a saved model")
    parser.add_argument("--cache-dir", type=Path, help="cache folder to check")
    parser.add_argument("--classes", action="store_true", help="print every class name with its colour")
    parser.set_defaults(func=run_info)

    parser = subparsers.add_parser(
        "download",
        help="download, verify and convert zoo weights into the cache (e.g. before going offline); an entry already cached is hashed in full",
        description="Fetch zoo entries into the cache so that later loads need no network.",
    )
    parser.add_argument("names", nargs="+", help="zoo names or aliases")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: torch hub checkpoints)")
    parser.set_defaults(func=run_download)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cache_state(w, cache_dir: Path | None) -> tuple[bool, str | None]:
    """``(cached, problem)``: cached only if the entry verifies (checksums), else why not (None: absent)."""
    from ..hub.download import cached_paths, default_cache_dir, verify_cached

    if not any(p.exists() or p.is_symlink() for p in cached_paths(w, default_cache_dir(cache_dir))):
        return False, None
    problem = verify_cached(w, cache_dir)
    return problem is None, problem


def run_list(args: argparse.Namespace) -> int:
    from ..hub.registry import get_weight, list_pretrained

    names = list_pretrained(args.pattern, task=args.task, include_aliases=args.aliases)
    rows = []
    for name in names:
        w = get_weight(name)
        cached, problem = _cache_state(w, args.cache_dir)
        metrics = w.meta.get("metrics") or {}
        rows.append(
            {
                "name": name,
                "points_to": w.name if w.name != name else None,
                "dataset": w.meta.get("dataset", ""),
                "classes": w.meta.get("num_classes"),
                "mIoU": metrics.get("mIoU"),
                "mIoU_ms_flip": metrics.get("mIoU_ms_flip"),
                "top1": metrics.get("top1"),
                "cached": cached,
                "cache_problem": problem,
            }
        )
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        sys.stdout.write("no zoo entry matches\n")
        return 1
    table = [
        [
            r["name"] + (f" -> {r['points_to']}" if r["points_to"] else ""),
            r["dataset"],
            "-" if r["classes"] is None else str(r["classes"]),
            _fmt(r["mIoU"]) if r["top1"] is None else f"top1 {r['top1']:.2f}",
            _fmt(r["mIoU_ms_flip"]),
            "yes" if r["cached"] else ("damaged" if r["cache_problem"] else "no"),
        ]
        for r in rows
    ]
    sys.stdout.write(_table(table, ["name", "dataset", "classes", "mIoU", "ms+flip", "cached"]))
    if any(r["cache_problem"] for r in rows):
        sys.stdout.write(
            "damaged: the cached files fail verification; the next load or `pspnet download` rebuilds them\n"
        )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..hub.download import cached_paths, default_cache_dir
    from ..hub.registry import aliases_of, get_weight

    if Path(args.name).expanduser().exists():
        return _info_local(args)
    w = get_weight(args.name)
    cache = default_cache_dir(args.cache_dir)
    st, _ = cached_paths(w, cache)
    cached, problem = _cache_state(w, args.cache_dir)
    meta = dict(w.meta)
    categories = meta.pop("categories", None)
    palette = meta.pop("palette", None)
    out = {
        "name": w.name,
        "aliases": aliases_of(w.name),
        "url": w.url,
        "sha256_prefix": w.sha256,
        "format": w.format,
        "config": dict(w.config),
        **meta,
        "num_categories": None if categories is None else len(categories),
        "cached": cached,
        **({"cache_problem": problem} if problem else {}),
        "cache_file": str(st),
        "original_file": str(cache / w.filename),
    }
    lines = [f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in out.items()]
    if args.classes and categories:
        lines.append("classes:")
        lines += [f"  {i:3d} {name}  {tuple(palette[i]) if palette else ''}" for i, name in enumerate(categories)]
    elif categories:
        shown = ", ".join(categories[:8]) + (", ..." if len(categories) > 8 else "")
        lines.append(f"classes: {shown} (--classes for all)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _info_local(args: argparse.Namespace) -> int:
    """``pspnet info PATH``: what a saved model is (architecture, classes, preprocessing, protocol)."""
    from ..core.escape import printable
    from ..hub.loading import load_pretrained

    model = load_pretrained(Path(args.name).expanduser())
    cfg = dict(model.pretrained_cfg)
    classes = cfg.pop("classes", None)
    palette = cfg.pop("palette", None)
    out = {
        "source": args.name,
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        **cfg,
    }
    # Everything but the numbers came from the file: shown escaped and cut (a class name may hold
    # NUL bytes, ANSI escapes or newlines that forge lines; a provenance string a million characters).
    lines = [
        f"{printable(k, 60)}: {printable(json.dumps(v) if isinstance(v, (dict, list)) else v, 400)}"
        for k, v in out.items()
    ]
    names = [printable(name, 80) for name in classes or []]
    if names and args.classes:
        lines.append("classes:")
        lines += [f"  {i:3d} {name}  {tuple(palette[i]) if palette else ''}" for i, name in enumerate(names)]
    elif names:
        lines.append(f"classes: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''} (--classes for all)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..hub.download import cached_paths, default_cache_dir, recheck_cached, verify_cached
    from ..hub.loading import resolve_source
    from ..hub.registry import get_weight

    cache = default_cache_dir(args.cache_dir)
    status = 0
    for name in args.names:
        w = get_weight(name)
        recheck_cached(w, cache)  # a full hash (what a stamp cannot see); a damaged entry is removed
        resolve_source(w.name, cache_dir=cache)  # (re)builds it
        problem = verify_cached(w, cache)
        if problem is not None:  # e.g. a read-only cache: converted, but nothing could be kept
            sys.stderr.write(
                f"error: {w.name} could not be cached in {cache} ({problem}); pass a writable --cache-dir\n"
            )
            status = 1
            continue
        sys.stdout.write(f"{w.name}: {cached_paths(w, cache)[0]} (verified)\n")
    return status
