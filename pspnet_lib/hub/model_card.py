"""The model card (README.md) written by ``PSPNet.save_pretrained`` / ``push_to_hub``.

Its YAML header carries the license, library, tags and the upstream numbers as ``model-index``
(via ``huggingface_hub.EvalResult``); its body the classes, the preprocessing, the evaluation
protocol and the source of the weights.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..core.palette import padded_palette
from ..core.pretrained_cfg import PretrainedCfg

__all__ = ["generate_model_card", "hub_license"]

_LICENSES = {"apache-2.0": "apache-2.0", "bsd-3-clause": "bsd-3-clause", "mit": "mit"}

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

PSPNet (Zhao et al., *Pyramid Scene Parsing Network*, CVPR 2017) with a {{ backbone }}, for
{{ task_description }}. Saved with `pspnet_lib`'s `save_pretrained`:
`config.json` holds the architecture (`config`) and how to use the weights (`pretrained_cfg`),
`model.safetensors` the weights.

## Usage

```python
from pspnet_lib import load_pretrained

model = load_pretrained("hf-hub:{{ repo_id }}")      # or PSPNet.from_pretrained("{{ repo_id }}")
logits = model(x)  # x: (N, {{ in_channels }}, H, W) float, normalised as below; logits (N, {{ num_classes }}, H, W)
```

## Preprocessing

{{ preprocessing_text }}
{{ resize_text }}

## Evaluation protocol

{{ protocol_text }}

{{ metrics_text }}

## Classes

{{ classes_text }}

## Source and license

{{ source_text }}

## Citation

```bibtex
@inproceedings{zhao2017pspnet,
  title     = {Pyramid Scene Parsing Network},
  author    = {Zhao, Hengshuang and Shi, Jianping and Qi, Xiaojuan and Wang, Xiaogang and Jia, Jiaya},
  booktitle = {CVPR},
  year      = {2017}
}
```
"""


def hub_license(license: str | None) -> str | None:
    """The Hub's license identifier for a license name (``"Apache-2.0"`` -> ``"apache-2.0"``)."""
    if not license:
        return None
    return _LICENSES.get(license.lower(), "other")


def _preprocessing_text(cfg: PretrainedCfg) -> str:
    """How inputs become the model's input: the photo rules, or the band spec (``pretrained_cfg["bands"]``)."""
    mean, std = [round(v, 4) for v in cfg.mean], [round(v, 4) for v in cfg.std]
    if cfg.bands is None:
        what = "RGB image" if cfg.in_channels == 3 else f"{cfg.in_channels}-channel image"
        return f"{what} scaled to [0, 1], normalised with mean {mean} and std {std}."
    spec = cfg.bands.to_dict()
    nodata = (
        f"; nodata {spec['nodata']} enters as the band's mean and is labelled ignore_index" if "nodata" in spec else ""
    )
    return (
        f"{cfg.in_channels} bands stored as {spec['dtype']}, taken as stored * scale + offset (scale {spec['scale']}, "
        f"offset {spec['offset']}), normalised with mean {mean} and std {std}{nodata} (pretrained_cfg['bands'], "
        "pspnet_lib.core.bands.normalise)."
    )


def _protocol_text(cfg: PretrainedCfg) -> str:
    if not cfg.is_set("protocol"):
        return "Not recorded for these weights; whole-image inference at the input size is the default."
    inference = cfg.protocol
    resize = inference.resize
    first = (
        f"Resize keeping the aspect ratio so that the image fits {max(resize)} x {min(resize)} (long x short side), then "
        if resize
        else ""
    )
    if inference.mode == "slide" and inference.crop and inference.stride:
        crop, stride = inference.crop, inference.stride
        body = f"sliding-window inference with {crop[0]}x{crop[1]} windows every {stride[0]}x{stride[1]} pixels (logits averaged)"
    else:
        body = "whole-image inference"
    text = first + body + "; logits are resized back to the original image size."
    tta = cfg.tta
    if tta:
        text += (
            f" Multi-scale + flip test: scales {list(tta.scales)} of that size, each also mirrored, softmax averaged."
        )
    return text


def _metrics_text(cfg: PretrainedCfg) -> str:
    metrics = cfg.metrics or {}
    if metrics.get("mIoU") is None:
        return ""
    ms = metrics.get("mIoU_ms_flip")
    rows = ["| metric | value |", "|---|---|", f"| mIoU (single scale) | {metrics['mIoU']:.2f} |"]
    if ms is not None:
        rows.append(f"| mIoU (multi-scale + flip) | {ms:.2f} |")
    source = metrics.get("source")
    tail = f"\n\nNumbers reported upstream on the {metrics.get('split', 'val')} split" + (
        f" ({source})." if source else "."
    )
    return "\n".join(rows) + tail


