"""Model builders by name: torchvision's ``get_model`` / ``list_models`` and the torch.hub entry points.

Every variant of :data:`pspnet_lib.models.variants.VARIANTS` has one builder named after it
(``pspnet_r50_d8``, ...), which hubconf.py re-exports as its torch.hub entry point and
:func:`get_model` calls. A builder takes torchvision's ``weights=`` (None, ``"DEFAULT"``, a zoo
name, a :class:`~pspnet_lib.hub.zoo.registry.Weights` or a member of :func:`get_model_weights`'s
enum) or this library's ``pretrained=`` (False, True or any :func:`load_pretrained` source).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable
from typing import Any

from ..models.pspnet import PSPNet, PSPNetConfig, build_pspnet
from ..models.variants import VARIANTS, Variant, get_variant
from .loading import load_pretrained
from .zoo.registry import get_weight, resolve_name
from .zoo.weights import Weights, WeightsEnum

__all__ = ["ENTRY_POINTS", "build_variant", "build_with_weights", "get_model", "list_models", "resolve_weights_arg"]

_ARCH_KEYS = ("backbone", "stem", "stem_channels", "base_channels", "output_stride", "dilations", "contract_dilation")
#: to_dict() leaves out fields at their default (base_channels=64): compare with the default then.
_ARCH_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PSPNetConfig) if f.name in _ARCH_KEYS}


def _arch(config: dict[str, Any], key: str) -> Any:
    return config.get(key, _ARCH_DEFAULTS[key])


_ARGS = """
    Args:
        weights: torchvision's way to ask for weights: None (random initialisation, the default),
            ``"DEFAULT"`` ({default}), a zoo name of this model (``list_pretrained("pspnet_{code}_*")``),
            a ``Weights`` entry or a ``get_model_weights("{name}")`` member.
        pretrained: the same in this library's spelling: False, True (= ``"DEFAULT"``), a zoo name,
            a checkpoint file, URL or ``"hf-hub:org/repo"``. Give ``weights`` or ``pretrained``, not both.
        num_classes: number of classes. With weights: replaces the classifiers (fine-tuning);
            without: defaults to 21.
        progress: show a download progress bar (default: only on a terminal).
        **kwargs: PSPNetConfig overrides (``aux=False``, ``align_corners=True``, ...), and without
            weights ``weights_backbone=True`` ({backbone}) or a backbone file/name; with weights the
            options of ``pspnet_lib.load_pretrained`` (``cache_dir``, ``local_files_only``, ...).

    Returns a ``PSPNet`` (in eval mode with weights, training mode without). ``model.pretrained_cfg``
    holds the classes, palette, preprocessing and inference protocol of the weights.
"""


def _matches(variant: Variant, config: dict) -> bool:
    if variant.architecture.get("backbone") != config.get("backbone"):
        return False  # before building the variant's config: a timm variant's would import timm
    full = PSPNetConfig.from_dict({**variant.architecture}).to_dict()
    return all(_arch(full, k) == _arch(config, k) for k in _ARCH_KEYS)


def _check_layout(name: str, found: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse layout fields in ``asked`` that the zoo weights ``name`` (architecture ``found``) do not have."""
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in asked.items() if k in _ARCH_KEYS}
    wrong = [k for k, v in given.items() if _arch(found, k) != v]
    if wrong:
        raise ValueError(
            f"weights {name!r} are for a {', '.join(f'{k}={_arch(found, k)!r}' for k in wrong)} model, but "
            f"{', '.join(f'{k}={given[k]!r}' for k in wrong)} was asked for; drop those arguments or pick "
            f"weights from list_pretrained() that fit"
        )


def resolve_weights_arg(weights: Any, pretrained: Any, variant: Variant | None) -> str | os.PathLike | None:
    """Turn ``weights=`` / ``pretrained=`` into one :func:`load_pretrained` source, or None (no weights).

    ``"DEFAULT"`` and ``pretrained=True`` need ``variant`` (the model whose default is meant).
    """
    if weights is not None and pretrained not in (None, False):
        raise ValueError("pass either weights= (torchvision's spelling) or pretrained=, not both")
    if isinstance(weights, WeightsEnum):
        weights = weights.value
    if isinstance(weights, Weights):
        return weights.name
    if weights is None:
        if pretrained is None or pretrained is False:
            return None
        if pretrained is True:
            weights = "DEFAULT"
        else:
            return pretrained
    if weights is True or weights is False:
        raise TypeError(
            "weights= takes None, 'DEFAULT', a zoo name or a Weights entry, not a bool; "
            "use pretrained=True/False for the boolean form"
        )
    if isinstance(weights, str) and weights == "DEFAULT":
        if variant is None:
            raise ValueError("weights='DEFAULT' needs a named model: use pspnet_lib.get_model(name, weights='DEFAULT')")
        if variant.default_weights is None:
            why = (
                "no segmentation weights were released for it; train it, starting from weights_backbone=True"
                if variant.architecture.get("backbone", "").startswith("timm:")
                else "the author's checkpoints are distributed by hand"
            )
            raise ValueError(
                f"{variant.name} has no downloadable default weights ({why}); "
                "pass pretrained='path/to/checkpoint.pth' (or a URL) instead"
            )
        return variant.default_weights
    if isinstance(weights, (str, os.PathLike)):
        return weights
    raise TypeError(f"weights= takes None, 'DEFAULT', a zoo name or a Weights entry, got {type(weights).__name__}")


