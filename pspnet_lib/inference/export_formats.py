"""Export to a format, the workflow of ``pspnet export``: the format table and :func:`export_model`.

:data:`EXPORT_FORMATS` is the one table of the formats (name, file suffix, default example batch,
the writer); ``pspnet export --format`` offers its keys. Adding a format is one
:class:`ExportFormat` row here (with its writer, in :mod:`pspnet_lib.inference.export` when it is
more than a call) and its section in docs/export.md.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._files import local_files
from ..core.setting_error import SettingError, check_outputs_are_not_inputs
from . import export as ex

__all__ = ["EXPORT_FORMATS", "ExportFormat", "ExportResult", "export_model"]

logger = logging.getLogger(__name__)

#: What ``write(model, path, **options)`` receives: the example/fixed shape and the graph's ends.
Writer = Callable[..., Any]


def _write_onnx(model: nn.Module, path: Path, *, opset: int | None, onnx_exporter: str, **common: Any) -> None:
    ex.export_onnx(model, path, opset=opset, exporter=onnx_exporter, **common)


def _write_program(model: nn.Module, path: Path, **common: Any) -> None:
    ex.save_program(ex.export_program(model, **common), path)


def _write_torchscript(model: nn.Module, path: Path, *, dynamic: bool, **common: Any) -> None:
    ex.export_torchscript(model, path, **common)  # TorchScript traces are shape-generic already


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the ``--format`` / ``format=`` name.
        suffix: the usual file suffix (what loaders and tools expect); another one is written
            anyway, with a warning.
        batch_size: the default example (or, static, fixed) batch size.
        write: ``write(model, path, *, dynamic, height, width, batch_size, preprocess, output,
            [opset, onnx_exporter])`` writes the file atomically.
        onnx: whether the file is ONNX (``check``, ``opset``, ``onnx_exporter`` and ``int8``
            apply to ONNX files only).
    """

    name: str
    suffix: str
    batch_size: int
    write: Writer = field(repr=False)
    onnx: bool = False


