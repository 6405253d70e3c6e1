"""What users meet walking through the README and docs: file permissions, CLI argument forms,
clear one-line errors for realistic mistakes (bad masks, wrong paths, batch size 1)."""

import logging
import os
import stat
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pspnet_lib._files import atomic_output, atomic_write_bytes
from pspnet_lib.cli import main

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@posix_only
def test_atomic_writes_get_ordinary_permissions(tmp_path):
    # mkstemp makes 0600 files; outputs (masks, models, exports) must be readable like any file.
    old = os.umask(0o022)
    try:
        target = tmp_path / "out" / "mask.png"
        atomic_write_bytes(target, b"data")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        os.umask(0o027)
        other = tmp_path / "other.bin"
        atomic_write_bytes(other, b"x")
        assert stat.S_IMODE(other.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    # Replacing a file keeps that file's permissions.
    os.chmod(target, 0o600)
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600


@posix_only
def test_synthetic_dataset_folder_is_not_private(tmp_path):
    from pspnet_lib.data import write_synthetic_dataset

    old = os.umask(0o022)
    try:
        root = write_synthetic_dataset(tmp_path / "scenes", 2, size=(16, 16), seed=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
