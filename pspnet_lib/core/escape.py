"""``printable``, ``short_repr``: untrusted strings and values made safe to show on a terminal or in a log.

Class names, tensor names, URLs and other strings read from a stranger's file may hold NUL bytes,
ANSI escape sequences (which recolour, move the cursor or retitle a terminal), carriage returns
and newlines (which forge log lines), bidirectional overrides, or a million characters. Every
such string goes through :func:`printable` before the library or the CLI shows it.
"""

from __future__ import annotations

import reprlib
import unicodedata
from typing import Any

__all__ = ["MAX_SHOWN", "printable", "short_repr"]

#: Characters of one untrusted string shown before it is cut.
MAX_SHOWN = 200


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: Any, limit: int = MAX_SHOWN) -> str:
    """``str(value)`` with control and format characters escaped (``\\x1b``, ``\\n``, ``\\u202e``) and
    cut to ``limit`` characters (``... (N more characters)`` says how many were left out).

    Letters, digits, punctuation, symbols and spaces of every script are kept as they are.
    """
    text = value if isinstance(value, str) else str(value)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    out = []
    for char in text:
        # Cc: C0/C1 controls and DEL; Cf: format (bidi overrides, zero-width); Zl/Zp: line and
        # paragraph separators; Cs: lone surrogates; Co/Cn: private use and unassigned.
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") or char == "\\":
            out.append("\\\\" if char == "\\" else _escape(char))
        else:
            out.append(char)
    shown = "".join(out)
    return f"{shown}... ({extra} more characters)" if extra > 0 else shown


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 6
_REPR.maxstring, _REPR.maxother = 60, 60


def short_repr(value: Any, limit: int = 80) -> str:
    """A ``repr`` of a value read from a file, for a message: nested containers, long strings and huge
    integers shortened (a ``repr`` of a 10^5000 integer raises; one of a million-item list takes
    seconds), control characters escaped, at most ``limit`` characters."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
            text = f"<an integer of {value.bit_length()} bits>"
        else:
            text = _REPR.repr(value)
    except Exception:  # a repr that fails: say what it was
        text = f"<{type(value).__name__}>"
    return printable(text, limit)
