"""Export a PSPNet to ONNX, ``torch.export`` and TorchScript, with dynamic batch, height and width.

The obstacle is the pyramid pooling: ONNX has no adaptive average pooling whose bins follow a
dynamic input size, so exporters either refuse ``nn.AdaptiveAvgPool2d`` (TorchScript-based ONNX:
"input size not accessible") or bake the example's bin boundaries into the graph (the
``torch.export``-based ONNX exporter: wrong indices at any other size). While any exporter (or
``torch.compile``) captures the model, :class:`~pspnet_lib.models.ppm.PoolingBranch` computes the
same bins as two averaging matrix products built from the input's shape
(:func:`~pspnet_lib.models.ppm.pyramid_adaptive_avg_pool2d`), whose shapes stay symbolic, so one
exported model serves every size, whether it is exported here or with a plain
``torch.export.export`` / ``torch.onnx.export`` / ``torch.jit.trace`` call.

    from pspnet_lib.inference.export import export_onnx
    export_onnx(model, "pspnet.onnx")                      # dynamic N, H, W
    export_onnx(model, "pspnet.onnx", preprocess=True, output="labels")   # uint8 in, labels out

See docs/export.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._files import atomic_output
from ..models.ppm import MatmulAdaptiveAvgPool2d, PoolingBranch
from .export_wrapper import OUTPUTS, ExportWrapper, example_input, input_description, preprocesses, wrap_for_export

__all__ = [
    "make_exportable",
    "exportable_pooling",
    "ExportWrapper",
    "min_input_size",
    "export_onnx",
    "export_program",
    "save_program",
    "export_torchscript",
    "check_onnx",
    "OUTPUTS",
    "ONNX_EXPORTERS",
]

logger = logging.getLogger(__name__)

ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")


def make_exportable(model: nn.Module, enable: bool = True) -> nn.Module:
    """Make every pyramid pooling branch of ``model`` pool with averaging matrices in eager calls too, in place.

    Not needed for exporting: every exporter (and ``torch.compile``) captures the matrix form by
    itself. With ``enable=True`` each :class:`~pspnet_lib.models.ppm.PoolingBranch` pools with
    :class:`~pspnet_lib.models.ppm.MatmulAdaptiveAvgPool2d`, so eager calls compute what an
    exported graph computes (equal to ``nn.AdaptiveAvgPool2d`` up to float rounding); ``False``
    restores ``nn.AdaptiveAvgPool2d``. Returns ``model``.
    """
    branches = [m for m in model.modules() if isinstance(m, PoolingBranch)]
    if not branches:
        logger.debug("make_exportable: %s has no pyramid pooling branches", type(model).__name__)
    for branch in branches:
        branch.set_exportable(enable)
    return model


@contextlib.contextmanager
def exportable_pooling(model: nn.Module) -> Iterator[nn.Module]:
    """Within the ``with`` block the model pools as :func:`make_exportable` makes it; afterwards as before."""
    branches = [m for m in model.modules() if isinstance(m, PoolingBranch)]
    previous = [b.pool for b in branches]
    try:
        for branch in branches:
            if not isinstance(branch.pool, MatmulAdaptiveAvgPool2d):
                branch.set_exportable(True)
        yield model
    finally:
        for branch, pool in zip(branches, previous):
            branch.pool = pool


def min_input_size(model: nn.Module) -> int:
    """Smallest height/width a dynamic ``torch.export`` graph accepts: ``output_stride + 1`` for ResNets.

    ``torch.export`` specialises on feature maps of size 1 (they broadcast differently), so the
    deepest feature map must be at least 2 pixels: 9 pixels at output stride 8. A timm backbone
    measures its own (``backbone.min_input_size(2)``: 16 for ConvNeXt at output stride 8, whose
    patchifying stem rounds down). Eager PyTorch and the TorchScript-based ONNX export have no
    such limit.
    """
    measured = getattr(getattr(model, "backbone", None), "min_input_size", None)
    if callable(measured):
        return int(measured(2))
    config = getattr(model, "config", None)
    return int(getattr(config, "output_stride", 8)) + 1


def _dims(model: nn.Module, dynamic: bool, height: int, width: int) -> dict[str, Any] | None:
    if not dynamic:
        return None
    smallest = min_input_size(model)
    if height < smallest or width < smallest:
        raise ValueError(
            f"a dynamic export needs an example of at least {smallest}x{smallest} pixels "
            f"(min_input_size(model): output_stride + 1 for ResNets), got {height}x{width}"
        )
    dim = torch.export.Dim
    if callable(getattr(getattr(model, "backbone", None), "min_input_size", None)):
        # A timm backbone: torch.export infers the size range itself (Dim.DYNAMIC: an error, never a silent
        # specialisation); some families' guards hold for every size >= the smallest, unprovable from a minimum.
        return {"images": {0: dim("batch", min=1), 2: dim.DYNAMIC, 3: dim.DYNAMIC}}
    return {"images": {0: dim("batch", min=1), 2: dim("height", min=smallest), 3: dim("width", min=smallest)}}


def export_program(
    model: nn.Module,
    *,
    dynamic: bool = True,
    height: int = 512,
    width: int = 512,
    batch_size: int = 2,
    preprocess: bool = False,
    output: str = "logits",
) -> torch.export.ExportedProgram:
    """``torch.export`` the model; with ``dynamic`` batch, height and width are symbolic.

    Args:
        model: a PSPNet in eval mode.
        dynamic: export with symbolic batch (>= 1), height and width (>= :func:`min_input_size`);
            False fixes the example's shape.
        height, width, batch_size: the example input (batch 2 so that batch is not specialised to 1).
        preprocess, output: see :class:`ExportWrapper`.

    Returns the :class:`torch.export.ExportedProgram`; ``program.module()(x)`` runs it and
    :func:`save_program` writes it to a ``.pt2`` file.
    """
    wrapper = wrap_for_export(model, preprocess, output)
    example = example_input(model, preprocess, batch_size, height, width)
    return torch.export.export(wrapper, (example,), dynamic_shapes=_dims(model, dynamic, height, width))


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Write an exported program to ``path`` (``.pt2``) atomically; load it with ``torch.export.load``."""
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.export.save(program, str(tmp))
    return path


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    height: int = 512,
    width: int = 512,
    batch_size: int = 1,
    preprocess: bool = False,
    output: str = "logits",
) -> Path:
    """Trace the model to TorchScript and save it (``torch.jit.load`` reads it, also from C++).

    The trace records the pooling bins and upsampling sizes as functions of the input
    shape, so the saved module runs at any batch size, height and width. ``torch.jit.script``
    is not supported (the model uses Python features TorchScript cannot compile); TorchScript is
    deprecated in PyTorch, so prefer :func:`export_program` for new deployments.
    """
    path = Path(path)
    wrapper = wrap_for_export(model, preprocess, output)
    example = example_input(model, preprocess, batch_size, height, width)
    with warnings.catch_warnings():
        # The model's input checks compare shapes in Python; the tracer warns that it records them
        # as constants. They are checks, not computation, so the traced graph stays correct.
        # TorchScript is deprecated upstream (FutureWarning); docs/export.md recommends torch.export.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        with atomic_output(path) as tmp:
            torch.jit.save(traced, str(tmp))
    return path


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the 'onnx' package (and 'onnxruntime' to run the result): pip install 'pspnet-lib[onnx]'"
        ) from exc
    return onnx


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic: bool = True,
    opset: int | None = None,
    height: int = 512,
    width: int = 512,
    batch_size: int = 2,
    preprocess: bool = False,
    output: str = "logits",
    exporter: str = "auto",
) -> Path:
    """Export the model to an ONNX file with input ``images`` and output ``output`` (e.g. ``logits``).

    Args:
        model: a PSPNet in eval mode.
        path: the ``.onnx`` file to write (atomically; weights are stored inside the file).
        dynamic: symbolic batch, height and width; False fixes the example's shape (for runtimes
            that need static shapes, e.g. some TensorRT/NPU toolchains).
        opset: ONNX opset; None takes the exporter's default (18 for ``dynamo``, 17 for ``torchscript``).
        height, width, batch_size: the example input traced through the model.
        preprocess, output: see :class:`ExportWrapper`.
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, needs ``onnxscript``),
            ``"torchscript"`` (the older tracing exporter) or ``"auto"``: dynamo when
            ``onnxscript`` is installed, falling back to torchscript if it fails.

    The model's ``config`` and ``pretrained_cfg`` (classes, palette, mean/std) are stored in the
    file's metadata (``pspnet_lib.config``, ``pspnet_lib.pretrained_cfg``, ``pspnet_lib.input``).
    """
    onnx = _require_onnx()
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; expected one of {', '.join(ONNX_EXPORTERS)}")
    path = Path(path)
    wrapper = wrap_for_export(model, preprocess, output)
    example = example_input(model, preprocess, batch_size, height, width)
    dims = _dims(model, dynamic, height, width)
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter == "dynamo" and not has_onnxscript:
        raise ImportError(
            "the dynamo ONNX exporter needs 'onnxscript': pip install onnxscript (or use exporter='torchscript')"
        )
    order = (
        ["dynamo", "torchscript"]
        if exporter == "auto" and has_onnxscript
        else [exporter if exporter != "auto" else "torchscript"]
    )
    if example.dtype in (torch.uint16, torch.uint32):  # a band spec's type the TorchScript exporter cannot take
        order = [name for name in order if name != "torchscript"]
        if not order:
            raise ValueError(
                f"the model takes {str(example.dtype)[6:]} stored values (its band spec), which only the dynamo ONNX "
                "exporter handles: pip install onnxscript and use exporter='dynamo' (or 'auto'; CLI: --exporter)"
            )
    out_axes = {0: "batch", 1: "height", 2: "width"} if output == "labels" else {0: "batch", 2: "height", 3: "width"}

    with atomic_output(path) as tmp:
        for attempt, name in enumerate(order):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    if name == "dynamo":
                        program = torch.onnx.export(
                            wrapper,
                            (example,),
                            dynamo=True,
                            dynamic_shapes=dims,
                            input_names=["images"],
                            output_names=[output],
                            opset_version=opset,
                            external_data=False,
                            verbose=False,
                        )
                        if program is None:  # only the TorchScript exporter returns nothing
                            raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
                        program.save(str(tmp))
                    else:
                        torch.onnx.export(
                            wrapper,
                            (example,),
                            str(tmp),
                            dynamo=False,
                            input_names=["images"],
                            output_names=[output],
                            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, output: out_axes}
                            if dynamic
                            else None,
                            opset_version=opset or 17,
                        )
                break
            except Exception as exc:  # noqa: BLE001 - an exporter bug must not hide the other exporter
                if attempt + 1 == len(order):
                    raise RuntimeError(f"ONNX export with the {name} exporter failed: {exc}") from exc
                logger.warning(
                    "the %s ONNX exporter failed (%s); trying the %s exporter", name, exc, order[attempt + 1]
                )
        logger.info("exported ONNX with the %s exporter", name)
        proto = onnx.load(str(tmp))
        config = getattr(model, "config", None)
        meta = {
            "pspnet_lib.config": json.dumps(config.to_dict()) if config is not None else "{}",
            "pspnet_lib.pretrained_cfg": json.dumps(getattr(model, "pretrained_cfg", None) or {}, default=str),
            "pspnet_lib.input": input_description(model, preprocess),
            "pspnet_lib.output": output,
        }
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
        onnx.save(proto, str(tmp))
    return path


