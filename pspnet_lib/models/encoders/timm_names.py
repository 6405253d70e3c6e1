"""Names of timm backbones (``"timm:<model>[.<pretrained tag>]"``) and their checks, importing timm lazily.

Everything here runs before a model is built or weights are fetched, so that a wrong name is one
line naming it (with the closest timm names), and a missing timm install is the ``pip install``
line, not an ``ImportError`` from deep inside the build.
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = [
    "TIMM_PREFIX",
    "TIMM_KWARGS",
    "is_timm_backbone",
    "timm_name",
    "require_timm",
    "check_timm_name",
    "check_timm_kwargs",
    "timm_family",
]

#: How a config names a timm backbone: ``"timm:convnext_tiny"``, ``"timm:convnext_tiny.fb_in22k"``.
TIMM_PREFIX = "timm:"

#: The settings of timm's model constructors a config may carry (``PSPNetConfig.backbone_kwargs``)
#: and their bounds. Only regularisation rates: a config may come from a stranger's file, and
#: settings that size the model (widths, depths, multipliers) could ask for any amount of memory.
TIMM_KWARGS: dict[str, tuple[float, float]] = {
    "drop_path_rate": (0.0, 1.0),  # stochastic depth (timm's --drop-path)
    "drop_block_rate": (0.0, 1.0),  # DropBlock, where the family has it
}

# timm's model names and pretrained tags: lower-case letters, digits, underscores, one dot.
_NAME = re.compile(r"^[A-Za-z0-9_]{1,120}(\.[A-Za-z0-9_]{1,120})?$")


def is_timm_backbone(backbone: Any) -> bool:
    """Whether a ``backbone`` value names a timm model (``"timm:..."``)."""
    return isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)


def timm_name(backbone: str) -> str:
    """``"timm:convnext_tiny.fb_in1k"`` -> ``"convnext_tiny.fb_in1k"`` (timm's own name)."""
    return backbone.removeprefix(TIMM_PREFIX)


def require_timm(what: str = "a timm backbone") -> ModuleType:
    """``import timm``, or an ``ImportError`` in one line with the install command."""
    try:
        import timm
    except ImportError:
        raise ImportError(f'{what} needs timm, which is not installed: pip install "pspnet_lib[timm]"') from None
    return timm


def timm_family(arch: str) -> str:
    """The timm module (model family) that defines ``arch``: ``"convnext"``, ``"swin_transformer"``, ..."""
    timm = require_timm()
    return str(timm.models.model_entrypoint(arch).__module__).rsplit(".", 1)[-1]


def check_timm_name(backbone: str) -> str:
    """Check ``"timm:<name>"`` against timm's registry; returns ``<name>``.

    Raises:
        ImportError: timm is not installed (with the ``pip install`` line).
        ValueError: a malformed name, an unknown model (with the closest names) or an unknown
            pretrained tag (with the model's tags).
    """
    name = timm_name(backbone)
    if not _NAME.match(name):
        raise ValueError(
            f"backbone {backbone!r} is not a timm model name: expected 'timm:<model>' or 'timm:<model>.<pretrained tag>' "
            "(letters, digits and underscores), e.g. 'timm:convnext_tiny'"
        )
    timm = require_timm(f"backbone {backbone!r}")
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {arch!r} in backbone {backbone!r}.{hint} (timm.list_models() lists them)")
    if tag:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(arch + ".*")]
        if tag not in tags:
            known = ", ".join(tags) if tags else "none"
            raise ValueError(
                f"timm model {arch!r} has no pretrained tag {tag!r} (backbone {backbone!r}); its tags: {known}"
            )
    return name


def check_timm_kwargs(value: Any) -> dict[str, float] | None:
    """Validate ``PSPNetConfig.backbone_kwargs``: None or a mapping of :data:`TIMM_KWARGS` keys to numbers in range."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"backbone_kwargs must be a mapping (or None), got {value!r}")
    checked = {}
    for key, number in value.items():
        if key not in TIMM_KWARGS:
            raise ValueError(
                f"backbone_kwargs: unsupported setting {key!r}; the supported ones are {', '.join(TIMM_KWARGS)} "
                "(settings that size the model are not stored in configs)"
            )
        low, high = TIMM_KWARGS[key]
        if isinstance(number, bool) or not isinstance(number, numbers.Real) or not low <= float(number) < high:
            raise ValueError(f"backbone_kwargs[{key!r}] must be a number in [{low}, {high}), got {number!r}")
        checked[str(key)] = float(number)
    return checked
