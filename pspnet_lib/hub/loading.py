"""The builder of the one loader: ``load_pretrained``, and ``PSPNet.from_pretrained``'s model.

One call from any released checkpoint (or your own) to a ready PSPNet. The loader's parts
(docs/architecture.md, "One loader"): :mod:`~pspnet_lib.hub.sources` turns a source into weights
(zoo, ``hf-hub:``, URL, paths), :mod:`~pspnet_lib.hub.checkpoint_files` reads files and folders
into a :class:`~pspnet_lib.hub.checkpoint_files.Resolved` and checks it,
:mod:`~pspnet_lib.hub.load_report` copies the weights into a model with a report; this module
builds the model (the fit checked on the meta device first).
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.limits import ResourceLimitError
from ..models.encoders import is_timm_backbone
from ..models.pspnet import PSPNet, PSPNetConfig
from .checkpoint_files import (
    CONFIG_FIELDS,
    Resolved,
    check_model_budget,
    check_tensors,
    default_pretrained_cfg,
    read_pretrained_folder,
    validate_pretrained_cfg,
    verify_resolved,
)
from .formats.serialization import CheckpointError, read_safetensors
from .hf import CONFIG_NAME, WEIGHTS_NAME, hf_file
from .input_conv import adapt_state_dict, adapted_input_stats
from .load_report import CLASSIFIER_KEYS, build_loaded, load_weights
from .sources import resolve_source
from .timm_weights import build_with_timm_weights
from .zoo.registry import get_weight, resolve_name

__all__ = ["load_pretrained", "build_with_backbone_weights", "from_pretrained_files"]

logger = logging.getLogger(__name__)


#: pretrained_cfg entries that describe the original classes; dropped when num_classes changes.
_CLASS_SPECIFIC = (
    "classes",
    "palette",
    "metrics",
    "dataset",
    "dataset_title",
    "reduce_zero_label",
    "label_convention",
    "num_classes",
)


def load_pretrained(
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    aux: bool | None = None,
    strict: bool = True,
    format: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    progress: bool | None = None,
    trust_pickle: bool = False,
    pretrained_cfg: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    rgb_bands: Sequence[int] | None = None,
    **overrides: Any,
) -> PSPNet:
    """Build a PSPNet and load weights from any supported source.

    Args:
        source: one of

            * a zoo name or alias (``list_pretrained()``), e.g. ``"pspnet_r50-d8_ade20k-512x512-80k"``:
              downloaded once, verified, converted and cached as safetensors;
            * ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a repository written by
              ``save_pretrained`` / ``push_to_hub`` (through ``huggingface_hub``'s cache);
            * a local ``save_pretrained`` folder, a ``.safetensors`` file, or a checkpoint file
              of another layout (mmsegmentation, the author's semseg, torchvision or
              mmsegmentation ImageNet ResNets, ...), or a training checkpoint (``.pt``) written
              by the Trainer (architecture and ``pretrained_cfg`` as recorded in it);
            * an ``https://`` / ``http://`` / ``file://`` URL of any of those files.
        num_classes: replace both classifiers with freshly initialised ones for ``num_classes``
            classes (everything else is loaded). Required for backbone-only weights.
        aux: keep (True) or drop (False) the auxiliary head; default: as in the weights.
        strict: any missing, unexpected or mis-shaped key (other than the classifiers being
            replaced) is an error listing the first offenders; False loads what fits.
        format: the checkpoint layout (``mmseg``, ``semseg``, ``torchvision``,
            ``mmseg_backbone``, ``semseg_backbone``, ``pspnet_lib``) when detection from the keys
            should be overridden; files only.
        revision: Hub branch, tag or commit (``hf-hub:`` sources only).
        cache_dir: for zoo names and URLs the folder of downloads and converted files (default
            ``torch.hub.get_dir()/checkpoints``); for ``hf-hub:`` the Hugging Face cache.
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        progress: a download progress bar: None = on a terminal only (and not with TQDM_DISABLE or
            HF_HUB_DISABLE_PROGRESS_BARS set), True = always, False = never.
        trust_pickle: allow arbitrary pickled objects in ``.pth`` files. Only for files you
            trust: unpickling can run code. Off by default; the default reader accepts tensors,
            containers, numpy scalars and OpenMMLab bookkeeping objects (as inert placeholders).
        pretrained_cfg: entries merged over the loaded ``model.pretrained_cfg`` (e.g. your
            ``classes`` for a bare checkpoint).
        device: move the model there (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); checked
            before anything is read or downloaded: a device this machine lacks is a
            ``RuntimeError``. Default: the CPU.
        rgb_bands: with ``in_channels=N``: copy the RGB weights of the first convolution into
            these band positions (0-based red, green, blue, e.g. ``(3, 2, 1)`` for Sentinel-2's
            13 bands), the other bands starting at zero; without it, RGB weights are adapted to
            N bands by timm's ``adapt_input_conv`` rule (:mod:`pspnet_lib.hub.input_conv`).
            ``model.load_report.adapted`` says which was done.
        **overrides: :class:`~pspnet_lib.PSPNetConfig` fields the weights cannot tell, e.g.
            ``align_corners=True``, ``output_stride=32, dilations=[1, 1, 2, 4]``, or
            ``in_channels=N`` to load RGB weights into a model of N input bands (see ``rgb_bands``).
            Defaults per layout are in :data:`pspnet_lib.hub.formats.converters.LAYOUT_DEFAULTS` (docs/weights.md).

    Returns the model in eval mode, with ``model.pretrained_cfg`` (preprocessing, classes,
    palette, inference protocol) and ``model.load_report`` (a :class:`LoadReport`).

    Example::

        model = load_pretrained("pspnet_r50-d8_ade20k-512x512-80k")
        model = load_pretrained("pspnet_r50-d8_cityscapes-512x1024-80k", num_classes=5)  # fine-tune
        model = load_pretrained("train_epoch_100.pth")            # hszhao/semseg, detected
    """
    unknown = sorted(set(overrides) - CONFIG_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown load_pretrained option(s) {unknown}; PSPNetConfig fields are: {', '.join(sorted(CONFIG_FIELDS))}"
        )
    for key in ("num_classes", "aux"):
        if key in overrides:  # pragma: no cover - they are named parameters
            raise ValueError(f"pass {key} as the named argument")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if device is not None:
        _check_device(device)  # before loading (and perhaps downloading) the weights
    resolved = resolve_source(
        source,
        format=format,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        progress=progress,
        trust_pickle=trust_pickle,
    )
    verify_resolved(resolved)
    if pretrained_cfg is not None:
        pretrained_cfg = validate_pretrained_cfg(pretrained_cfg, "the pretrained_cfg argument")
    model = _build_and_load(
        resolved,
        num_classes=num_classes,
        aux=aux,
        strict=strict,
        overrides=overrides,
        extra_cfg=pretrained_cfg,
        rgb_bands=rgb_bands,
    )
    return model.to(device) if device is not None else model


def _check_device(device: str | torch.device) -> None:
    """Raise a one-line error for a device this machine does not have (torch's own is about drivers)."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but CUDA is not available; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but MPS is not available; use --device cpu")


def _build_and_load(
    resolved: Resolved,
    *,
    num_classes: int | None,
    aux: bool | None,
    strict: bool,
    overrides: Mapping[str, Any],
    extra_cfg: Mapping[str, Any] | None,
    norm_layer: Callable[[int], nn.Module] | None = None,
    rgb_bands: Sequence[int] | None = None,
) -> PSPNet:
    config = {k: v for k, v in resolved.config.items() if k in CONFIG_FIELDS}
    checkpoint_classes = config.get("num_classes") if not resolved.backbone_only else None
    config.update(overrides)
    if resolved.backbone_only and num_classes is None:
        raise ValueError(
            f"{resolved.description} holds backbone weights only (no segmentation heads); pass num_classes=K to "
            "build a PSPNet whose heads are freshly initialised for K classes"
        )
    if num_classes is not None:
        config["num_classes"] = num_classes
    has_aux = any(k.startswith("aux_head.") for k in resolved.state_dict)
    if aux is not None:
        config["aux"] = aux
    elif not resolved.backbone_only:
        config["aux"] = has_aux
    pretrained_cfg = dict(resolved.pretrained_cfg)
    arch = PSPNetConfig.from_dict(config)
    with torch.device("meta"):  # no memory, no initialisation: the checks, and the model if the weights fill it
        probe = PSPNet(copy.deepcopy(arch), norm_layer=norm_layer)
    try:  # before anything is allocated: the model and its stored protocol together
        check_model_budget(arch, {**pretrained_cfg, **(extra_cfg or {})}, resolved.description, probe=probe)
    except ResourceLimitError as exc:
        raise CheckpointError(str(exc)) from None

    def plan(model: PSPNet) -> tuple[set[str], set[str]]:
        """``(reinitialise, discard)`` for ``model``."""
        reinit: set[str] = set()
        own = model.state_dict()
        if resolved.backbone_only:
            reinit = {k for k in own if not k.startswith("backbone.")}
        else:
            if checkpoint_classes is not None and model.config.num_classes != checkpoint_classes:
                reinit |= {k for k in CLASSIFIER_KEYS if k in own}
            if model.aux_head is not None and not has_aux:
                reinit |= {k for k in own if k.startswith("aux_head.")}
        discard = {k for k in resolved.state_dict if k.startswith("aux_head.")} if model.aux_head is None else set()
        return reinit, discard

    # The fit is checked on the meta device (with strict, weights that do not fit the architecture
    # a file describes fail before its model is allocated); weights that fill the whole model
    # become its tensors, with no random initialisation to overwrite (build_loaded).
    # RGB weights on N bands: the first convolution adapted before the load (input_conv).
    reinit, discard = plan(probe)
    state_dict, adapted = adapt_state_dict(resolved.state_dict, probe, rgb_bands)
    model, report = build_loaded(
        lambda: PSPNet(arch, norm_layer=norm_layer),
        state_dict,
        meta_model=probe,
        strict=strict,
        reinitialise=reinit,
        discard=discard,
        source=resolved.description,
    )
    report.adapted = adapted
    if adapted:
        pretrained_cfg.update(adapted_input_stats(pretrained_cfg, model.config.in_channels, rgb_bands))

    if resolved.backbone_only or (checkpoint_classes is not None and model.config.num_classes != checkpoint_classes):
        origin = {k: pretrained_cfg.pop(k) for k in ("name", "url", "sha256") if k in pretrained_cfg}
        for key in (*_CLASS_SPECIFIC, "task"):
            pretrained_cfg.pop(key, None)
        pretrained_cfg["adapted_from"] = origin or {"name": resolved.description}
    if extra_cfg:
        pretrained_cfg.update(extra_cfg)
    model.pretrained_cfg = pretrained_cfg
    report.settings = _settings_sources(
        resolved, model.config.to_dict(), pretrained_cfg, overrides, num_classes, aux, extra_cfg
    )
    model.load_report = report
    logger.info("loaded %s: %s", resolved.description, report)
    logger.info("%s", _describe_settings(resolved.description, model.config.to_dict(), pretrained_cfg, report.settings))
    return model.eval()


#: the settings the load log line names (the rest are in model.load_report.settings)
_LOGGED_SETTINGS = (
    "backbone",
    "num_classes",
    "output_stride",
    "dilations",
    "align_corners",
    "inference",
    "classes",
    "mean",
    "std",
)


def _settings_sources(
    resolved: Resolved,
    config: Mapping[str, Any],
    pretrained_cfg: Mapping[str, Any],
    overrides: Mapping[str, Any],
    num_classes: int | None,
    aux: bool | None,
    extra_cfg: Mapping[str, Any] | None,
) -> dict[str, str]:
    stored = f"stored with {resolved.description}"
    sources = {key: resolved.sources.get(key, stored) for key in (*config, *pretrained_cfg)}
    for key in config:
        if key not in resolved.config and key not in resolved.sources:
            sources[key] = "PSPNetConfig default"
    argued = set(overrides) | set(extra_cfg or {})
    argued |= {"num_classes"} if num_classes is not None else set()
    argued |= {"aux"} if aux is not None else set()
    sources.update({key: "argument" for key in argued if key in sources})
    return sources


def _describe_settings(
    description: str, config: Mapping[str, Any], pretrained_cfg: Mapping[str, Any], sources: Mapping[str, str]
) -> str:
    """The log line of the settings of ``description``, each with its source; the most common
    source is said once, up front (a folder's settings all come from it: one "stored with <path>",
    not one per setting)."""
    shown = []
    for key in _LOGGED_SETTINGS:
        value = config.get(key, pretrained_cfg.get(key))
        if value is None or key not in sources:
            continue
        shown.append((key, f"{len(value)} names" if key == "classes" else repr(value), sources[key]))
    if not shown:
        return f"settings of {description}: none recorded"
    common = Counter(source for _, _, source in shown).most_common(1)[0][0]
    parts = ", ".join(f"{key}={value}" + ("" if source == common else f" ({source})") for key, value, source in shown)
    marked = " (the others as marked)" if any(source != common for _, _, source in shown) else ""
    if common == f"stored with {description}":
        return f"settings stored with {description}{marked}: {parts}"
    return f"settings of {description} from {common}{marked}: {parts}"


def build_with_backbone_weights(
    config: Mapping[str, Any],
    weights_backbone: str | os.PathLike,
    *,
    explicit: AbstractSet[str] = frozenset(),
    norm_layer: Callable[[int], nn.Module] | None = None,
    rgb_bands: Sequence[int] | None = None,
    **source_options: Any,
) -> PSPNet:
    """``build_pspnet(..., weights_backbone=...)``: a PSPNet whose backbone holds ImageNet weights.

    The stem type and width follow the weights unless ``explicit`` says the caller set them; a
    conflicting depth or an explicitly different stem is an error. An explicit ``in_channels``
    other than the weights' 3 adapts the first convolution (``rgb_bands``, see
    :func:`load_pretrained`; ``model.load_report.adapted`` says how). The heads keep their random
    initialisation, and the model stays in training mode (as built). A timm backbone's weights
    are read by :func:`~pspnet_lib.hub.timm_weights.build_with_timm_weights`.
    """
    if is_timm_backbone(config.get("backbone")):
        return build_with_timm_weights(
            config, weights_backbone, norm_layer=norm_layer, rgb_bands=rgb_bands, **source_options
        )
    config = dict(config)

    def follow(found: Mapping[str, Any]) -> None:  # the stem and widths follow the weights unless given
        for key in ("stem", "stem_channels", "base_channels", "in_channels"):
            if key not in found:
                continue
            if key == "in_channels" and key in explicit:
                continue  # RGB weights are adapted to the model's bands (below)
            if key in explicit and config.get(key) != found[key]:
                raise ValueError(
                    f"weights_backbone={weights_backbone!r} needs {key}={found[key]!r} but {key}={config.get(key)!r} "
                    "was set"
                    + ("; torchvision weights need stem='standard' (preset='mmseg-b')" if key == "stem" else "")
                )
            config[key] = found[key]

    try:  # a zoo name: its layout is known before anything is downloaded
        entry = get_weight(resolve_name(os.fspath(weights_backbone)))
    except (TypeError, ValueError):
        entry = None
    if entry is not None:
        follow({"base_channels": 64, **entry.config})  # every zoo backbone is 64 wide
    resolved = resolve_source(weights_backbone, **source_options)
    verify_resolved(resolved)
    state_dict = {k: v for k, v in resolved.state_dict.items() if k.startswith("backbone.")}
    if not state_dict:
        raise ValueError(f"{resolved.description} holds no backbone weights")
    found = resolved.config
    if found.get("backbone") and config.get("backbone", "resnet50") != found["backbone"]:
        raise ValueError(
            f"weights_backbone={weights_backbone!r} holds a {found['backbone']} but the model is a "
            f"{config.get('backbone', 'resnet50')}; build it with backbone={found['backbone']!r}"
        )
    first = state_dict.get("backbone.layer1.0.conv1.weight")
    if first is not None and first.ndim == 4:  # the width, read from the weights (configs leave 64 out)
        found = {**found, "base_channels": int(first.shape[0])}
    follow(found)
    model = PSPNet(PSPNetConfig.from_dict(config), norm_layer=norm_layer)
    own = model.state_dict()
    reinit = {k for k in own if not k.startswith("backbone.")}
    state_dict, adapted = adapt_state_dict(state_dict, model, rgb_bands)
    report = load_weights(model, state_dict, strict=True, reinitialise=reinit, source=resolved.description)
    report.adapted = adapted
    model.pretrained_cfg = default_pretrained_cfg(model.config.in_channels, backbone_weights=resolved.description)
    if adapted:  # the RGB statistics follow the RGB weights
        model.pretrained_cfg.update(adapted_input_stats(default_pretrained_cfg(3), model.config.in_channels, rgb_bands))
    model.load_report = report
    logger.info("initialised the backbone from %s: %s", resolved.description, report)
    return model


def from_pretrained_files(
    cls: type,
    model_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str = "cpu",
    strict: bool = True,
    proxies: Any = None,
    resume_download: Any = None,
    config: Any = None,
    pretrained_cfg: dict | None = None,
    num_classes: int | None = None,
    aux: bool | None = None,
    **model_kwargs: Any,
):
    """``PSPNet._from_pretrained``: rebuild from ``config.json`` and load ``model.safetensors``.

    ``num_classes`` / ``aux`` / ``strict`` mean what they mean for :func:`~pspnet_lib.load_pretrained`
    (fresh classifiers for another class count, with the same ``model.load_report``).
    ``proxies`` / ``resume_download``: passed by huggingface_hub 0.30-0.36's mixin, ignored (deprecated
    there, gone since 1.0; proxies come from the environment, downloads always resume).
    """
    if config is None:
        raise FileNotFoundError(
            f"{model_id} has no {CONFIG_NAME} with a pspnet_lib config; PSPNet.from_pretrained needs a folder or "
            "repository written by save_pretrained/push_to_hub (use pspnet_lib.load_pretrained for other checkpoints)"
        )
    if os.path.isdir(model_id):
        weights_path = Path(model_id) / WEIGHTS_NAME
        if not weights_path.is_file():
            raise FileNotFoundError(f"{model_id} has no {WEIGHTS_NAME}")
    else:
        weights_path = hf_file(
            model_id,
            WEIGHTS_NAME,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            token=token,
        )
    if num_classes is not None or aux is not None:
        if model_kwargs:
            raise TypeError(f"PSPNet.from_pretrained got unexpected option(s) {sorted(model_kwargs)}")
        # The files read (and checked) as load_pretrained reads them, so that the load reports agree.
        if os.path.isdir(model_id):
            config_path, description = Path(model_id) / CONFIG_NAME, model_id
        else:
            config_path = hf_file(
                model_id,
                CONFIG_NAME,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
            )
            description = f"hf-hub:{model_id}" + (f"@{revision}" if revision else "")
        resolved = read_pretrained_folder(config_path, weights_path, description)
        model = _build_and_load(resolved, num_classes=num_classes, aux=aux, strict=strict, overrides={}, extra_cfg=None)
        if cls is not type(model):
            raise TypeError(
                f"{cls.__name__}.from_pretrained with num_classes/aux builds a PSPNet; subclass it in _from_pretrained"
            )
        return model.to(map_location).eval()
    source = f"{model_id} ({CONFIG_NAME})"
    try:  # the same checks as load_pretrained, before anything is allocated
        if not isinstance(config, PSPNetConfig):
            config = PSPNetConfig.from_dict(config, source=source, unknown="warn")
        pretrained_cfg = validate_pretrained_cfg(pretrained_cfg, source, in_channels=config.in_channels)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    tensors, _ = read_safetensors(weights_path)
    try:
        check_tensors(tensors, str(weights_path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    model, report = build_loaded(
        lambda: cls(config, pretrained_cfg=pretrained_cfg, **model_kwargs),
        tensors,
        strict=strict,
        source=str(weights_path),
    )
    model.load_report = report
    return model.to(map_location).eval()
