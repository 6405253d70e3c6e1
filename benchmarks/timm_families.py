"""Which timm families reach which output stride under PSPNet: built and measured, never read from a list.

For every timm model family (a module of ``timm.models``) this builds one model (the first timm
lists, or ``--models``) as ``TimmEncoder`` does, on the meta device (no memory, no arithmetic),
at output strides 8, 16 and 32, and measures the stride of the last stage with a shape-only
forward pass on a 256x256 input. It prints the Markdown table of docs/model.md ("timm
backbones"): per family, the model tried and, per stride, ``yes`` or why not (``no option``: the
constructor has no ``output_stride``; ``rejects``: it asserts; ``ignores``: it built and returned
another stride; ``wrong stride``: its own last stage is not at 32; ``fixed size``: it cannot run on an input of another size than its training size;
``other``: another error, shown with ``-v``).

    python benchmarks/timm_families.py                 # every family (a few minutes on 2 cores)
    python benchmarks/timm_families.py --families convnext resnet dla -v
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
import time

import timm
import torch

from pspnet_lib.models.encoders.timm_encoder import OUTPUT_STRIDES, reachable_strides


def _verdict(reason: str | None) -> str:
    if reason is None:
        return "yes"
    if "has no output_stride option" in reason:
        return "no option"
    if "rejects output_stride" in reason:
        return "rejects"
    if "has its last stage at stride" in reason:
        return "ignores" if "it ignores" in reason else "wrong stride"
    if "cannot run on" in reason:
        return "fixed size"
    return "other"


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", help="timm modules to try (default: all)")
    parser.add_argument("--models", nargs="*", default=[], help="models to try instead of each family's first")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the reason of every 'no'")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # timm's warnings about missing pretrained cfgs
    torch.set_num_threads(1)
    families = args.families or timm.list_modules()
    models = list(args.models)
    if not models:
        for family in families:
            names = timm.list_models(module=family)
            if names:
                models.append(names[0])
    print(f"timm {timm.__version__}, torch {torch.__version__}, {_machine()}, Python {platform.python_version()}")
    print()
    print("| family | model tried | OS 8 | OS 16 | OS 32 |")
    print("|---|---|---|---|---|")
    start = time.perf_counter()
    reasons_out = []
    for name in models:
        family = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        try:
            reasons = reachable_strides(name)
        except Exception as exc:  # the family cannot even be asked (logged, not fatal)
            reasons = {s: f"other: {type(exc).__name__}: {exc}" for s in OUTPUT_STRIDES}
        cells = [_verdict(reasons[s]) for s in OUTPUT_STRIDES]
        print(f"| {family} | `{name}` | {' | '.join(cells)} |", flush=True)
        reasons_out += [(name, s, r) for s, r in reasons.items() if r is not None]
    print()
    print(f"{len(models)} models in {time.perf_counter() - start:.0f} s")
    if args.verbose:
        for name, stride, reason in reasons_out:
            print(f"{name} @ {stride}: {reason}", file=sys.stderr)


if __name__ == "__main__":
    main()