def check_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    sizes: Sequence[tuple[int, int]] = ((512, 512),),
    *,
    batch_size: int = 1,
    seed: int = 0,
) -> float:
    """Run an exported ONNX model with ONNX Runtime and compare it with ``model``; the worst relative error.

    For each ``(height, width)`` a random input goes through both; the error is
    ``max|onnx - torch| / max|torch|``. Works for files written by :func:`export_onnx` with any
    ``preprocess``/``output`` setting (it reads them from the file's metadata).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("checking an ONNX file needs onnxruntime: pip install 'pspnet-lib[onnx]'") from exc
    onnx = _require_onnx()
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    preprocess = preprocesses(props.get("pspnet_lib.input", ""))
    output = props.get("pspnet_lib.output", "logits")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = wrap_for_export(model, preprocess, output)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for height, width in sizes:
        x = example_input(model, preprocess, batch_size, height, width, generator)
        with torch.no_grad():
            expected = wrapper(x).cpu()
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0])
        if got.shape != expected.shape:
            raise RuntimeError(
                f"ONNX output shape {tuple(got.shape)} differs from PyTorch's {tuple(expected.shape)} at {height}x{width}"
            )
        if output == "labels":
            error = float((got != expected).float().mean())
        else:
            error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
        logger.info("ONNX vs PyTorch at %dx%d: %.3g", height, width, error)
        worst = max(worst, error)
    return worst
