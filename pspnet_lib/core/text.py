"""Reading the small text files users write: class names, split lists, palettes.

These files come from every editor and operating system. Windows tools (Notepad, Excel's "CSV
UTF-8", PowerShell's ``Out-File``) start UTF-8 files with a byte-order mark (``EF BB BF``) or
write UTF-16 with one (``FF FE``), and end lines with CRLF. Read naively, the mark sticks to the
first line (the first class becomes ``'\\ufeffroad'``, which prints as ``road`` and matches
nothing) and a CR can stick to the last value of a line. :func:`read_lines` is the one place
these files are decoded, for every reader in the package.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

__all__ = ["read_lines", "text_lines"]

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def text_lines(data: bytes, what: str = "the text") -> list[str]:
    """The lines of ``data`` (UTF-8, or UTF-8/UTF-16 with a byte-order mark), each stripped of
    surrounding whitespace; blank lines are kept (as ``""``) so that line numbers stay right.

    LF, CRLF and CR line ends are all accepted. Raises ``ValueError`` naming ``what`` when the
    bytes are not such text.
    """
    encoding = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom) :], name
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); save it as UTF-8 "
            "(with or without a byte-order mark)"
        ) from None
    # str.splitlines also splits on form feeds and other separators nobody means in these files.
    return [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def read_lines(path: str | os.PathLike) -> list[str]:
    """The stripped lines of the text file ``path`` (see :func:`text_lines`; blank lines kept as ``""``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it is
    not UTF-8 (or UTF-16 with a byte-order mark) text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    return text_lines(path.read_bytes(), what=str(path))
