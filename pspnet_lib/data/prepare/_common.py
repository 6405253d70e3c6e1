"""What every ``prepare_<dataset>`` shares: finding inputs (archive or extracted folder), atomic
writes, resumable outputs, progress bars on terminals, colour-label decoding and tile boxes."""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..._files import atomic_output, atomic_write_bytes
from ..._progress import progress_bar

logger = logging.getLogger("pspnet_lib.data.prepare")

PathLike = str | os.PathLike
T = TypeVar("T")

# The official files are large pictures (Potsdam: 6000x6000); PIL's decompression-bomb guard is
# for untrusted web input, and these are the user's own downloads.
_MAX_PIXELS = 40000 * 40000


@dataclass(frozen=True)
class Member:
    """One input file: ``name`` is its path inside the archive or folder (``/``-separated)."""

    name: str
    read: Callable[[], bytes]
    path: Path | None = None  # the file on disk, when it came from a folder

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def open_image(self) -> Image.Image:
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, _MAX_PIXELS)
        return Image.open(self.path if self.path is not None else io.BytesIO(self.read()))


def find_input(src: PathLike, folder: str, archive: str | None, what: str) -> Path:
    """``src/folder`` (extracted) or ``src/archive`` (as downloaded), whichever exists.

    Raises FileNotFoundError naming both, and where they come from (``what``), when neither does.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"input folder {src} does not exist; pass the folder that holds {what}")
    for candidate in ([src / folder] if folder else []) + ([src / archive] if archive else []):
        if candidate.is_dir() or (candidate.is_file() and zipfile.is_zipfile(candidate)):
            return candidate
    expected = " or ".join(
        x for x in ((f"{src / folder}/" if folder else ""), (str(src / archive) if archive else "")) if x
    )
    raise FileNotFoundError(f"missing input {expected}: {what}")


def members(source: Path, suffixes: Sequence[str], under: str = "") -> list[Member]:
    """The files of ``source`` (a folder or a zip archive) whose names end in one of ``suffixes``,
    optionally only those under the sub-folder ``under``; sorted by name."""
    suffixes = tuple(s.lower() for s in suffixes)
    prefix = under.strip("/") + "/" if under else ""
    found: list[Member] = []
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            if (
                path.is_file()
                and rel.lower().endswith(suffixes)
                and rel.startswith(prefix)
                and not path.name.startswith(".")
            ):
                found.append(Member(rel, path.read_bytes, path))
        return found
    archive = zipfile.ZipFile(source)
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        name = info.filename
        if (
            not info.is_dir()
            and name.lower().endswith(suffixes)
            and name.startswith(prefix)
            and not name.rsplit("/", 1)[-1].startswith(".")
        ):
            found.append(Member(name, functools.partial(archive.read, name)))
    return found


def save_png(array: np.ndarray, path: Path) -> None:
    """Write ``array`` (uint8 (H, W) or (H, W, 3)) as PNG atomically."""
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def copy_member(member: Member, target: Path) -> None:
    """Copy an input file to ``target`` atomically.

    A real copy, not a hard link: a tool that later edits a prepared file in place must not change
    the user's original download.
    """
    if member.path is not None:
        with atomic_output(target) as tmp:
            shutil.copyfile(member.path, tmp)
        return
    atomic_write_bytes(target, member.read())


def colours_to_index(rgb: np.ndarray, colours: dict[tuple[int, int, int], int], default: int) -> np.ndarray:
    """uint8 ``(H, W)`` index mask of an ``(H, W, 3)`` colour label: ``colours[c]`` per pixel, ``default`` elsewhere."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    unique, inverse = np.unique(codes, return_inverse=True)
    table = {(r << 16) | (g << 8) | b: v for (r, g, b), v in colours.items()}
    values = np.array([table.get(int(c), default) for c in unique], dtype=np.uint8)
    return values[inverse].reshape(codes.shape)


def isprs_starts(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis as mmsegmentation's ``potsdam.py`` / ``vaihingen.py`` cut them.

    The number of tiles is counted with ``stride``, but tile ``k`` starts at ``k * size`` (clamped so
    it ends at the border), so the distinct tiles are the non-overlapping grid plus one tile flush
    with the far border: 6000 px with size 512 and stride 256 gives 12 tiles, 144 per Potsdam image
    (24 training images -> 3,456 tiles, as upstream's documentation says).
    """
    if length <= size:
        return [0]
    count = math.ceil((length - size) / stride)
    if count * stride + size < length:
        count += 1
    return sorted({min(k * size, length - size) for k in range(count + 1)})


def sliding_starts(length: int, size: int, step: int) -> list[int]:
    """Patch origins along one axis as mmsegmentation's ``isaid.py`` cuts them: every ``step``
    pixels, the last patches moved back to end at the border (``length >= size``)."""
    return sorted({min(x, length - size) for x in range(0, length, step)})


def require_outputs_dir(dst: PathLike) -> Path:
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"output {dst} is a file; pass a folder for the prepared dataset")
    return dst


def done(paths: Iterable[Path]) -> bool:
    """Whether every output exists (outputs are written atomically, so an existing one is complete)."""
    return all(p.is_file() for p in paths)


def summary(name: str, dst: Path, written: int, skipped: int) -> dict[str, int]:
    logger.info("%s: wrote %d file(s) under %s, %d already there", name, written, dst, skipped)
    return {"written": written, "skipped": skipped}


def iter_progress(items: Sequence[T], desc: str) -> Iterator[T]:
    """``items`` with a bar on terminals (:func:`pspnet_lib._progress.progress_bar`'s rules)."""
    with progress_bar(items, total=len(items), desc=desc, unit="file") as bar:
        yield from bar