def build_variant(
    code: str,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    **kwargs: Any,
) -> PSPNet:
    """Build a model of variant ``code``; see the builders (``pspnet_r50_d8``, ...) for the arguments."""
    variant = VARIANTS[code]
    source = resolve_weights_arg(weights, pretrained, variant)
    if source is not None:
        source = os.fspath(source)
        try:
            name = resolve_name(source)
        except ValueError:
            name = None
        if name is not None:
            entry = get_weight(name)
            if entry.task != "semantic-segmentation" or not _matches(
                variant, PSPNetConfig.from_dict(entry.config).to_dict()
            ):
                raise ValueError(
                    f"{name!r} is not a {variant.name} checkpoint ({variant.description}); "
                    f"pick one of list_pretrained('pspnet_{code}_*'), or use pspnet_lib.load_pretrained({name!r})"
                )
            _check_layout(name, PSPNetConfig.from_dict(entry.config).to_dict(), kwargs)  # before any download
        return load_pretrained(source, num_classes=num_classes, **kwargs)
    kwargs.pop("progress", None)  # nothing to download
    if kwargs.get("weights_backbone") is True:
        if variant.default_backbone_weights is None:
            raise ValueError(
                f"{variant.name} has no downloadable ImageNet backbone; pass weights_backbone='path/to/file'"
            )
        kwargs["weights_backbone"] = variant.default_backbone_weights
    options = {**variant.architecture, **kwargs}
    backbone = options.pop("backbone")
    return build_pspnet(backbone, 21 if num_classes is None else num_classes, **options)


def build_with_weights(
    config: dict[str, Any], explicit: set[str], weights: Any, num_classes: int | None, **options: Any
) -> PSPNet:
    """``build_pspnet(..., weights=...)``: load ``weights`` after checking they fit the requested architecture.

    ``config`` is the requested architecture; ``explicit`` the fields the caller set (the backbone
    always counts). ``"DEFAULT"`` means the default weights of the variant ``config`` describes.
    """
    full = PSPNetConfig.from_dict({k: v for k, v in config.items() if k != "num_classes"}).to_dict()
    variant = next((v for v in VARIANTS.values() if _matches(v, full)), None)
    if weights == "DEFAULT" and variant is None:
        raise ValueError(
            f"no model of the zoo has this architecture ({', '.join(f'{k}={_arch(full, k)!r}' for k in _ARCH_KEYS)}), so "
            "weights='DEFAULT' means nothing here; see pspnet_lib.list_models() for the named models"
        )
    resolved = resolve_weights_arg(weights, None, variant)
    if resolved is None:  # build_pspnet calls this only when weights were given
        raise ValueError("build_with_weights needs weights; got None")
    source = os.fspath(resolved)
    try:
        name = resolve_name(source)
    except ValueError:
        name = None
    overrides = {k: v for k, v in config.items() if k in explicit and k not in ("backbone", "num_classes")}
    if name is not None:
        asked = {k: _arch(full, k) for k in ("backbone", *overrides) if k in _ARCH_KEYS}
        _check_layout(name, PSPNetConfig.from_dict(get_weight(name).config).to_dict(), asked)
    if name is None:  # a file, folder or Hub repo: the layout fields given must fit its weights (checked there)
        return load_pretrained(source, num_classes=num_classes, **options, **overrides)
    return load_pretrained(
        source, num_classes=num_classes, **options, **{k: v for k, v in overrides.items() if k not in _ARCH_KEYS}
    )


# Kept for code written against 0.1.
build_family = build_variant


def _make_builder(variant: Variant) -> Callable[..., PSPNet]:
    def builder(
        pretrained: bool | str | os.PathLike = False,
        num_classes: int | None = None,
        *,
        weights: Any = None,
        **kwargs: Any,
    ) -> PSPNet:
        return build_variant(variant.code, pretrained, num_classes, weights=weights, **kwargs)

    builder.__name__ = builder.__qualname__ = variant.name
    builder.__module__ = __name__
    builder.__doc__ = f"PSPNet, {variant.description}.\n" + _ARGS.format(
        code=variant.code,
        name=variant.name,
        default=variant.default_weights or "none: pass a file",
        backbone=variant.default_backbone_weights or "none",
    )
    return builder


#: model name -> builder (also the torch.hub entry points of hubconf.py).
ENTRY_POINTS: dict[str, Callable[..., PSPNet]] = {v.name: _make_builder(v) for v in VARIANTS.values()}
globals().update(ENTRY_POINTS)


def list_models(filter: str | None = None) -> list[str]:
    """torchvision's ``list_models``: the model names, sorted (``pspnet_r50_d8``, ...).

    Args:
        filter: a shell-style pattern (``"*r50*"``), case-insensitive.
    """
    names = sorted(ENTRY_POINTS)
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), filter.lower())]
    return names


def get_model(name: str, *, weights: Any = None, **kwargs: Any) -> PSPNet:
    """torchvision's ``get_model``: build model ``name`` (:func:`list_models`), with ``weights=`` as there.

    Example::

        model = get_model("pspnet_r50_d8", weights="DEFAULT")           # ADE20K, eval mode
        model = get_model("pspnet_r18_d8", weights=None, num_classes=5)  # random init
        model = get_model("pspnet_r50_d8", weights="pspnet_r50-d8_cityscapes", num_classes=3)  # fine-tune

    Raises ``ValueError`` for an unknown name (with close matches) or weights of another model.
    """
    return ENTRY_POINTS[get_variant(name).name](weights=weights, **kwargs)
