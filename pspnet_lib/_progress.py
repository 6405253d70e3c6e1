"""Progress bars that fit the place they run: the one helper behind every bar of the library.

``progress=None`` (the default of the library's entry points) draws a bar only when its stream
(stderr) is a terminal or the code runs in a Jupyter kernel, and never when ``TQDM_DISABLE`` or
``HF_HUB_DISABLE_PROGRESS_BARS`` is set (to anything but ``0``/``false``/empty); ``True`` asks for
one anyway (e.g. a log viewer that renders ``\\r``), ``False`` never draws. While a bar is shown,
log lines of the root and ``pspnet_lib`` loggers go through ``tqdm.write``
(``tqdm.contrib.logging.logging_redirect_tqdm``) so that they do not break through the bar.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["progress_enabled", "progress_bar", "tqdm_class"]

#: Environment variables that turn bars off (tqdm's own and huggingface_hub's).
DISABLE_VARIABLES = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


def _env_disabled() -> bool:
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off") for v in DISABLE_VARIABLES)


def _interactive(stream: TextIO | None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed or unusual streams
        pass
    # Jupyter: stderr is a pipe, yet tqdm.auto draws a widget there.
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_enabled(progress: bool | None = None, *, stream: TextIO | None = None) -> bool:
    """Whether to draw a bar: ``progress`` if it is a bool, else a terminal (or Jupyter) and no disabling variable.

    Raises ``TypeError`` for anything but None/True/False.
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None (automatic), True or False, got {progress!r}")
    if progress is not None:
        return progress
    return not _env_disabled() and _interactive(stream)


def _console_loggers() -> list[logging.Logger]:
    """The root and ``pspnet_lib`` loggers that print to a console (redirecting a logger without a
    console handler would add one, and its records would then print twice)."""
    loggers = [logging.getLogger(), logging.getLogger("pspnet_lib")]
    return [
        lg
        for lg in loggers
        if any(type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr) for h in lg.handlers)
    ]


@contextlib.contextmanager
def progress_bar(
    iterable: Iterable[Any] | None = None, *, progress: bool | None = None, **tqdm_kwargs: Any
) -> Iterator[tqdm]:
    """A ``tqdm`` bar (disabled unless :func:`progress_enabled`), closed on exit, with logging routed through it.

    ``with progress_bar(total=n, desc="train") as bar: ... bar.update(1)``; a disabled bar
    accepts the same calls and prints nothing.
    """
    enabled = progress_enabled(progress, stream=tqdm_kwargs.get("file"))
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    bar = tqdm(iterable, disable=not enabled, **tqdm_kwargs)
    redirect = (
        logging_redirect_tqdm(loggers=_console_loggers(), tqdm_class=tqdm) if enabled else contextlib.nullcontext()
    )
    try:
        with redirect:
            yield bar
    finally:
        bar.close()


class _SilentTqdm(tqdm):
    """A tqdm that never draws (for libraries that take a ``tqdm_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def tqdm_class(progress: bool | None = None) -> type[tqdm]:
    """The ``tqdm_class`` to hand to ``huggingface_hub`` downloads: drawing only if :func:`progress_enabled`."""
    return tqdm if progress_enabled(progress) else _SilentTqdm
