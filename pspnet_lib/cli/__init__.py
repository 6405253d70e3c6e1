"""The ``pspnet`` command line: one module per sub-command, each with ``register(subparsers)``.

A sub-command's ``register`` adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence

# Order here is the order in ``pspnet --help``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "predict",
    "rank",
    "train",
    "evaluate",
    "stats",
    "prepare",
    "export",
    "convert",
    "zoo",
)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="pspnet",
        description="PSPNet: segment images, train, evaluate, convert and export models.",
    )
    parser.add_argument("--version", action="version", version=f"pspnet_lib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("pspnet_lib").error("interrupted")
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError, OSError, ImportError) as exc:
        # Errors raised by the library carry a message meant for the user; show it, not a traceback
        # (an optional extra that is not installed: the pip install line).
        if args.verbose:
            raise
        logging.getLogger("pspnet_lib").error("%s", user_message(exc, getattr(args, "flags", None)))
        return 1


def user_message(exc: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """The message of ``exc`` as the user should see it.

    A :class:`~pspnet_lib.engine.config.SettingError` names its settings with the sub-command's
    flags (``flags``: setting -> flag, e.g. ``{"num_classes": "--num-classes"}``).

    An error raised in a DataLoader worker process (e.g. a bad mask found during training with
    ``--num-workers`` > 0) reaches the main process as the same exception type with the worker's
    whole traceback as its message; only its last line, the original message, is meant for users.
    """
    from ..engine.config import SettingError
    from .common import render_setting_error

    if isinstance(exc, SettingError) and flags:
        return render_setting_error(exc, flags)
    text = str(exc)
    if "DataLoader worker process" in text and "Original Traceback" in text:
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)
        prefix = f"{type(exc).__name__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
