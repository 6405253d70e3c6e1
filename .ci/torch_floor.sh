#!/usr/bin/env bash
# Run the test suite (or the tests given) against an older torch/torchvision, to check the floors
# pyproject.toml declares for them (docs/installing.md records the results). Not part of .ci/run:
# each try downloads a torch (GBs).
#
#   .ci/torch_floor.sh 2.9.1 0.24.1                       # the whole suite
#   .ci/torch_floor.sh 2.6.0 0.21.0 tests/test_export.py  # some tests
#
# A fresh virtual environment (kept at $TORCH_FLOOR_VENV if set, else removed) gets the given
# torch and torchvision first, then the project with its test extras (pip keeps the pins: the
# constraints file says so), and the suite runs from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 TORCH_VERSION TORCHVISION_VERSION [pytest args...]"; exit 2; }
torch_version="$1" torchvision_version="$2"; shift 2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
venv="${TORCH_FLOOR_VENV:-$work/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
printf 'torch==%s\ntorchvision==%s\n' "$torch_version" "$torchvision_version" > "$work/pins.txt"
"$venv/bin/pip" install -q -c "$work/pins.txt" "torch==$torch_version" "torchvision==$torchvision_version" -e ".[dev]"
"$venv/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
"$venv/bin/python" -m pytest -p no:cacheprovider -q -n 2 "$@"
