"""Print pip constraints pinning the light runtime dependencies to their declared floors.

    python .ci/floors.py > floors.txt && pip install -c floors.txt dist/pspnet_lib-*.whl

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


def main() -> int:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        if match is None:
            print(f"pyproject.toml: dependency {requirement!r} is not 'name>=version'", file=sys.stderr)
            return 1
        name, floor = match.groups()
        if name.lower() not in HEAVY:
            print(f"{name}=={floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
