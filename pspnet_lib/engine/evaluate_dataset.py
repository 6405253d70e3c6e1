"""``evaluate_dataset``: score weights on a dataset split, the workflow of ``pspnet eval``.

:func:`~pspnet_lib.engine.evaluate.evaluate` scores a model on a ``Dataset``; this function does the
whole job from names: load the weights (any source of :func:`~pspnet_lib.load_pretrained`), pick the
dataset the weights were trained on when none is named, build its evaluation split, apply the
weights' stored protocol with the caller's changes, score (1..N processes under torchrun) and write
the optional JSON and confusion-matrix outputs atomically.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._files import atomic_write_bytes, local_files
from ..core.inference_protocol import InferenceProtocol
from ..core.pretrained_cfg import PretrainedCfg
from ..core.setting_error import SettingError, check_outputs_are_not_inputs
from ..data import DATASETS, DEFAULT_SPLITS, ZOO_DATASETS, build_dataset, eval_transforms
from ..hub.loading import load_pretrained
from . import distributed as D
from .evaluate import evaluate
from .metrics import format_metrics_table, metrics_to_json
from .run import check_dataset_options, generic_classes

__all__ = ["DatasetEvaluation", "evaluate_dataset"]

logger = logging.getLogger(__name__)

_AMP: dict[str | None, torch.dtype | None] = {None: None, "none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DatasetEvaluation:
    """What :func:`evaluate_dataset` measured.

    Attributes:
        weights: the weights as named by the caller.
        dataset: the dataset key that scored them (``"ade20k"``).
        split: the split scored (None: every pair of a ``folder`` dataset).
        images: how many images were scored.
        protocol: the inference protocol that ran.
        metrics: :func:`~pspnet_lib.engine.evaluate.evaluate`'s dict (``mIoU``, ``mAcc``, ``aAcc``
            as fractions in [0, 1], per-class ``IoU``/``Acc``, ``confusion_matrix``, ``precision``).
        classes: the dataset's class names (index = class).
        is_main: whether this process is rank 0 (the one that writes and reports) under torchrun.
    """

    weights: str
    dataset: str
    split: str | None
    images: int
    protocol: InferenceProtocol
    metrics: dict[str, Any]
    classes: list[str]
    is_main: bool = True

    def summary(self) -> str:
        """One line: what was scored, how (``weights on ade20k validation (2000 images, fp32, whole):``)."""
        p = self.protocol
        scales = f", scales {','.join(map(str, p.scales))}" if p.scales != (1.0,) else ""
        return (
            f"{self.weights} on {self.dataset} {self.split or 'all'} ({self.images} images, "
            f"{self.metrics['precision']}, {p.mode}{scales}{', flip' if p.flip else ''}):"
        )

    def table(self) -> str:
        """The per-class table with the mIoU / mAcc / aAcc line (percentages)."""
        return format_metrics_table(self.metrics, self.classes)


def _protocol(cfg: PretrainedCfg, protocol: InferenceProtocol | Mapping[str, Any] | None) -> InferenceProtocol:
    if isinstance(protocol, InferenceProtocol):
        return protocol
    changes = {k: v for k, v in (protocol or {}).items() if v is not None}
    try:
        return cfg.protocol.replace(**changes)
    except (TypeError, ValueError) as exc:  # the stored protocol was valid: the changes broke it
        raise SettingError(f"{SettingError.escape(exc)} (set by {{protocol}})") from None


def _outputs(
    weights: str, data_root: str, options: Mapping[str, Any], json_path: str | None, picture: str | None
) -> None:
    if picture and not str(picture).lower().endswith(".png"):
        raise SettingError(
            "{confusion_matrix_path} " + SettingError.escape(picture) + ": the picture is a PNG; name a .png file"
        )
    classes = options.get("classes")
    inputs = [*local_files(weights), *([classes] if isinstance(classes, (str, os.PathLike)) else [])]
    # never over an input: the weights, the class file, any file of the data root
    check_outputs_are_not_inputs(
        {"json_path": json_path, "confusion_matrix_path": picture}, inputs, input_roots=[data_root]
    )


def evaluate_dataset(
    weights: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str | None = None,
    protocol: InferenceProtocol | Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
    num_workers: int = 0,
    json_path: str | os.PathLike | None = None,
    confusion_matrix_path: str | os.PathLike | None = None,
) -> DatasetEvaluation:
    """Score ``weights`` on a dataset split: per-class IoU and accuracy, mIoU, mAcc, aAcc.

    Args:
        weights: anything :func:`~pspnet_lib.load_pretrained` reads (zoo name, ``hf-hub:`` id,
            folder, checkpoint, Trainer ``.pt``).
        data_root: the dataset's directory (the layout ``--dataset`` reads; see docs/datasets.md).
        dataset: a key of :data:`~pspnet_lib.data.DATASETS` (or a zoo dataset key such as
            ``voc12aug``); None: the dataset the weights record (zoo weights do).
        split: the split to score; None: the dataset's validation split; ``"all"``: every
            image/mask pair of a ``folder`` dataset.
        protocol: an :class:`InferenceProtocol` used as it is, or a mapping of protocol fields
            (``{"mode": "slide", "crop": 512, "stride": 341}``; None values are not given)
            applied over the weights' stored protocol; None: the stored protocol.
        dataset_options: extra ``build_dataset`` arguments (``classes``, ``val_fraction``, ... for
            ``folder``; a ``classes`` path is read as a class file).
        device: where to run (default: CUDA if available, under torchrun each process's GPU).
        amp: ``"bf16"`` / ``"fp16"`` autocast, ``"none"`` or None: full precision.
        num_workers: DataLoader workers.
        json_path: also write the metrics (per class, with the confusion matrix) as JSON here.
        confusion_matrix_path: also draw the confusion matrix as a PNG here.

    Both outputs are written atomically by rank 0, and refused before anything runs when they
    would replace an input (the weights, a class file, any file under ``data_root``).

    Returns a :class:`DatasetEvaluation`. Raises :class:`~pspnet_lib.engine.config.SettingError`
    (a ``ValueError``, one line naming the argument) for a missing ``data_root``, no dataset
    known, a split or option the dataset does not take, a class count that differs from the
    model's, a protocol change that is invalid, or an output that is not a ``.png`` / is an input.
    """
    weights, data_root = str(weights), str(data_root)
    if not os.path.isdir(data_root):  # before loading (or downloading) the weights
        raise SettingError(
            "{data_root} " + SettingError.escape(data_root) + ": no such folder (pass the dataset's directory)"
        )
    options = dict(dataset_options or {})
    json_path = str(json_path) if json_path else None
    picture = str(confusion_matrix_path) if confusion_matrix_path else None
    _outputs(weights, data_root, options, json_path, picture)
    if amp not in _AMP:
        raise SettingError(f"{{amp}} {SettingError.quote(amp)}: expected one of none, bf16, fp16")
    info = D.init_distributed(None if device is None else str(device))
    try:
        model = load_pretrained(weights).to(info.device)
        cfg = PretrainedCfg.of(model, what=weights)
        if not dataset:
            # Zoo weights (or a file recognised as one) know the dataset that scores them.
            dataset = ZOO_DATASETS.get(str(cfg.dataset))
            if not dataset:
                raise SettingError(
                    f"{SettingError.escape(weights)} does not say which dataset it was trained on: pass "
                    f"{{dataset}} {{{{{','.join(DATASETS)}}}}}"
                )
            logger.info("scoring on dataset %s, the dataset of %s", dataset, weights)
        dataset = ZOO_DATASETS.get(dataset, dataset)
        run_protocol = _protocol(cfg, protocol)
        chosen = split if split or dataset not in DEFAULT_SPLITS else DEFAULT_SPLITS[dataset][1]
        if chosen == "all":
            if dataset != "folder":
                raise SettingError("{split} all applies to {dataset} folder only; pass a split name of the dataset")
            chosen = None  # every image/mask pair of the folder
        check_dataset_options(dataset, options)
        if (
            dataset == "folder"
            and "classes" not in options
            and cfg.classes
            and not os.path.isfile(os.path.join(data_root, "classes.txt"))
        ):
            options["classes"] = list(cfg.classes)  # the model's own class names
        num_classes = model.config.num_classes
        if dataset == "folder":
            generic_classes(data_root, num_classes, options)
            options["ignore_index"] = cfg.ignore_index  # what the model was trained with (--ignore-index)
            options.update(in_channels=cfg.in_channels, band_spec=cfg.bands)  # the bands as the model reads them
        transforms = eval_transforms(cfg.mean, cfg.std, normalize=False, band_spec=cfg.bands)  # evaluate normalises
        data = build_dataset(dataset, data_root, chosen, transforms, **options)
        if data.num_classes != num_classes:
            raise SettingError(
                f"the model predicts {num_classes} classes but the {dataset} dataset has {data.num_classes}; "
                "evaluate on the dataset the model was trained for"
            )
        metrics = evaluate(
            model,
            data,
            protocol=run_protocol,
            device=info.device,
            amp_dtype=_AMP[amp],
            num_workers=num_workers,
        )
    finally:
        D.cleanup(info)
    result = DatasetEvaluation(
        weights, dataset, chosen, len(data), run_protocol, metrics, list(data.classes), info.is_main
    )
    if info.is_main and json_path:
        atomic_write_bytes(json_path, (metrics_to_json(metrics, result.classes) + "\n").encode())
    if info.is_main and picture:
        from ..inference.visualize import draw_confusion_matrix

        buffer = io.BytesIO()
        title = f"{weights} on {dataset} {chosen or 'all'}: confusion matrix"
        draw_confusion_matrix(metrics["confusion_matrix"], result.classes, title).save(buffer, format="PNG")
        atomic_write_bytes(picture, buffer.getvalue())
    return result
