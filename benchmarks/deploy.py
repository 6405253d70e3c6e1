"""Deployment speed on the CPU: PyTorch, the fast path (bf16, int8), ONNX Runtime and OpenVINO in ONE run.

    python benchmarks/deploy.py                          # R18-D8 and R50-D8 at 512x512, then the trained demo model
    python benchmarks/deploy.py --models resnet18 --rounds 3
    python benchmarks/deploy.py --sizes 512,1024x2048 --models resnet50
    python benchmarks/deploy.py --demo-model pspnet-demo/model   # skip training the demo model

Variants, timed interleaved round by round (each round runs every variant once, so a change in
machine load hits all of them alike; the per-round ratios are the numbers to trust on a shared
machine): plain fp32 eager, autocast bf16 (channels-last), ``optimize_for_inference`` bf16 and
int8, ONNX Runtime fp32/int8 and OpenVINO fp32/bf16/int8 on the library's own dynamic-size ONNX
export (the int8 file: :func:`pspnet_lib.inference.quantize.export_onnx_int8`, calibrated on 4
image-like inputs). Also: preparation time (export, quantization, compilation), first-call
latency, model file sizes, and accuracy against fp32: on the random-weight model (argmax
agreement, max relative logit error on image-like input) and on the trained demo model (argmax
agreement and mIoU on held-out synthetic scenes; int8 calibrated on training scenes).
OpenVINO rows are skipped with a note when ``openvino`` is not installed.

``OMP_WAIT_POLICY=PASSIVE`` is set (unless already set) so that PyTorch's OpenMP threads sleep
instead of spinning between calls: interleaved in one process with OpenVINO's/ONNX Runtime's own
thread pools, spinning threads would take cores from the other runtimes and bias the comparison.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see the docstring)

import argparse  # noqa: E402
import copy  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from _common import machine_info, write_json  # noqa: E402  (also puts the checkout on sys.path)

from pspnet_lib import build_pspnet, load_pretrained, optimize_for_inference  # noqa: E402
from pspnet_lib._testing import randomize_batchnorm_, smooth_image  # noqa: E402
from pspnet_lib.data.synthetic import SyntheticScenes  # noqa: E402
from pspnet_lib.engine.evaluate import normalize_images  # noqa: E402
from pspnet_lib.engine.metrics import ConfusionMatrix  # noqa: E402
from pspnet_lib.inference.export import export_onnx  # noqa: E402
from pspnet_lib.inference.quantize import load_onnx_runner, quantize_onnx  # noqa: E402
from pspnet_lib.runtime import agreement_stats, native_dtype_support  # noqa: E402

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HELD_OUT_SEED = 12345  # as benchmarks/trained_agreement.py: the demo trains on seed 0, scores on seed 1


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def build_variants(
    model: torch.nn.Module, calibration: list[torch.Tensor], tmp: Path, bf16: bool
) -> tuple[dict, dict, dict]:
    """name -> callable(x: Tensor) -> logits Tensor; name -> preparation seconds; file sizes in MiB."""
    variants, prep, sizes = {}, {}, {}

    def timed(name, make):
        start = time.perf_counter()
        value = make()
        prep[name] = time.perf_counter() - start
        return value

    variants["fp32"] = model
    if bf16:
        cl = timed("autocast-bf16", lambda: copy.deepcopy(model).to(memory_format=torch.channels_last))

        def autocast(x, cl=cl):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cl(x.contiguous(memory_format=torch.channels_last)).float()

        variants["autocast-bf16"] = autocast
        variants["fast-bf16"] = timed(
            "fast-bf16", lambda: optimize_for_inference(model, torch.bfloat16, tuning_cache=False)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast_int8 = timed("fast-int8", lambda: optimize_for_inference(model, "int8", calibration=calibration))
    variants["fast-int8" + ("" if getattr(fast_int8, "dtype", None) == "int8" else " (fell back to bf16)")] = fast_int8

    fp32_file, int8_file = tmp / "fp32.onnx", tmp / "int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed("onnx export", lambda: export_onnx(model, fp32_file, height=64, width=64, exporter="torchscript"))
    timed("int8 quantization", lambda: quantize_onnx(fp32_file, int8_file, calibration))
    sizes = {"onnx fp32": fp32_file.stat().st_size / 2**20, "onnx int8": int8_file.stat().st_size / 2**20}

    def wrap(run):
        return lambda x: torch.from_numpy(run(x.numpy()))

    variants["ort-fp32"] = wrap(timed("ort-fp32", lambda: load_onnx_runner(fp32_file, "onnxruntime")))
    variants["ort-int8"] = wrap(timed("ort-int8", lambda: load_onnx_runner(int8_file, "onnxruntime")))
    if HAS_OPENVINO:
        variants["ov-fp32"] = wrap(timed("ov-fp32", lambda: load_onnx_runner(fp32_file, "openvino", precision="f32")))
        if bf16:
            variants["ov-bf16"] = wrap(
                timed("ov-bf16", lambda: load_onnx_runner(fp32_file, "openvino", precision="bf16"))
            )
        variants["ov-int8"] = wrap(timed("ov-int8", lambda: load_onnx_runner(int8_file, "openvino")))
    return variants, prep, sizes


def time_variants(variants: dict, x: torch.Tensor, rounds: int) -> tuple[dict, dict, dict]:
    """First-call seconds, per-round seconds and outputs of the first call, interleaved round-robin."""
    first, times, outputs = {}, {name: [] for name in variants}, {}
    with torch.no_grad():
        for name, fn in variants.items():
            start = time.perf_counter()
            outputs[name] = fn(x).float()
            first[name] = time.perf_counter() - start
        for _ in range(rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    return first, times, outputs


def speed_table(arch: str, size: tuple[int, int], args, bf16: bool, tmp: Path) -> dict:
    torch.manual_seed(0)
    model = randomize_batchnorm_(build_pspnet(arch, num_classes=21)).eval()
    h, w = size
    calibration = [smooth_image(1, h, w, seed=100 + i) for i in range(4)]
    variants, prep, sizes = build_variants(model, calibration, tmp, bf16)
    x = smooth_image(1, h, w, seed=7)
    first, times, outputs = time_variants(variants, x, args.rounds)
    ref = outputs["fp32"]
    base = next((n for n in ("ov-int8", "fast-bf16") if n in times), "fp32")
    rows = []
    for name in variants:
        med = statistics.median(times[name])
        ratios = [t / b for t, b in zip(times[name], times[base])]
        fast_ratios = [t / b for t, b in zip(times[name], times["fast-bf16"])] if "fast-bf16" in times else []
        rows.append(
            {
                "variant": name,
                "median_ms": 1e3 * med,
                "first_call_ms": 1e3 * first[name],
                "prep_s": prep.get(name, 0.0),
                f"ratio_vs_{base}_per_round": ratios,
                f"ratio_vs_{base}_median": statistics.median(ratios),
                "ratio_vs_fast-bf16_median": statistics.median(fast_ratios) if fast_ratios else None,
                **{
                    k: v
                    for k, v in agreement_stats(ref, outputs[name]).items()
                    if k in ("max_rel_err", "argmax_agreement")
                },
            }
        )
    print(
        f"\n{arch}-D8, {h}x{w}, batch 1, 21 classes, random weights (randomised BatchNorm statistics), "
        f"image-like input; {args.rounds} interleaved rounds; base = {base}\n"
    )
    print(
        f"| variant | median ms | time / {base} (median of per-round ratios) | per round | time / fast-bf16 | "
        "first call ms | preparation s | max rel err | argmax |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        per = ", ".join(f"{v:.2f}" for v in r[f"ratio_vs_{base}_per_round"])
        vs_fast = f"{r['ratio_vs_fast-bf16_median']:.2f}" if r["ratio_vs_fast-bf16_median"] is not None else "-"
        print(
            f"| {r['variant']} | {r['median_ms']:.0f} | {r[f'ratio_vs_{base}_median']:.2f} | {per} | {vs_fast} | "
            f"{r['first_call_ms']:.0f} | {r['prep_s']:.1f} | {r['max_rel_err']:.1e} | {100 * r['argmax_agreement']:.2f}% |"
        )
    print(
        f"\nfiles: ONNX fp32 {sizes['onnx fp32']:.1f} MiB, int8 {sizes['onnx int8']:.1f} MiB; "
        f"export {prep['onnx export']:.1f} s, quantization {prep['int8 quantization']:.1f} s"
    )
    if not HAS_OPENVINO:
        print("OpenVINO rows skipped: openvino is not installed (pip install 'pspnet-lib[openvino]')")
    return {"model": arch, "size": [h, w], "base": base, "rows": rows, "file_mib": sizes, "prep_s": prep}


def scenes(seed: int, count: int, size: int, model) -> tuple[torch.Tensor, torch.Tensor]:
    data = SyntheticScenes(count, size=(size, size), seed=seed)
    items = [data[i] for i in range(count)]
    return normalize_images(torch.stack([i[0] for i in items]), model), torch.stack(
        [torch.as_tensor(i[1]) for i in items]
    )


def trained_table(args, bf16: bool, tmp: Path) -> dict:
    source = args.demo_model
    if source is None:
        from pspnet_lib.demo import run_demo

        print("\ntraining the demo model (pspnet demo, default settings) ...")
        run_demo(tmp / "demo", progress=False)
        source = str(tmp / "demo" / "model")
    model = load_pretrained(source).eval()
    num_classes = model.config.num_classes
    calib_x, _ = scenes(0, 16, args.demo_size, model)  # training scenes: the demo trains on seed 0
    calibration = [calib_x[i : i + 1] for i in range(len(calib_x))]
    (tmp / "demo_onnx").mkdir(exist_ok=True)
    variants, _, _ = build_variants(model, calibration, tmp / "demo_onnx", bf16)
    x, labels = scenes(HELD_OUT_SEED, args.demo_images, args.demo_size, model)
    rows = []
    with torch.no_grad():
        ref = torch.cat([model(x[i : i + 8]) for i in range(0, len(x), 8)])
        for name, fn in variants.items():
            out = torch.cat([fn(x[i : i + 8]).float() for i in range(0, len(x), 8)])
            cm = ConfusionMatrix(num_classes)
            cm.update(out.argmax(1), labels)
            stats = agreement_stats(ref, out)
            rows.append({"variant": name, "mIoU": cm.compute()["mIoU"], **stats})
    print(
        f"\ntrained demo model ({source}), {args.demo_images} held-out synthetic scenes at {args.demo_size} px; "
        "int8 calibrated on 16 training scenes\n"
    )
    print("| variant | argmax agreement vs fp32 | mIoU | max rel err |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['variant']} | {100 * r['argmax_agreement']:.2f}% | {100 * r['mIoU']:.2f} | {r['max_rel_err']:.1e} |"
        )
    return {"model": args.demo_model or "demo", "size": args.demo_size, "images": args.demo_images, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--sizes", default="512", help="comma-separated, e.g. 512,1024x2048")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--demo-model", help="a trained demo model (default: train it, ~75 s on 2 idle cores)")
    parser.add_argument("--demo-size", type=int, default=128)
    parser.add_argument("--demo-images", type=int, default=16)
    parser.add_argument("--no-trained", action="store_true", help="skip the trained-model accuracy table")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/deploy.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bf16 = native_dtype_support(torch.bfloat16, "cpu")[0]
    report = {
        "machine": machine_info(torch.device("cpu"), args.threads),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openvino": HAS_OPENVINO,
        "speed": [],
        "trained": None,
    }
    if HAS_OPENVINO:
        import openvino

        report["openvino_version"] = openvino.__version__
    import onnxruntime

    report["onnxruntime_version"] = onnxruntime.__version__
    print(
        f"machine: {report['machine'].get('cpu')}, {args.threads} threads, load average {report['machine']['load_average']}"
    )
    with tempfile.TemporaryDirectory(prefix="pspnet_deploy_") as tmp:
        for arch in args.models.split(","):
            for size in args.sizes.split(","):
                report["speed"].append(speed_table(arch, _size(size), args, bf16, Path(tmp)))
                write_json(report, args.json)
        if not args.no_trained:
            report["trained"] = trained_table(args, bf16, Path(tmp))
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json(report, args.json)
    print(f"\nload average at the end {report['load_average_end']}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
