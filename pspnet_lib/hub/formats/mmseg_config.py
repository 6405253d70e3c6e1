"""What an mmsegmentation checkpoint's own config text says about the model: read safely, never run.

mmsegmentation 0.x stores the training config's Python source in ``checkpoint["meta"]["config"]``
(1.x / mmengine in ``meta["cfg"]``): top-level assignments such as ::

    model = dict(type='EncoderDecoder',
                 backbone=dict(type='ResNetV1c', depth=50, dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), ...),
                 decode_head=dict(type='PSPHead', pool_scales=(1, 2, 3, 6), num_classes=19, align_corners=True, ...),
                 test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
    test_pipeline = [dict(type='LoadImageFromFile'),
                     dict(type='MultiScaleFlipAug', img_scale=(2049, 1025), transforms=[dict(type='Resize', keep_ratio=True), ...])]

That text comes from a downloaded file, so it is data: :func:`parse_config_text` reads it with
:mod:`ast` and evaluates only literals (numbers, strings, booleans, None, tuples, lists, dicts),
``dict(key=value, ...)`` calls (also ``**name`` of an earlier dict) and names bound earlier in
the same text. Nothing is imported,
called or executed; an assignment holding anything else (``range(0, 8)``, ``{{_base_.x}}``,
lambdas) is skipped. The text is limited to :data:`MAX_CONFIG_CHARS` characters and
:data:`MAX_NODES` syntax nodes, and what it expands to (a name used inside another counts its
values again: a pipeline nested in itself by name 64 times would have 2^63 paths) to the
``config_values`` limit of :mod:`pspnet_lib.core.limits`.

:func:`settings_from_config` turns the parsed assignments into :class:`~pspnet_lib.PSPNetConfig`
fields (``align_corners``, ``num_classes``, ``backbone``, ``stem``, ``stem_channels``, ``base_channels``,
``output_stride``, ``dilations``, ``contract_dilation``, ``bins``) and ``pretrained_cfg`` entries
(``inference``: ``mode``/``resize``/``crop``/``stride``; ``mean``/``std`` on the 0..1 scale).
"""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from ...core.limits import check_limit, get_limit

__all__ = ["parse_config_text", "settings_from_config", "read_checkpoint_config", "MAX_CONFIG_CHARS", "MAX_NODES"]

logger = logging.getLogger(__name__)

#: Longest config text read (real ones are 5-20 kB); longer ones are ignored with a warning.
MAX_CONFIG_CHARS = 1_000_000
#: Most syntax nodes evaluated in one text (bounds time and memory on hostile input).
MAX_NODES = 200_000

# mmsegmentation's backbone types: ResNetV1c has the deep 3x3 stem, ResNet (the "b" models) the 7x7 one.
_DEEP_STEM_TYPES = {"ResNetV1c": True, "ResNet": False, "ResNetV1b": False}


# Per-stage strides and dilations of each output stride (pspnet_lib.models.resnet.resnet_stage_plan).
_STAGE_STRIDES = {8: (1, 2, 1, 1), 16: (1, 2, 2, 1), 32: (1, 2, 2, 2)}
_STAGE_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}


class _Unsupported(Exception):
    """A node that is not a plain literal / dict() call: its assignment is skipped."""


