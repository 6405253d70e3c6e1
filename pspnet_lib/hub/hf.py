"""Hugging Face Hub: the files behind ``PSPNet.save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A repository (or local folder) holds ``config.json`` = ``{"config": <PSPNetConfig fields>,
"pretrained_cfg": {...}, "library": "pspnet_lib", ...}``, ``model.safetensors`` (which also
carries both dicts in its metadata) and ``README.md`` (the model card). ``PSPNet`` gets the
public methods from ``huggingface_hub.PyTorchModelHubMixin``; this module provides the parts
the mixin delegates to, and ``hf-hub:`` sources of :func:`~pspnet_lib.load_pretrained`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import (  # (huggingface_hub.errors has them since 0.25 only)
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .._files import atomic_save_safetensors
from .._progress import tqdm_class
from .checkpoint_files import read_pretrained_folder
from .download import OfflineError, is_offline
from .load_report import build_loaded
from .serialization import read_safetensors, write_json

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "save_model_files", "from_pretrained_files", "resolve_hf", "hf_file"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_model_files(model: Any, save_directory: str | os.PathLike) -> None:
    """Write ``model.safetensors`` and ``config.json`` of ``model`` into ``save_directory`` (atomically)."""
    from .._version import __version__

    save_directory = Path(save_directory)
    config = model.config.to_dict()
    pretrained_cfg = _json_safe(model.pretrained_cfg)
    metadata = {
        "format": "pt",
        "pspnet_lib.config": json.dumps(config, sort_keys=True),
        "pspnet_lib.pretrained_cfg": json.dumps(pretrained_cfg, sort_keys=True),
    }
    module = model.module if hasattr(model, "module") else model
    # Reproducible bytes: the same weights give the same file (and checksum) every time.
    atomic_save_safetensors(module.state_dict(), save_directory / WEIGHTS_NAME, metadata)
    write_json(
        {
            "config": config,
            "pretrained_cfg": pretrained_cfg,
            "library": "pspnet_lib",
            "pspnet_lib_version": __version__,
        },
        save_directory / CONFIG_NAME,
    )


def _offline_hint(repo_id: str, cache_dir: Any, disabled: bool = True) -> str:
    where = cache_dir or hf_constants.HF_HUB_CACHE
    state = (
        "downloads are disabled (local_files_only=True or HF_HUB_OFFLINE=1)"
        if disabled
        else "the Hub could not be reached"
    )
    return (
        f"hf-hub:{repo_id} is not in the Hugging Face cache ({where}) and {state}. On a machine with network "
        f"access run `hf download {repo_id}` (or huggingface_hub.snapshot_download) and copy its cache folder here "
        "(or point HF_HUB_CACHE at it)" + (", or allow downloads." if disabled else ".")
    )


def _progress_option(progress: bool | None) -> dict[str, Any]:
    # hf_hub_download takes tqdm_class since huggingface_hub 1.1; before, its bars follow its own
    # switches only (HF_HUB_DISABLE_PROGRESS_BARS, huggingface_hub.utils.disable_progress_bars()).
    if "tqdm_class" not in inspect.signature(hf_hub_download).parameters:
        return {}
    return {"tqdm_class": tqdm_class(progress)}


def hf_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    token: str | bool | None = None,
    progress: bool | None = None,
) -> Path:
    """One file of a Hub repository via ``hf_hub_download``, with errors that say what to do.

    ``progress``: the download bar (None: on a terminal only; see :mod:`pspnet_lib._progress`).
    """
    offline = is_offline(local_files_only)
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=filename,
                revision=revision,
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                local_files_only=offline,
                force_download=force_download,
                token=token,
                **_progress_option(progress),
            )
        )
    except LocalEntryNotFoundError:
        if offline:
            raise OfflineError(_offline_hint(repo_id, cache_dir)) from None
        raise OSError(
            f"could not download {filename} of hf-hub:{repo_id} (no network?). "
            + _offline_hint(repo_id, cache_dir, disabled=False)
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"hf-hub:{repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise FileNotFoundError(
            f"hf-hub:{repo_id} has no {filename}; is it a pspnet_lib repository written by save_pretrained/push_to_hub?"
        ) from None
    except RepositoryNotFoundError:
        raise ValueError(f"no Hub repository {repo_id!r} (or it is private: log in with `hf auth login`)") from None
    except HfHubHTTPError as exc:
        raise OSError(f"downloading {filename} of hf-hub:{repo_id} failed: {exc}") from None


def resolve_hf(
    repo_id: str, *, revision: str | None, cache_dir: Any, local_files_only: bool, progress: bool | None = None
):
    """``hf-hub:`` source -> :class:`~pspnet_lib.hub.resolved.Resolved`."""
    kwargs = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "progress": progress}
    config_path = hf_file(repo_id, CONFIG_NAME, **kwargs)
    weights_path = hf_file(repo_id, WEIGHTS_NAME, **kwargs)
    description = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    resolved = read_pretrained_folder(config_path, weights_path, description)
    resolved.pretrained_cfg.setdefault("hf_hub_id", repo_id)
    return resolved


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
    from .loading import _build_and_load  # loading reaches hf through sources.resolve_source

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
    from ..models.pspnet import PSPNetConfig
    from .serialization import CheckpointError
    from .validation import check_tensors, validate_pretrained_cfg

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
