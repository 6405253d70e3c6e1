"""Print pip constraints pinning the light runtime dependencies to their declared floors.

    python .ci/floors.py [--python 3.10] > floors.txt && pip install -c floors.txt dist/pspnet_lib-*.whl

``--python X.Y`` names the Python the pins are for (default: the one running this script).

Every entry of ``[project] dependencies`` in pyproject.toml written ``name>=X`` becomes
``name==X``, except torch and torchvision (large downloads; their floors are checked by hand and
recorded in docs/installing.md). An entry in another form is an error: the floors must be simple
to pin.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

HEAVY = {"torch", "torchvision"}
# A declared floor older than the first release with wheels for a newer Python cannot install
# there without a compiler and the image libraries' headers: on that Python the first release
# with its wheels stands in (the declared floor itself is checked on Python 3.10,
# docs/installing.md). Pillow 9.3.0 is the first with CPython 3.11 wheels.
FIRST_WHEELS = {"pillow": {(3, 11): "9.3.0", (3, 12): "10.0.1", (3, 13): "11.0.0"}}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def main() -> int:
    python = sys.version_info[:2]
    if sys.argv[1:2] == ["--python"] and len(sys.argv) == 3:
        python = _version(sys.argv[2])[:2]
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match is None:
            print(f"pyproject.toml: dependency {requirement!r} is not 'name>=version'", file=sys.stderr)
            return 1
        name, floor = match.groups()
        if name.lower() in HEAVY:
            continue
        for since, first in sorted(FIRST_WHEELS.get(name.lower(), {}).items()):
            if python >= since and _version(first) > _version(floor):
                floor = first
        print(f"{name}=={floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
