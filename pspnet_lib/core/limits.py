"""The resource budget for untrusted input, in one place: each limit, its default, how to raise it.

A checkpoint, a config or a picture from a stranger can be small and still ask for gigabytes or
hours (a 100-byte pickle that builds ``bytearray(3 GiB)``, a 2 MB zip whose records inflate to
2.5 GB, a config that nests a pipeline 64 levels deep, a 493 KB PNG of 13,000 x 13,000 pixels).
Every such cost is checked against one of the limits below *before* the work or the allocation,
and a refusal is one line naming the value, the limit and the environment variable that raises it
(``PSPNET_LIMIT_<NAME>``, read at each check, so a process can raise a limit for a file it trusts).
docs/weights.md lists them.

Sizes accept ``k``/``M``/``G`` suffixes (``PSPNET_LIMIT_MODEL_BYTES=4G``: powers of 1024 for
bytes, of 1000 otherwise); ``0`` or ``none`` turns a limit off.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

__all__ = ["LIMITS", "Limit", "ResourceLimitError", "check_limit", "format_amount", "get_limit"]


@dataclass(frozen=True)
class Limit:
    """One limit of the budget: ``name``, its ``default`` (a number; see :func:`get_limit`), the ``unit``
    (``"bytes"``, ``"pixels"``, ``"seconds"`` or ``""`` for a count or ratio) and what it bounds."""

    name: str
    default: float
    unit: str
    what: str

    @property
    def env(self) -> str:
        """The environment variable that overrides the default."""
        return f"PSPNET_LIMIT_{self.name.upper()}"


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 16 GiB
        return 16.0 * 2**30


_GiB, _MiB = 2**30, 2**20

#: Every limit, by name. ``memory``'s default is 75% of this machine's physical memory.
LIMITS: dict[str, Limit] = {
    limit.name: limit
    for limit in (
        Limit("pickle_bytes", 64 * _MiB, "bytes", "size of one pickle record of a checkpoint (its metadata, not its tensors)"),
        Limit("pickle_ops", 2_000_000, "", "pickle opcodes in one checkpoint"),
        Limit("pickle_objects_bytes", 256 * _MiB, "bytes", "bytes, bytearrays and numpy arrays a checkpoint's pickle builds"),
        Limit("pickle_work", 20_000_000, "", "items a checkpoint's pickle makes the unpickler hash or iterate (keys, sets)"),
        Limit("pickle_nodes", 4_000_000, "", "values in a checkpoint's metadata, a value shared n times counted n times"),
        Limit("pickle_depth", 200, "", "nesting depth of a checkpoint's metadata"),
        Limit("zip_inflate_ratio", 16, "", "inflated / compressed size of the compressed records of a .pth zip archive (each over 1 MiB, and all tensor records together)"),
        Limit("config_values", 200_000, "", "values an mmseg config text expands to (names used inside names counted each time)"),
        Limit("model_bytes", 1 * _GiB, "bytes", "parameters and buffers of a model built from a file"),
        Limit("memory", 0.0, "bytes", "estimated memory of a model and one inference at its protocol (default: 75% of this machine's memory)"),
        Limit("whole_image_pixels", 4096 * 4096, "pixels", "pixels of one picture segmented without tiles, and of its largest whole-image run (after resizing, at the largest scale)"),
        Limit("slide_windows", 4096, "", "sliding windows of one image at one scale"),
        Limit("download_seconds", 3600, "seconds", "overall time of one download"),
    )
}  # fmt: skip


class ResourceLimitError(ValueError):
    """Input that would need more memory, work or time than a limit of :data:`LIMITS` allows.

    ``limit`` is the :class:`Limit`, ``needed`` the amount the input asked for.
    """

    def __init__(self, message: str, limit: Limit, needed: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.needed = needed


_SUFFIX = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def _parse(text: str, limit: Limit) -> float:
    if text.strip().lower() in ("0", "none", "off", "inf", "unlimited"):
        return math.inf
    match = _SUFFIX.match(text)
    if not match:
        raise ValueError(
            f"{limit.env}={text!r} is not a number; expected e.g. {format_amount(limit.default or _GiB, limit.unit)} "
            "written as 1.5G, 800M or 4096 (0 or none: no limit)"
        )
    value, prefix = float(match.group(1)), match.group(2).lower()
    base = 1024 if limit.unit == "bytes" else 1000
    value *= base ** "_kmgt".index(prefix) if prefix else 1
    if value <= 0:
        return math.inf
    return value


def get_limit(name: str) -> float:
    """The current value of limit ``name`` (``math.inf``: no limit): its environment variable, else its default.

    Raises:
        KeyError: no such limit.
        ValueError: the environment variable does not hold a number (one line naming it).
    """
    limit = LIMITS[name]
    text = os.environ.get(limit.env)
    if text is not None and text.strip():
        return _parse(text, limit)
    if name == "memory":
        return 0.75 * _physical_memory()
    return float(limit.default)


def format_amount(value: float, unit: str) -> str:
    """``value`` for a message: ``1.5 GiB``, ``16.8 Mpx``, ``3600 s``, ``2,000,000``."""
    if math.isinf(value):
        return "unlimited"
    if unit == "bytes":
        for suffix, size in (("GiB", _GiB), ("MiB", _MiB), ("KiB", 1024)):
            if value >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} bytes"
    if unit == "pixels":
        return f"{value / 1e6:.1f} Mpx" if value >= 1e5 else f"{value:.0f} pixels"
    if unit == "seconds":
        return f"{value:.0f} s"
    return f"{value:,.0f}" if value == int(value) else f"{value:g}"


def check_limit(name: str, needed: float, what: str, advice: str = "") -> None:
    """Raise :class:`ResourceLimitError` if ``needed`` exceeds limit ``name``.

    The message is one line: ``"{what} needs {needed}: over the limit of {limit} on {limit.what};
    {advice}; if you trust this input, raise the limit with the environment variable {ENV} (e.g. ...)"``; ``what`` names the input (a file, a picture), ``advice`` may add a better way out
    (e.g. tiled inference). Returns silently within the limit.
    """
    limit = LIMITS[name]
    value = get_limit(name)
    if needed <= value:
        return
    raise ResourceLimitError(
        f"{what} needs {format_amount(needed, limit.unit)}: over the limit of {format_amount(value, limit.unit)} on "
        f"{limit.what}; {advice}{'; ' if advice else ''}if you trust this input, raise the limit with the environment "
        f"variable {limit.env} (e.g. {limit.env}={_example(needed, limit.unit)})",
        limit,
        needed,
    )


def _example(needed: float, unit: str) -> str:
    if unit == "bytes":
        return f"{math.ceil(needed * 1.25 / _MiB)}M"
    return str(math.ceil(needed * 1.25))
