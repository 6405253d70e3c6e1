"""How closely the fast path agrees with the model it was built from, on a trained model.

    python benchmarks/trained_agreement.py                   # trains the demo model first (~75 s on 2 cores)
    python benchmarks/trained_agreement.py --model pspnet-demo/model   # an existing model (folder, file or zoo name)

Random-weight models (``benchmarks/inference.py``) show the arithmetic error; a trained model shows
what users see: how many pixels change class. Without ``--model`` this trains the model of
``pspnet demo`` (default settings, seeded) into a temporary folder. It then compares
``optimize_for_inference`` variants with the fp32 model (:func:`pspnet_lib.runtime.compare_models`)
on held-out synthetic scenes (seeds the demo never trains on) at two sizes: the size the demo
trains at (``run_demo``'s ``image_size``, 96 px) and 256 px. Columns: argmax agreement (pixel-weighted), max relative logit error
(max |diff| / max |fp32 logit|), mean absolute logit error.

Variants: ``fast-fp32``; ``fast-bf16`` (defaults: Winograd and space-to-batch chosen by
measurement); ``fast-bf16-winograd2`` (F(2x2, 3x3) only); ``fast-bf16-direct`` (no Winograd, no
space-to-batch); plus ``autocast-bf16`` (``torch.autocast``) for reference.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
from pathlib import Path

import torch
from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)

from pspnet_lib import load_pretrained, optimize_for_inference  # noqa: E402
from pspnet_lib.data.synthetic import SyntheticScenes  # noqa: E402
from pspnet_lib.demo import run_demo  # noqa: E402
from pspnet_lib.engine.evaluate import normalize_images  # noqa: E402
from pspnet_lib.runtime import agreement_stats, compare_models, native_dtype_support  # noqa: E402

HELD_OUT_SEED = 12345  # the demo trains on seed 0 and scores on seed 1 (pspnet_lib/demo.py)


def held_out_batches(size: int, count: int, model: torch.nn.Module, batch: int = 8) -> list[torch.Tensor]:
    scenes = SyntheticScenes(count, size=(size, size), seed=HELD_OUT_SEED)
    x = normalize_images(torch.stack([scenes[i][0] for i in range(count)]), model)  # the model's mean/std
    return [x[i : i + batch] for i in range(0, count, batch)]


def autocast_stats(model: torch.nn.Module, batches: list[torch.Tensor]) -> dict:
    refs, outs = [], []
    with torch.no_grad():
        for x in batches:
            refs.append(model(x))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs.append(model(x).float())
    return agreement_stats(torch.cat(refs), torch.cat(outs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained model (default: train the demo model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/trained_agreement.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model
        if source is None:
            print("training the demo model (pspnet demo, default settings) ...")
            run_demo(Path(tmp) / "demo", progress=False)
            source = str(Path(tmp) / "demo" / "model")
        model = load_pretrained(source).eval()

    bf16 = native_dtype_support(torch.bfloat16, "cpu")[0]
    variants = {"fast-fp32": {"dtype": torch.float32}}
    if bf16:
        variants.update(
            {
                "fast-bf16": {"dtype": torch.bfloat16},
                "fast-bf16-winograd2": {"dtype": torch.bfloat16, "winograd": 2},
                "fast-bf16-direct": {"dtype": torch.bfloat16, "winograd": False, "space_to_batch": False},
            }
        )
    rows = []
    demo_size = inspect.signature(run_demo).parameters["image_size"].default
    for size, count in ((demo_size, 32), (256, 8)):
        batches = held_out_batches(size, count, model)
        for name, kw in variants.items():
            fast = optimize_for_inference(model, tuning_cache=False, **kw)
            rows.append({"size": size, "images": count, "variant": name, **compare_models(model, fast, batches)})
        if bf16:
            rows.append({"size": size, "images": count, "variant": "autocast-bf16", **autocast_stats(model, batches)})

    print(
        f"\nfast path vs fp32 on a trained model ({source if args.model else 'the demo model'}), "
        f"held-out synthetic scenes, {args.threads} threads\n"
    )
    print("| size | images | variant | argmax agreement | max rel err | mean abs err |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['size']} | {row['images']} | {row['variant']} | {100 * row['argmax_agreement']:.2f}% | "
            f"{row['max_rel_err']:.2e} | {row['mean_abs_err']:.2e} |"
        )
    write_json(
        {"machine": machine_info(torch.device("cpu"), args.threads), "model": args.model or "demo", "rows": rows},
        args.json,
    )
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