def _classes_text(cfg: PretrainedCfg, num_classes: int) -> str:
    classes = cfg.classes
    if not classes:
        return f"{num_classes} classes; no names recorded."
    palette = padded_palette(cfg.palette, len(classes))  # the colours predict draws
    rows = ["| index | class | colour (RGB) |", "|---:|---|---|"]
    for i, name in enumerate(classes):
        rows.append(f"| {i} | {name} | {palette[i]} |")
    lines = ["\n".join(rows)]
    if cfg.extra.get("label_convention"):
        lines.append(f"Annotation files: {cfg.extra['label_convention']}")
    if cfg.is_set("ignore_index"):
        lines.append(f"Ignore index: {cfg.ignore_index}.")
    return "\n\n".join(lines)


def _task_description(dataset_title: str | None, num_classes: int) -> str:
    if not dataset_title:
        return f"semantic segmentation ({num_classes} classes)"
    if "classes" in dataset_title:
        return f"semantic segmentation of {dataset_title}"
    return f"semantic segmentation of {dataset_title} ({num_classes} classes)"


def generate_model_card(model: Any, repo_id: str | None = None, **kwargs: Any) -> ModelCard:
    """A :class:`huggingface_hub.ModelCard` describing ``model`` (a PSPNet) and its ``pretrained_cfg``."""
    cfg = PretrainedCfg.of(model)
    config = model.config
    name = cfg.name or kwargs.pop("model_name", None) or f"pspnet-{config.backbone}"
    dataset = cfg.dataset
    dataset_title = cfg.extra.get("dataset_title") or dataset
    metrics = cfg.metrics or {}
    eval_results = []
    if dataset and metrics.get("mIoU") is not None:
        common = dict(
            task_type="image-segmentation",
            task_name="Semantic Segmentation",
            dataset_type=dataset,
            dataset_name=dataset_title,
            dataset_split=metrics.get("split", "val"),
            source_name="mmsegmentation model zoo" if "mmsegmentation" in str(metrics.get("source", "")) else None,
            source_url=metrics.get("source"),
        )
        eval_results.append(
            EvalResult(
                metric_type="mean_iou", metric_name="mIoU (single scale)", metric_value=metrics["mIoU"], **common
            )
        )
        if metrics.get("mIoU_ms_flip") is not None:
            eval_results.append(
                EvalResult(
                    metric_type="mean_iou",
                    metric_name="mIoU (multi-scale + flip)",
                    metric_value=metrics["mIoU_ms_flip"],
                    **common,
                )
            )
    info = model._hub_mixin_info
    card_data = ModelCardData(**info.model_card_data.to_dict())
    card_data.license = hub_license(cfg.license)
    card_data.model_name = name
    card_data.eval_results = eval_results or None
    card_data.pipeline_tag = "image-segmentation"
    if config.backbone.startswith("timm:"):
        backbone = f"{config.backbone} backbone (a timm encoder, output stride {config.output_stride})"
    else:
        stem = "deep (3x3 convs)" if config.stem == "deep" else "standard (7x7 conv)"
        backbone = f"dilated {config.backbone} backbone ({stem} stem, output stride {config.output_stride})"
    resize = cfg.protocol.resize
    source = cfg.source or cfg.url or "trained or converted by the owner of this repository"
    source_lines = [f"Weights: {source}."]
    if cfg.url:
        source_lines.append(f"Original checkpoint: {cfg.url} (sha256 {cfg.sha256 or '?'}...).")
    if cfg.extra.get("upstream_config"):
        source_lines.append(f"Upstream config: {cfg.extra['upstream_config']}.")
    source_lines.append(
        f"License: {cfg.license or 'not specified'}."
        + (" The training data has its own terms of use." if dataset else "")
    )
    return ModelCard.from_template(
        card_data=card_data,
        template_str=_TEMPLATE,
        title=name,
        backbone=backbone,
        task_description=_task_description(dataset_title, config.num_classes),
        repo_id=repo_id or cfg.extra.get("hf_hub_id") or "<org>/<repo>",
        num_classes=config.num_classes,
        in_channels=cfg.in_channels,
        preprocessing_text=_preprocessing_text(cfg),
        resize_text=(
            f"The published numbers resize each image to fit {max(resize)} x {min(resize)} first (see below)."
            if resize
            else ""
        ),
        protocol_text=_protocol_text(cfg),
        metrics_text=_metrics_text(cfg),
        classes_text=_classes_text(cfg, config.num_classes),
        source_text=" ".join(source_lines),
        **kwargs,
    )
