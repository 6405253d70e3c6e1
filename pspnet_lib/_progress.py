"""Progress bars through tqdm's own switches, plus huggingface_hub's: the glue behind every bar of the library.

``progress=None`` (the default of the library's entry points) hands tqdm ``disable=None``: tqdm
then draws only when its stream is a terminal (``tqdm.auto`` draws its widget in Jupyter). The
switches that turn bars off everywhere are the ecosystem's own, read by their owners:
``TQDM_DISABLE`` (tqdm reads ``TQDM_*`` variables into its defaults when imported; any non-empty
value disables, as for every tqdm bar; tqdm >= 4.66) and huggingface_hub's
(``HF_HUB_DISABLE_PROGRESS_BARS=1`` or ``huggingface_hub.utils.disable_progress_bars()``).
``True`` asks for a bar anyway (e.g. a log viewer that renders ``\\r``), ``False`` never draws.
While a bar is shown, log lines of the root and ``pspnet_lib`` loggers go through ``tqdm.write``
(``tqdm.contrib.logging.logging_redirect_tqdm``) so that they do not break through the bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from huggingface_hub.utils import are_progress_bars_disabled
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from tqdm.std import tqdm as std_tqdm

__all__ = ["progress_bar", "tqdm_class"]


def _disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for ``progress``; ``TypeError`` for anything but None/True/False."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be None (automatic), True or False, got {progress!r}")
    if progress is not None:
        return not progress
    # tqdm applies TQDM_DISABLE as the default of `disable`, which an explicit disable=None would
    # override: keep tqdm's reading of it (vars(): tqdm.auto's class may subclass tqdm.std's).
    env_disabled = getattr(vars(std_tqdm).get("__init__"), "keywords", {}).get("disable", False)
    return True if env_disabled or are_progress_bars_disabled() else None


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
    """A ``tqdm.auto`` bar with ``disable`` from ``progress`` (see the module), closed on exit, logging routed through it.

    ``with progress_bar(total=n, desc="train") as bar: ... bar.update(1)``; a disabled bar
    accepts the same calls and prints nothing. ``TypeError`` for a ``progress`` other than None/True/False.
    """
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    bar = tqdm(iterable, disable=_disable(progress), **tqdm_kwargs)
    redirect = (
        contextlib.nullcontext() if bar.disable else logging_redirect_tqdm(loggers=_console_loggers(), tqdm_class=tqdm)
    )
    try:
        with redirect:
            yield bar
    finally:
        bar.close()


_TQDM_CLASSES: dict[bool | None, type[tqdm]] = {}


def tqdm_class(progress: bool | None = None) -> type[tqdm]:
    """The ``tqdm_class`` to hand to ``huggingface_hub`` downloads: its bars follow ``progress`` like :func:`progress_bar`'s.

    huggingface_hub passes ``disable=True`` when its own switch is off; that is kept.
    """
    disable = _disable(progress)
    if disable not in _TQDM_CLASSES:

        class _Bar(tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True if kwargs.get("disable") else disable
                super().__init__(*args, **kwargs)

        _TQDM_CLASSES[disable] = _Bar
    return _TQDM_CLASSES[disable]
