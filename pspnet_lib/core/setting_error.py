"""``SettingError``: the one-line error that names a training setting, spelled for its caller.

A message is a template in which ``{name}`` / ``{name=}`` stand for a setting; Python callers read
``num_classes=3``, the command line ``--num-classes 3`` (``render``), from the same error.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["SettingError", "check_outputs_are_not_inputs"]


class SettingError(ValueError):
    """A setting has a wrong value: one line that names the setting the way the caller spells it.

    ``template`` names settings in braces: ``{num_classes}`` is replaced by the setting's name and
    ``{num_classes=}`` by its name and value (taken from ``values``). ``str(error)`` spells them as
    Python arguments (``num_classes``, ``num_classes=3``); :meth:`render` with another spelling, e.g.
    the command line's (``--num-classes``, ``--num-classes 3``), lets a caller name its own flags.
    Write literal braces doubled (``{{`` and ``}}``), as in ``str.format``.
    """

    def __init__(self, template: str, **values: Any) -> None:
        self.template = template
        self.values = values
        super().__init__(self.render())

    @staticmethod
    def escape(text: Any) -> str:
        """``str(text)`` to place in a template as it is (its braces doubled)."""
        return str(text).replace("{", "{{").replace("}", "}}")

    @staticmethod
    def quote(value: Any) -> str:
        """``repr(value)`` to place in a template (its braces doubled)."""
        return SettingError.escape(repr(value))

    @property
    def settings(self) -> list[str]:
        """The names of the settings the message refers to, in order."""
        names = (field.rstrip("=") for _, field, _, _ in string.Formatter().parse(self.template) if field)
        return list(dict.fromkeys(names))

    def render(
        self,
        name: Callable[[str], str] = str,
        name_value: Callable[[str, Any], str] | None = None,
    ) -> str:
        """The message with each setting spelled by ``name(setting)`` and ``name_value(setting, value)``
        (default: ``setting=value!r``)."""
        return _Spelling(name, name_value or (lambda key, value: f"{key}={value!r}"), self.values).format(self.template)


class _Spelling(string.Formatter):
    def __init__(self, name: Callable[[str], str], name_value: Callable[[str, Any], str], values: Mapping) -> None:
        self.name, self.name_value, self.values = name, name_value, values

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        key = str(key)
        if key.endswith("="):
            return self.name_value(self.name(key[:-1]), self.values.get(key[:-1]))
        return self.name(key)


def check_outputs_are_not_inputs(
    outputs: Mapping[str, Any],
    inputs: Iterable[str | os.PathLike],
    *,
    input_roots: Iterable[str | os.PathLike | None] = (),
) -> None:
    """:func:`pspnet_lib._files.check_outputs_spare_inputs` for outputs given as settings
    (``{"json_path": path}``; None values skipped), its error a :class:`SettingError` whose advice
    names the setting as the caller spells it (``choose another json_path file`` / ``--json``)."""
    from .._files import OverwritesInputError, check_outputs_spare_inputs

    inputs, roots = list(inputs), list(input_roots)
    for name, path in outputs.items():
        if path is None:
            continue
        try:
            check_outputs_spare_inputs([path], inputs, input_roots=roots, advice="\0")
        except OverwritesInputError as exc:
            raise SettingError(SettingError.escape(exc).replace("\0", f"choose another {{{name}}} file")) from None
