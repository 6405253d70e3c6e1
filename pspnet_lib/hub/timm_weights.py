"""ImageNet weights of timm backbones: ``build_pspnet("timm:<name>", weights_backbone=...)``.

The weights come the way timm's own ``pretrained=True`` finds them, through timm's pretrained
configs (``timm.models.get_pretrained_cfg``: the Hub repository, file name, mean and std of each
pretrained tag) and the Hugging Face cache (``hf_hub_download``), offline first like every source
of this library: with ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` nothing is fetched and a
missing file is an error that says how to fetch it. The tensors are read as data (safetensors, or
the safe checkpoint reader), checked (floats, finite), and handed to timm's loader, so timm's
per-family filters and its adaptation of RGB weights to ``in_channels`` apply. Everything about
the model (name, output stride, input channels) is checked on the meta device before any file is
read or fetched.

``weights_backbone`` for a timm backbone is one of:

* ``"DEFAULT"``: the weights of the pretrained tag in the backbone's name, else timm's default
  tag of the model (the first one timm lists);
* a pretrained tag of the model (``"fb_in22k"``) or ``"<model>.<tag>"``;
* ``"hf-hub:org/repo[@revision]"``: a repository in timm's format (``model.safetensors``, and
  ``config.json`` whose ``pretrained_cfg`` gives mean/std);
* a local ``.safetensors`` or checkpoint file holding a state dict in timm's layout (mean/std:
  those of the model's default tag).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.constants import IMAGENET_MEAN, IMAGENET_STD
from ..models.encoders import build_encoder, require_timm, timm_name
from ..models.pspnet import PSPNet, PSPNetConfig
from .checkpoint_reader import CheckpointError, read_checkpoint, read_safetensors
from .hf import hf_file
from .input_conv import adapt_loaded_input_conv, adapted_input_stats
from .load_report import LoadReport
from .serialization import extract_state_dict
from .sources import parse_hf_source
from .validation import check_tensors, validate_pretrained_cfg

__all__ = ["build_with_timm_weights", "resolve_timm_weights", "TimmWeights"]

logger = logging.getLogger(__name__)

_WEIGHTS_FILE = "model.safetensors"


class TimmWeights:
    """Resolved timm backbone weights: the tensors, where they came from and the input statistics."""

    def __init__(
        self, state_dict: dict[str, torch.Tensor], description: str, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        self.state_dict = state_dict
        self.description = description
        self.mean = mean
        self.std = std


def _stats(mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """timm's mean/std (0..1 scale), ImageNet's where a config gives none."""
    return tuple(float(v) for v in mean or IMAGENET_MEAN), tuple(float(v) for v in std or IMAGENET_STD)


def _cfg_stats(cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return _stats(getattr(cfg, "mean", None), getattr(cfg, "std", None))


def _read_tensors(path: Path, description: str, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        tensors, _ = read_safetensors(path)
    else:
        tensors, _ = extract_state_dict(read_checkpoint(path, trust_pickle=trust_pickle), str(path))
    try:
        check_tensors(tensors, description)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return tensors


def resolve_timm_weights(
    backbone: str,
    weights_backbone: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    progress: bool | None = None,
    revision: str | None = None,
    trust_pickle: bool = False,
) -> TimmWeights:
    """The weights ``weights_backbone`` names for the timm backbone ``backbone`` (``"timm:<name>"``).

    Raises:
        ValueError: ``weights_backbone`` is none of the forms above (listing the model's tags), or
            timm publishes no Hub weights for the tag.
        OfflineError: the file is not in the Hugging Face cache and downloads are disabled.
        CheckpointError: the file is damaged, not tensors, or holds non-finite values.
    """
    timm = require_timm()
    name = timm_name(backbone)
    arch, _, own_tag = name.partition(".")
    source = os.fspath(weights_backbone)
    fetch = functools.partial(hf_file, cache_dir=cache_dir, local_files_only=local_files_only, progress=progress)
    default_cfg = timm.models.get_pretrained_cfg(arch)
    if revision is not None and not source.startswith("hf-hub:"):
        raise ValueError(f"revision= applies to 'hf-hub:' weights, not to weights_backbone={source!r}")
    if source != "DEFAULT" and os.path.exists(source):
        path = Path(source)
        mean, std = _cfg_stats(timm.models.get_pretrained_cfg(name) if own_tag else default_cfg)
        return TimmWeights(_read_tensors(path, str(path), trust_pickle), str(path), mean, std)
    if source.startswith("hf-hub:"):
        repo, rev = parse_hf_source(source, revision)
        weights_path = fetch(repo, _WEIGHTS_FILE, revision=rev)
        mean, std = _cfg_stats(default_cfg)
        try:
            stored = json.loads(fetch(repo, "config.json", revision=rev).read_text(encoding="utf-8"))
            cfg = stored.get("pretrained_cfg", {}) if isinstance(stored, dict) else {}
            mean, std = _stats(cfg.get("mean"), cfg.get("std"))
        except (OSError, ValueError, TypeError, AttributeError):  # none, not cached offline, not JSON
            logger.info("%s has no readable timm config.json: using %s's default mean/std", source, arch)
        return TimmWeights(_read_tensors(weights_path, source, trust_pickle), source, mean, std)
    tags = [t.partition(".")[2] for t in timm.list_pretrained(arch + ".*")]
    if source == "DEFAULT":
        tag = own_tag or (default_cfg.tag if default_cfg is not None else "")
    elif source in tags or (source.startswith(arch + ".") and source.partition(".")[2] in tags):
        tag = source.removeprefix(arch + ".")
        if own_tag and tag != own_tag:
            raise ValueError(
                f"weights_backbone={source!r} names tag {tag!r} but the backbone {backbone!r} names {own_tag!r}"
            )
    else:
        raise ValueError(
            f"weights_backbone={source!r} for {backbone}: expected 'DEFAULT', a pretrained tag of {arch} "
            f"({', '.join(tags) or 'it has none'}), 'hf-hub:org/repo' or an existing weights file"
        )
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}") if tag else None
    if cfg is None or not cfg.hf_hub_id or cfg.custom_load:
        raise ValueError(
            f"timm publishes no Hugging Face Hub weights in its own format for {arch}{'.' + tag if tag else ''}; "
            "pass weights_backbone='path/to/weights.safetensors' (a state dict in timm's layout)"
        )
    filename = cfg.hf_hub_filename or _WEIGHTS_FILE
    weights_path = fetch(cfg.hf_hub_id, filename)
    description = f"timm:{arch}.{tag} (hf-hub:{cfg.hf_hub_id})"
    mean, std = _cfg_stats(cfg)
    return TimmWeights(_read_tensors(weights_path, description, trust_pickle), description, mean, std)


def build_with_timm_weights(
    config: Mapping[str, Any],
    weights_backbone: str | os.PathLike,
    *,
    norm_layer: Callable[[int], nn.Module] | None = None,
    rgb_bands: Sequence[int] | None = None,
    **source_options: Any,
) -> PSPNet:
    """A PSPNet whose timm backbone holds ``weights_backbone`` (heads randomly initialised; training mode).

    The architecture is checked first, on the meta device (name, output stride, input channels),
    so that a model that cannot be built fails before anything is fetched. ``model.pretrained_cfg``
    records the weights' mean/std (timm's pretrained config; for other than 3 input channels placed
    as the RGB weights are, :func:`~pspnet_lib.hub.input_conv.adapted_input_stats`) and
    ``backbone_weights`` (where they came from). RGB weights on N bands: timm's rule, or
    ``rgb_bands`` (:mod:`pspnet_lib.hub.input_conv`); ``model.load_report.adapted`` says which.
    """
    arch = PSPNetConfig.from_dict(config)
    with torch.device("meta"):
        probe = PSPNet(copy.deepcopy(arch), norm_layer=norm_layer)
    weights = resolve_timm_weights(arch.backbone, weights_backbone, **source_options)
    probe.backbone.check_weights(weights.state_dict)  # before timm loads (and logs) weights that do not fit
    rgb = {"mean": list(weights.mean), "std": list(weights.std)}
    stats = rgb if arch.in_channels == 3 else adapted_input_stats(rgb, arch.in_channels, rgb_bands)
    cfg = {**stats, "backbone_weights": weights.description}
    cfg = validate_pretrained_cfg(cfg, weights.description, in_channels=arch.in_channels)  # a repository's values
    model = PSPNet(arch, norm_layer=norm_layer, encoder=build_encoder(arch, norm_layer, pretrained=weights.state_dict))
    model.pretrained_cfg = cfg
    names = list(model.state_dict())
    model.load_report = LoadReport(
        loaded=[k for k in names if k.startswith("backbone.")],
        reinitialised=[k for k in names if not k.startswith("backbone.")],
        adapted=adapt_loaded_input_conv(model, weights.state_dict, rgb_bands),  # timm's rule, or rgb_bands
    )
    logger.info("initialised the backbone from %s: %s", weights.description, model.load_report)
    return model
