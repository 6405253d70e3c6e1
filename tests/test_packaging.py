"""What a package index shows and what an sdist holds: metadata, README links, every tracked file.

The build itself (sdist + wheel), ``twine check --strict``, installing the wheel into fresh
environments (newest dependencies and the declared floors) and running the suite from the
unpacked sdist are .ci/run's steps; these tests keep the inputs of that build honest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import pspnet_lib

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the checks do not depend on the Python version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
HOMEPAGE = PROJECT["urls"]["Homepage"]


def _release(version: str) -> str:
    """``0.2.0.dev0`` -> ``0.2.0``: the release (and git tag ``v0.2.0``) a development version becomes."""
    return re.match(r"\d+(\.\d+)*", version).group(0)


def test_index_metadata():
    # PEP 639: an SPDX expression and the license file, no license classifier (deprecated; an
    # error in setuptools from 2027-02-18), and the backend floor that understands both
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").is_file()
    classifiers = PROJECT["classifiers"]
    assert not [c for c in classifiers if c.startswith("License ::")]
    backend = PYPROJECT["build-system"]["requires"]
    assert backend == ["setuptools>=77.0.1"]
    # typed: the marker ships with the package (the one imported: CI runs this from an sdist against the wheel)
    assert "Typing :: Typed" in classifiers and (Path(pspnet_lib.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["pspnet_lib"]
    # one classifier per supported Python, from requires-python's minimum, without gaps
    minimum = int(re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"]).group(1))
    minors = sorted(
        int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert minors and minors == list(range(minimum, minimum + len(minors)))
    # the links an index shows next to the description
    urls = PROJECT["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(u.startswith(HOMEPAGE) and u.startswith("https://") for u in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md") and urls["Issues"] == HOMEPAGE + "/issues"


def test_readme_links_resolve_on_an_index():
    # An index renders README.md away from the repository: relative links are dead there. Every
    # link is absolute; those into this repository name a file or folder that exists, and the
    # picture comes from the release's tag (a stable place: main's copy may change).
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"""src=["']([^"']+)""", text)
    assert targets
    repo_path = HOMEPAGE.removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{repo_path}/v{_release(pspnet_lib.__version__)}/"
    pictures = 0
    for target in targets:
        assert target.startswith("https://") or target.startswith("#"), f"README link {target!r} is not absolute"
        if target.startswith(raw):
            assert (REPO / target.removeprefix(raw)).is_file(), target
            pictures += 1
        elif target.startswith(HOMEPAGE + "/"):
            match = re.fullmatch(re.escape(HOMEPAGE) + r"/(blob|tree)/main/([^#]+)(#.*)?", target)
            assert match, f"README link {target!r}: expected {HOMEPAGE}/blob/main/<file> or /tree/main/<folder>"
            path = REPO / match.group(2)
            assert path.is_file() if match.group(1) == "blob" else path.is_dir(), target
        else:
            assert "raw.githubusercontent.com" not in target, f"README picture {target!r} is not under {raw}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images and all(i.startswith(raw) for i in images) and pictures >= len(images)


@pytest.mark.skipif(not (REPO / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout")
def test_sdist_holds_every_tracked_file(tmp_path):
    # The sdist is built from a copy of the tracked files (the checkout stays untouched) with the
    # backend this environment has; a tracked file it leaves out fails with its name. What the
    # tests, docs and CHANGELOG need is tracked, so this is the "sdist can test itself" check.
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [f for f in tracked.stdout.split("\0") if f and (REPO / f).is_file()]  # (deleted, not yet committed)
    source = tmp_path / "src"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    build = "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sdist = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        top = f"pspnet_lib-{pspnet_lib.__version__}/"
        members = {m.name.removeprefix(top) for m in archive.getmembers() if m.isfile()}
    missing = sorted(set(files) - members)
    assert not missing, f"tracked files missing from the sdist (add them to MANIFEST.in): {missing}"
    assert {"tests/conftest.py", "tests/data/reference/README.md", "CHANGELOG.md", "hubconf.py"} <= members