class _Evaluator:
    """Evaluates literal assignments; ``weights[id(container)]`` is the number of values the container
    expands to (each use of a name inside it counted again), bounded by the ``config_values`` limit."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {}
        self.nodes = 0
        self.weights: dict[int, int] = {}
        self.limit = get_limit("config_values")

    def weigh(self, container: Any, children: Any) -> Any:
        weight = 1 + sum(self.weights.get(id(child), 1) for child in children)
        if weight > self.limit:
            check_limit(
                "config_values",
                weight,
                "the config text (names nested in names, e.g. a test pipeline reused as its own transforms)",
            )
        self.weights[id(container)] = weight
        return container

    def value(self, node: ast.AST) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ValueError(f"the config text has more than {MAX_NODES} syntax nodes")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (str, int, float, bool, type(None))):
                return node.value
            raise _Unsupported(type(node.value).__name__)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.value(e) for e in node.elts]
            return self.weigh(tuple(items) if isinstance(node, ast.Tuple) else items, items)
        if isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
            if len(keys) != len(node.keys):  # {**other}
                raise _Unsupported("dict unpacking")
            made = {self._key(k): self.value(v) for k, v in zip(keys, node.values)}
            return self.weigh(made, [*made.keys(), *made.values()])
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
                raise _Unsupported("call")
            out: dict[str, Any] = {}
            for keyword in node.keywords:
                value = self.value(keyword.value)
                if keyword.arg is not None:
                    out[keyword.arg] = value
                elif isinstance(value, dict):  # dict(type='Normalize', **img_norm_cfg): an earlier dict
                    out.update(value)
                else:
                    raise _Unsupported("keyword unpacking of a non-dict")
            return self.weigh(out, list(out.values()))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
            raise _Unsupported("unary operator")
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            if node.id in ("True", "False", "None"):  # pragma: no cover - Constant since Python 3.8
                return {"True": True, "False": False, "None": None}[node.id]
            raise _Unsupported(f"name {node.id}")
        raise _Unsupported(type(node).__name__)

    def _key(self, node: ast.AST) -> Any:
        key = self.value(node)
        if not isinstance(key, (str, int, float, bool, type(None), tuple)):
            raise _Unsupported("unhashable key")
        return key


def parse_config_text(text: str) -> dict[str, Any]:
    """The top-level ``name = <literal>`` assignments of an mmsegmentation config's source text.

    Only literals, ``dict(...)`` calls and earlier names are evaluated (see the module
    docstring); other assignments are skipped. Tuples stay tuples.

    Raises:
        ValueError: text longer than :data:`MAX_CONFIG_CHARS`, not valid Python, with more than
            :data:`MAX_NODES` nodes, or expanding to more values than the ``config_values`` limit
            (a :class:`~pspnet_lib.core.limits.ResourceLimitError`).
    """
    if not isinstance(text, str):
        raise ValueError(f"the config must be text, got {type(text).__name__}")
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError(f"the config text has {len(text)} characters, more than the {MAX_CONFIG_CHARS} read")
    try:
        tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"the config text is not valid Python ({type(exc).__name__}: {exc})") from None
    evaluator = _Evaluator()
    skipped = []
    for statement in tree.body:
        if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
            continue
        target = statement.targets[0]
        if not isinstance(target, ast.Name):
            continue
        try:
            evaluator.names[target.id] = evaluator.value(statement.value)
        except _Unsupported:
            skipped.append(target.id)
        except RecursionError:
            raise ValueError("the config text nests too deeply") from None
    if skipped:
        logger.debug("config assignments not read (not plain literals): %s", ", ".join(skipped[:10]))
    return evaluator.names


def _pair(value: Any) -> list[int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value, value]
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return [int(v) for v in value]
    return None


#: Nesting of pipelines searched for the resize (mmseg's: MultiScaleFlipAug -> transforms, 2 levels).
_MAX_PIPELINE_DEPTH = 4


def _find_resize(pipeline: Any, depth: int = 0) -> tuple[list[int] | None, bool | None]:
    """``(img_scale, keep_ratio)`` of the test pipeline's resize (0.x MultiScaleFlipAug or 1.x Resize)."""
    scale, keep_ratio = None, None
    if not isinstance(pipeline, (list, tuple)) or depth > _MAX_PIPELINE_DEPTH:
        return None, None
    for step in pipeline:
        if not isinstance(step, Mapping):
            continue
        kind = step.get("type")
        if kind == "MultiScaleFlipAug":
            found = step.get("img_scale", step.get("scale"))
            scale = (
                _pair(found)
                if _pair(found)
                else (_pair(found[0]) if isinstance(found, list) and len(found) == 1 else None)
            )
            inner_scale, inner_keep = _find_resize(step.get("transforms"), depth + 1)
            scale = scale or inner_scale
            keep_ratio = inner_keep if inner_keep is not None else keep_ratio
        elif kind == "Resize":
            scale = _pair(step.get("scale", step.get("img_scale"))) or scale
            if "keep_ratio" in step:
                keep_ratio = bool(step["keep_ratio"])
    return scale, keep_ratio


