"""The bytes of a ``torch.save`` file, read once from one open file and checked before they are used.

:func:`open_checkpoint` tells the layout from the file itself and refuses what two readers could
read differently:

* the **zip layout** (torch >= 1.6): the file must start with a zip record at offset 0 and end
  with the end-of-central-directory record (no data before or after the archive), every name
  lies in one top-level folder, no two names are equal ignoring case, no name has ``..`` or a
  backslash, no record is encrypted, and exactly one ``<folder>/data.pkl`` exists. Record sizes
  are checked from the central directory before anything is read or inflated: the pickle record
  against ``pickle_bytes``, a compressed record against ``zip_inflate_ratio``, each tensor
  storage against the size its pickle declares. Each record's local header must agree with the
  directory, and its CRC-32 is checked (torch itself does not).
* the **legacy layout** (``_use_new_zipfile_serialization=False``): five consecutive pickles
  (magic number, protocol, system info, the object, the storage keys) then each storage's element
  count and bytes, up to the end of the file. A file that is also a zip archive (data before an
  end-of-central-directory record) or a tar archive (torch's pre-0.1.10 format) is refused.

The pickle bytes returned are the ones scanned and then unpickled; storage bytes are read once,
straight into the tensors' memory.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

import torch

from ..core.limits import ResourceLimitError, check_limit, get_limit
from .pickle_scan import PickleScan, StorageDecl, UnsafePickleError, scan_pickle

__all__ = ["ArchiveError", "CheckpointArchive", "open_checkpoint"]

_LOCAL = b"PK\x03\x04"
_END = b"PK\x05\x06"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
#: torch's legacy layout: the first pickle holds this magic number, the second this protocol version.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_FLOOR = 1 << 20  # compressed records inflating to less than this are not ratio-checked


class ArchiveError(ValueError):
    """The file is not a checkpoint archive this reader accepts (the message says why, in one line)."""


@dataclass
class CheckpointArchive:
    """An opened checkpoint: its ``layout`` (``"zip"`` or ``"legacy"``), the pickle bytes to unpickle
    (``pickles``: one for zip; magic, protocol, system info, object, storage keys for legacy; the
    object's is ``main``), what :func:`~pspnet_lib.hub.pickle_scan.scan_pickle` found in exactly
    those bytes (``scan``) and where each storage's bytes are."""

    layout: str
    file: IO[bytes]
    size: int
    pickles: list[bytes] = field(default_factory=list)
    main: int = 0
    scan: PickleScan = field(default_factory=PickleScan)
    _records: dict[str, zipfile.ZipInfo] = field(default_factory=dict)
    _prefix: str = ""
    _zip: zipfile.ZipFile | None = None
    _legacy_data: int = 0

    def byteorder(self) -> str:
        """``"little"`` or ``"big"``: the zip layout's ``byteorder`` record (little when absent, as torch reads it)."""
        info = self._records.get(f"{self._prefix}byteorder")
        if info is None:
            return "little"
        if info.file_size > 16:
            raise ArchiveError(f"record {info.filename} is {info.file_size} bytes, not a byte order")
        value = self._read_record(info, info.file_size).numpy().tobytes()
        if value not in (b"little", b"big"):
            raise ArchiveError(f"record {info.filename} holds {value[:16]!r}, not 'little' or 'big'")
        return value.decode()

    # --- storages ---

    def check_storages(self, declared: Mapping[str, StorageDecl], keys: list[str] | None = None) -> None:
        """Check every declared storage against the archive before anything is allocated."""
        if self.layout == "zip":
            for key, decl in declared.items():
                info = self._records.get(f"{self._prefix}data/{key}")
                if info is None:
                    raise ArchiveError(f"its pickle refers to storage {key!r}, which the archive does not hold")
                if info.file_size != decl.nbytes:
                    raise ArchiveError(
                        f"storage {key!r} is {info.file_size} bytes in the archive but its pickle declares "
                        f"{decl.numel} {decl.dtype} values ({decl.nbytes} bytes)"
                    )
                self._check_inflation(info)
            infos = [self._records[f"{self._prefix}data/{k}"] for k in declared]
            # records nested inside each other's data would make a small file read as many times its size
            stored = sum(i.compress_size for i in infos)
            if stored > self.size:
                raise ArchiveError(
                    f"its tensor records hold {stored} bytes together but the file has {self.size} (records that "
                    "overlap)"
                )
            # the floor that exempts small records applies to them all together: 10,000 records of
            # 1 kB inflating to 1 MiB each are 10 GB
            packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
            inflated = sum(i.file_size for i in packed)
            if inflated > _FLOOR:
                check_limit(
                    "zip_inflate_ratio",
                    inflated / max(sum(i.compress_size for i in packed), 1),
                    f"its {len(packed)} compressed tensor records ({inflated} bytes inflated)",
                )
            return
        assert keys is not None
        if sorted(keys) != sorted(declared) or len(set(keys)) != len(keys):
            raise ArchiveError("its list of storage keys does not match the storages its pickle declares")
        needed = sum(8 + declared[k].nbytes for k in keys)
        present = self.size - self._legacy_data
        if needed != present:
            raise ArchiveError(
                f"its storages need {needed} bytes after the pickles but {present} follow"
                + (" (the file is truncated)" if present < needed else " (unexpected data at the end)")
            )

    def read_storages(
        self, declared: Mapping[str, StorageDecl], keys: list[str] | None = None
    ) -> dict[str, torch.UntypedStorage]:
        """Each declared storage's bytes, read once into its own memory (CRC-checked for zip records)."""
        out: dict[str, torch.UntypedStorage] = {}
        if self.layout == "zip":
            for key, decl in declared.items():
                out[key] = self._read_record(self._records[f"{self._prefix}data/{key}"], decl.nbytes).untyped_storage()
            return out
        assert keys is not None
        offset = self._legacy_data
        for key in keys:
            decl = declared[key]
            self.file.seek(offset)
            header = self.file.read(8)
            count = int.from_bytes(header, "little") if len(header) == 8 else -1
            if count != decl.numel:
                raise ArchiveError(
                    f"storage {key!r} holds {count} values in the file but its pickle declares {decl.numel}"
                )
            out[key] = self._read_into(offset + 8, decl.nbytes).untyped_storage()
            offset += 8 + decl.nbytes
        return out

    def _read_into(self, offset: int, nbytes: int) -> torch.Tensor:
        """``nbytes`` bytes at ``offset``, read straight into a new uint8 tensor."""
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        view = buffer.numpy().data
        self.file.seek(offset)
        got = 0
        while got < nbytes:
            n = self.file.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise ArchiveError(f"the file ends {nbytes - got} bytes early (truncated)")
            got += n
        return buffer

    def _check_inflation(self, info: zipfile.ZipInfo) -> None:
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise ArchiveError(
                    f"record {info.filename} is stored with {info.compress_size} bytes for {info.file_size}"
                )
            return
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise ArchiveError(
                f"record {info.filename} uses compression method {info.compress_type}; torch writes stored records"
            )
        if info.file_size > _FLOOR:
            ratio = info.file_size / max(info.compress_size, 1)
            check_limit(
                "zip_inflate_ratio",
                ratio,
                f"its record {info.filename} ({info.compress_size} bytes inflating to {info.file_size})",
            )

    def _read_record(self, info: zipfile.ZipInfo, nbytes: int) -> torch.Tensor:
        """A record's bytes as a uint8 tensor: local header checked, inflation bounded, CRC-32 checked.

        torch writes a CRC of 0 when ``torch.serialization.config.save.compute_crc32`` is off: such
        records are not CRC-checked."""
        assert self._zip is not None and info.file_size == nbytes
        self._check_inflation(info)
        data_offset = self._local_header(info)
        if info.compress_type == zipfile.ZIP_STORED:
            buffer = self._read_into(data_offset, nbytes)
            if info.CRC and zlib.crc32(buffer.numpy().data) != info.CRC:
                raise ArchiveError(
                    f"record {info.filename} fails its CRC-32 check (the file was damaged or modified after it was "
                    "written)"
                )
            return buffer
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        try:
            with self._zip.open(info) as stream:  # inflates at most file_size bytes and checks the CRC at the end
                got = stream.readinto(buffer.numpy().data)  # type: ignore[attr-defined]  # a ZipExtFile, typed IO
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ArchiveError(f"record {info.filename} cannot be inflated ({exc})") from None
        if got != nbytes:
            raise ArchiveError(f"record {info.filename} inflates to {got} bytes, not {nbytes}")
        return buffer

    def _local_header(self, info: zipfile.ZipInfo) -> int:
        """Offset of a record's data, after checking its local header against the central directory."""
        self.file.seek(info.header_offset)
        raw = self.file.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise ArchiveError(f"record {info.filename}: the file is truncated")
        fields = _LOCAL_HEADER.unpack(raw)
        name = self.file.read(fields[10])
        encoding = "utf-8" if fields[3] & 0x800 else "cp437"
        if (
            fields[0] != _LOCAL
            or name.decode(encoding, "replace") != info.orig_filename
            or fields[4] != info.compress_type
        ):
            raise ArchiveError(f"record {info.filename}: its local header differs from the central directory")
        data_offset = info.header_offset + _LOCAL_HEADER.size + fields[10] + fields[11]
        if data_offset + info.compress_size > self.size:
            raise ArchiveError(f"record {info.filename} runs past the end of the file (truncated)")
        return data_offset


def _is_tar(file: IO[bytes]) -> bool:
    file.seek(0)
    try:
        with tarfile.open(fileobj=file, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
    finally:
        file.seek(0)


def open_checkpoint(file: IO[bytes]) -> CheckpointArchive:
    """Identify and check the layout of the open checkpoint ``file`` (see the module docstring).

    Raises:
        ArchiveError: an empty file, an ambiguous or malformed archive (one line saying what).
        ResourceLimitError: a record larger than a limit allows.
    """
    size = os.fstat(file.fileno()).st_size
    if size == 0:
        raise ArchiveError("the file is empty")
    head = file.read(4)
    file.seek(0)
    if _is_tar(file):
        raise ArchiveError(
            "it is a tar archive (torch's format before 0.1.10, or a tar file saved as .pth), which this reader "
            "refuses: load it with an old torch and re-save it with torch.save(state_dict, path)"
        )
    archive = CheckpointArchive("zip" if head == _LOCAL else "legacy", file, size)
    if archive.layout == "zip":
        _open_zip(archive)
    else:
        file.seek(0)
        if zipfile.is_zipfile(file):
            raise ArchiveError(
                "it holds a zip archive after other data (a legacy pickle and a zip in one file can be read two "
                "ways), which this reader refuses"
            )
        _open_legacy(archive)
    return archive


def _open_zip(archive: CheckpointArchive) -> None:
    file = archive.file
    file.seek(archive.size - 22)
    if file.read(4) != _END:
        raise ArchiveError(
            "it is not a complete zip archive: it does not end with the zip directory (truncated, or data after it)"
        )
    try:
        file.seek(0)
        zf = zipfile.ZipFile(file)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise ArchiveError(f"its zip directory is damaged ({exc})") from None
    if not infos or zf.comment:
        raise ArchiveError("its zip archive is empty or carries a comment")
    names = [i.filename for i in infos]
    prefix = names[0].split("/", 1)[0] + "/"
    if min(i.header_offset for i in infos) != 0:
        raise ArchiveError("its zip archive does not start at the beginning of the file (data before it)")
    folded: set[str] = set()
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if not name.startswith(prefix) or "\\" in name or "\0" in name or ".." in parts or name.startswith("/"):
            raise ArchiveError(f"its zip archive holds the unexpected name {name[:80]!r} (outside {prefix})")
        if name.casefold() in folded:
            raise ArchiveError(f"its zip archive holds two records named {name[:80]!r} (ignoring case)")
        folded.add(name.casefold())
        if info.flag_bits & 0x1:
            raise ArchiveError(f"record {name[:80]} is encrypted")
    archive._zip = zf
    archive._prefix = prefix
    archive._records = {i.filename: i for i in infos}
    pickle_info = archive._records.get(prefix + "data.pkl")
    if pickle_info is None:
        raise ArchiveError(f"its zip archive has no {prefix}data.pkl (not a torch.save file)")
    check_limit("pickle_bytes", pickle_info.file_size, f"its pickle record {pickle_info.filename}")
    archive.pickles = [archive._read_record(pickle_info, pickle_info.file_size).numpy().tobytes()]
    scan_pickle(archive.pickles[0], "its pickle", archive.scan)
    if archive.scan.end != len(archive.pickles[0]):
        raise ArchiveError(
            f"{pickle_info.filename} holds {len(archive.pickles[0]) - archive.scan.end} bytes after its pickle"
        )


def _open_legacy(archive: CheckpointArchive) -> None:
    """Read and scan the five pickles of the legacy layout, each read once into memory.

    A pickle's end is known only once it is scanned: a window of the file is read (1 MiB, grown
    fourfold while the pickle runs past it, up to ``pickle_bytes``) and scanned; the bytes kept are
    the pickle's, exactly those scanned.
    """
    limit = get_limit("pickle_bytes")
    offset = 0
    for index in range(5):
        remaining = archive.size - offset
        window = int(min(remaining, _FLOOR, limit + 1))
        while True:
            archive.file.seek(offset)
            data = archive.file.read(window)
            trial = dataclasses.replace(
                archive.scan, globals=set(archive.scan.globals), storages=dict(archive.scan.storages)
            )
            try:
                scan_pickle(data, "its pickle", trial)
                break
            except (ResourceLimitError, UnsafePickleError):
                if index == 0:
                    raise ArchiveError("it is neither a zip archive nor torch's legacy layout (not a pickle)") from None
                raise
            except (EOFError, ValueError) as exc:  # pickletools: bytes that end early or are no pickle
                if window < min(remaining, limit + 1):
                    window = int(min(remaining, limit + 1, window * 4))
                    continue
                if window > limit:
                    check_limit("pickle_bytes", window, "a pickle of its legacy layout")
                if index == 0:
                    raise ArchiveError("it is neither a zip archive nor torch's legacy layout (not a pickle)") from None
                raise ArchiveError(
                    f"the file ends inside a pickle, or holds bytes that are no pickle ({exc})"
                ) from None
        if index != 3 and trial.storages != archive.scan.storages:
            raise ArchiveError("a pickle other than the object's declares tensor storages")
        archive.scan = trial
        archive.pickles.append(data[: trial.end])
        offset += trial.end
    archive.main = 3
    archive._legacy_data = offset


def check_legacy_header(values: list[object]) -> None:
    """Raise unless the first two legacy pickles hold torch's magic number and protocol version."""
    if len(values) < 2 or values[0] != _LEGACY_MAGIC or values[1] != _LEGACY_PROTOCOL:
        raise ArchiveError("it is neither a zip archive nor torch's legacy layout (no torch magic number)")
