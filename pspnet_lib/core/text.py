"""``printable``: an untrusted string made safe to show on a terminal or in a log.

Class names, tensor names, URLs and other strings read from a stranger's file may hold NUL bytes,
ANSI escape sequences (which recolour, move the cursor or retitle a terminal), carriage returns
and newlines (which forge log lines), bidirectional overrides, or a million characters. Every
such string goes through :func:`printable` before the library or the CLI shows it.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["MAX_SHOWN", "printable"]

#: Characters of one untrusted string shown before it is cut.
MAX_SHOWN = 200


def _escape(char: str) -> str:
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