def settings_from_config(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config fields, pretrained_cfg entries)`` that an mmsegmentation config states.

    Only what the config actually says is returned (no defaults filled in). A PSPNet config is
    expected (``decode_head.type == 'PSPHead'``); for other heads only the protocol and
    normalisation are returned.
    """
    config: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    model = _mapping(cfg.get("model"))
    head = _mapping(model.get("decode_head"))
    if head.get("type") in (None, "PSPHead"):
        if isinstance(head.get("align_corners"), bool):
            config["align_corners"] = head["align_corners"]
        if isinstance(head.get("num_classes"), int) and not isinstance(head["num_classes"], bool):
            config["num_classes"] = head["num_classes"]
        scales = head.get("pool_scales")
        if isinstance(scales, (list, tuple)) and scales and all(isinstance(s, int) and s > 0 for s in scales):
            config["bins"] = [int(s) for s in scales]
        backbone = _mapping(model.get("backbone"))
        if isinstance(backbone.get("depth"), int):
            config["backbone"] = f"resnet{backbone['depth']}"
        kind = backbone.get("type")
        deep = backbone.get("deep_stem", _DEEP_STEM_TYPES.get(kind) if isinstance(kind, str) else None)
        if isinstance(deep, bool):
            config["stem"] = "deep" if deep else "standard"
        if isinstance(backbone.get("stem_channels"), int):
            config["stem_channels"] = backbone["stem_channels"]
        if isinstance(backbone.get("base_channels"), int):
            config["base_channels"] = backbone["base_channels"]
        if isinstance(backbone.get("in_channels"), int):
            config["in_channels"] = backbone["in_channels"]
        if isinstance(backbone.get("contract_dilation"), bool):
            config["contract_dilation"] = backbone["contract_dilation"]
        strides, dilations = backbone.get("strides"), backbone.get("dilations")
        if (
            isinstance(strides, (list, tuple))
            and len(strides) == 4
            and all(isinstance(s, int) and s > 0 for s in strides)
        ):
            # the stem and the max-pool reduce by 4, each stage by its stride; the strides of an
            # output stride are fixed (resnet_stage_plan), so others cannot be built here
            output_stride = 4 * math.prod(strides[1:])
            if _STAGE_STRIDES.get(output_stride) == tuple(strides):
                config["output_stride"] = output_stride
            else:
                logger.warning(
                    "the config's backbone strides %s are not those of output stride 8, 16 or 32; ignored", strides
                )
        if (
            isinstance(dilations, (list, tuple))
            and len(dilations) == 4
            and all(isinstance(d, int) and d > 0 for d in dilations)
        ):
            dilations = tuple(int(d) for d in dilations)
            # only a departure from the output stride's usual dilations is a setting (D32: strided and dilated)
            if dilations != _STAGE_DILATIONS.get(config.get("output_stride", 8)):
                config["dilations"] = list(dilations)
    test_cfg = model.get("test_cfg") if isinstance(model.get("test_cfg"), Mapping) else cfg.get("test_cfg")
    inference: dict[str, Any] = {}
    if isinstance(test_cfg, Mapping) and test_cfg.get("mode") in ("whole", "slide"):
        inference["mode"] = test_cfg["mode"]
        if test_cfg["mode"] == "slide":
            crop, stride = _pair(test_cfg.get("crop_size")), _pair(test_cfg.get("stride"))
            if crop and stride:
                inference["crop"], inference["stride"] = crop, stride
            else:
                inference.pop("mode")
    pipeline = cfg.get("test_pipeline")
    data = _mapping(cfg.get("data"))
    if pipeline is None and isinstance(data.get("test"), Mapping):
        pipeline = data["test"].get("pipeline")
    scale, keep_ratio = _find_resize(pipeline)
    if scale is not None and keep_ratio is not False:
        # mmseg's keep-ratio resize fits the image into (long, short) = sorted img_scale
        inference["resize"] = sorted(scale, reverse=True)
    elif scale is not None:
        logger.info(
            "the config's test resize to exactly %s (keep_ratio=False) is not reproduced; using no resize", scale
        )
    if inference:
        extra["inference"] = inference
    norm = cfg.get("img_norm_cfg")
    if not isinstance(norm, Mapping) and isinstance(model.get("data_preprocessor"), Mapping):
        norm = model["data_preprocessor"]
    if isinstance(norm, Mapping):
        mean, std = norm.get("mean"), norm.get("std")
        if _numbers(mean) and _numbers(std) and len(mean) == len(std):
            extra["mean"] = [round(float(m) / 255.0, 6) for m in mean]  # mmseg writes them on the 0..255 scale
            extra["std"] = [round(float(s) / 255.0, 6) for s in std]
    return config, extra


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping (a config section), else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _numbers(values: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return (
        isinstance(values, (list, tuple))
        and bool(values)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    )


def read_checkpoint_config(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """:func:`settings_from_config` of the config text in an mmseg checkpoint's ``meta``, or None.

    ``meta["config"]`` (mmsegmentation 0.x) or ``meta["cfg"]`` (1.x). A text that cannot be
    read is logged as a warning and ignored (the weights still load, with layout defaults).
    """
    if not isinstance(meta, Mapping):
        return None
    text = meta.get("config", meta.get("cfg"))
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return settings_from_config(parse_config_text(text))
    except ValueError as exc:
        logger.warning("ignoring the checkpoint's meta config: %s", exc)
        return None