#: Every export format, by name.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", ".onnx", 2, _write_onnx, onnx=True),
        ExportFormat("exported-program", ".pt2", 2, _write_program),
        ExportFormat("torchscript", ".pt", 1, _write_torchscript),
    )
}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and checked.

    Attributes:
        path: the file written.
        format: its :class:`ExportFormat` name.
        dynamic: dynamic batch/height/width (False: the example shape is fixed).
        size_bytes: the file's size.
        check_sizes: the ``(height, width)`` sizes ``check`` compared at (ONNX, fp32), else empty.
        check_error: the largest relative logit error (``output="labels"``: the mismatched pixel
            fraction) of ONNX Runtime against PyTorch, or None when not checked.
        int8: for ``int8=True``: ``calibration`` (pictures used), ``float_layers``, ``held_out``
            (pictures checked on; none left: the calibration pictures) and the
            :func:`~pspnet_lib.inference.int8_check.check_int8_onnx` stats when checked.
        ok: the check passed (fp32: error at most 1e-4; INT8: agreement at least ``min_agreement``),
            True when nothing was checked.
    """

    path: Path
    format: str
    dynamic: bool
    size_bytes: int
    check_sizes: list[tuple[int, int]] = field(default_factory=list)
    check_error: float | None = None
    int8: dict[str, Any] | None = None
    ok: bool = True


def _float_layers(value: str | Sequence[str] | None) -> tuple[str, ...]:
    from .quantize import FLOAT_LAYERS

    text = "classifier" if value is None else value
    names = tuple(p.strip() for p in text.split(",") if p.strip()) if isinstance(text, str) else tuple(text)
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in FLOAT_LAYERS]
    if unknown or not names:
        raise SettingError(
            f"{{float_layers}} {SettingError.quote(value)}: expected a comma-separated list of "
            f"{', '.join(FLOAT_LAYERS)}, or none"
        )
    return names


def _check_arguments(fmt: ExportFormat, o: dict[str, Any]) -> None:
    if not fmt.onnx and (o["check"] or o["opset"] is not None or o["onnx_exporter"] != "auto"):
        raise SettingError("{check}, {opset} and {onnx_exporter} apply to {format} onnx only")
    if not fmt.onnx and o["int8"]:
        raise SettingError("{int8} applies to {format} onnx only (the INT8 model is a quantized ONNX file)")
    if not o["int8"]:
        given = [f"{{{name}}}" for name in ("calibration", "float_layers") if o[name] is not None]
        if given:
            raise SettingError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to {{int8}} only")
        return
    from .quantize import _require_quantization, calibration_files

    if o["calibration"] is None:
        raise SettingError("{int8} needs {calibration} DIR, a folder of pictures like those you will segment")
    for name in ("calibration_count", "check_count"):
        if o[name] < 1:
            raise SettingError(f"{{{name}}} must be at least 1, got {o[name]}")
    if not 0.0 <= o["min_agreement"] <= 1.0:
        raise SettingError(f"{{min_agreement}} must be in [0, 1], got {o['min_agreement']}")
    calibration_files(o["calibration"])  # a missing or empty folder fails before the weights load
    _require_quantization()


def export_model(
    weights: str | os.PathLike | nn.Module,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    dynamic: bool = True,
    height: int = 512,
    width: int = 512,
    batch_size: int | None = None,
    preprocess: bool = False,
    output: str = "logits",
    opset: int | None = None,
    onnx_exporter: str = "auto",
    check: bool = False,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    calibration_count: int = 16,
    calibration_method: str = "minmax",
    float_layers: str | Sequence[str] | None = None,
    check_count: int = 4,
    min_agreement: float = 0.98,
    device: str = "cpu",
    overwrite: bool = False,
) -> ExportResult:
    """Export weights (or a model) to a file of one of :data:`EXPORT_FORMATS`, optionally INT8
    and checked against PyTorch.

    Args:
        weights: anything :func:`~pspnet_lib.load_pretrained` reads, or a model.
        out: the file to write (atomically); its suffix should be the format's.
        format: ``"onnx"``, ``"exported-program"`` (``torch.export``, ``.pt2``) or ``"torchscript"``.
        dynamic: any batch size, height and width (False: fixed to the example shape).
        height, width, batch_size: the example (or fixed) shape in pixels; ``batch_size`` None: the
            format's default (2; TorchScript 1).
        preprocess, output: see :func:`~pspnet_lib.inference.export.export_onnx` (uint8 input
            with the normalisation inside; ``"logits"``, ``"probs"`` or ``"labels"``).
        opset, onnx_exporter: ONNX only; see :func:`~pspnet_lib.inference.export.export_onnx`.
        check: ONNX only: compare ONNX Runtime with PyTorch at the example size and (dynamic) one
            larger and one smaller size; with ``int8``, on held-out pictures of ``calibration``.
        int8: ONNX only: a static-quantized INT8 QDQ file
            (:func:`~pspnet_lib.inference.quantize.export_onnx_int8`) calibrated on
            ``calibration_count`` pictures of the folder ``calibration`` (a reproducible sample)
            with ``calibration_method``, ``float_layers`` (``"classifier"`` by default, or
            ``"first"``, ``"none"``, a list) kept in float; ``check`` compares on ``check_count``
            other pictures and passes at ``min_agreement`` argmax agreement.
        device: where to trace.
        overwrite: replace an existing ``out``.

    Returns an :class:`ExportResult` (``ok`` False when a check failed: the file is written).
    Raises :class:`~pspnet_lib.engine.config.SettingError` (a ``ValueError`` naming the argument),
    before anything is loaded, for an argument that does not apply to the format or is out of
    range, an existing ``out`` without ``overwrite``, or an ``out`` that is an input (the weights,
    a calibration picture).
    """
    if format not in EXPORT_FORMATS:
        raise SettingError(f"{{format}} {SettingError.quote(format)}: expected one of {', '.join(EXPORT_FORMATS)}")
    fmt = EXPORT_FORMATS[format]
    out = Path(out)
    sources = [] if isinstance(weights, nn.Module) else local_files(weights)
    # e.g. format torchscript over run/checkpoints/latest.pt: the weights themselves
    check_outputs_are_not_inputs({"out": out}, sources, input_roots=[calibration])
    if out.exists() and not overwrite:
        raise SettingError(
            f"{SettingError.escape(out)} already exists; pass {{overwrite=}} to replace it", overwrite=True
        )
    if out.suffix.lower() != fmt.suffix:
        logger.warning(
            "%s does not end in %s, the usual suffix of format %s (the file is written in that format anyway)",
            out,
            fmt.suffix,
            format,
        )
    options = dict(locals())
    _check_arguments(fmt, options)
    layers = _float_layers(float_layers) if int8 else ()
    if fmt.onnx:
        ex._require_onnx()  # fail before loading weights
        # The dynamo exporter's helpers log every optimisation pass at INFO level.
        for name in ("onnxscript", "onnx_ir"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if isinstance(weights, nn.Module):
        model = weights.to(device)
    else:
        from ..hub.loading import load_pretrained

        model = load_pretrained(weights, device=device)
    common = dict(height=height, width=width, preprocess=preprocess, output=output, dynamic=dynamic)
    batch = batch_size or fmt.batch_size
    if int8:
        return _export_int8(model, out, options, layers, batch, common)
    extra = {"opset": opset, "onnx_exporter": onnx_exporter} if fmt.onnx else {}
    fmt.write(model, out, batch_size=batch, **common, **extra)
    result = ExportResult(out, format, dynamic, out.stat().st_size)
    if check:
        low = ex.min_input_size(model)
        # The example size, one larger and one smaller, neither divisible by 8.
        sizes = (
            [
                (height, width),
                (height + 37, max(low, width - 21)),
                (max(low, height // 2 + 3), max(low, width // 2 + 5)),
            ]
            if dynamic
            else [(height, width)]
        )
        result.check_sizes, result.check_error = sizes, ex.check_onnx(out, model, sizes)
        result.ok = result.check_error <= 1e-4
    return result


def _export_int8(
    model: nn.Module, out: Path, o: dict[str, Any], layers: tuple[str, ...], batch: int, common: dict[str, Any]
) -> ExportResult:
    """Calibrate on a sample of the calibration folder, hold out other pictures for the check."""
    from .quantize import calibration_files, check_int8_onnx, export_onnx_int8

    files = calibration_files(o["calibration"])
    order = list(range(len(files)))
    random.Random(0).shuffle(order)
    count, check_count = o["calibration_count"], o["check_count"]
    calibrate = [files[i] for i in sorted(order[:count])]
    held_out = [files[i] for i in sorted(order[count : count + check_count])]
    export_onnx_int8(
        model,
        out,
        calibrate,
        calibrate_method=o["calibration_method"],
        float_layers=layers,
        opset=o["opset"],
        batch_size=batch,
        exporter=o["onnx_exporter"],
        **common,
    )
    info: dict[str, Any] = {"calibration": len(calibrate), "float_layers": list(layers), "held_out": len(held_out)}
    result = ExportResult(out, "onnx", common["dynamic"], out.stat().st_size, int8=info)
    if not o["check"]:
        return result
    if not held_out:
        logger.warning(
            "all %d pictures of %s were used for calibration; checking on them (not held out). "
            "Add pictures or lower the calibration count for a held-out check",
            len(files),
            o["calibration"],
        )
        held_out = calibrate[:check_count]
    info["checked_on"] = len(held_out)
    info["stats"] = stats = check_int8_onnx(out, model, held_out)
    result.ok = stats["argmax_agreement"] >= o["min_agreement"]
    return result
