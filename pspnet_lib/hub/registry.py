"""The weights zoo: every released PSPNet checkpoint this library loads, with what it needs to be used.

Names follow ``pspnet_<backbone>_<dataset>-<crop>-<schedule>``:

* ``<backbone>``: ``r18-d8``, ``r50-d8``, ``r101-d8`` (mmsegmentation's ResNetV1c: deep 3x3 stem,
  output stride 8), ``r18b-d8`` ... (the ``b`` models: torchvision's 7x7 stem), ``r50-d32`` /
  ``r50b-d32`` (output stride 32, layer3/4 strided *and* dilated), with a suffix ``-rsb``
  (ResNet-strikes-back ImageNet pre-training, AdamW) or ``-fp16`` (trained with mixed precision);
* ``<dataset>``: a key of :data:`~pspnet_lib.data.DATASET_INFO`;
* ``<crop>``: the training crop; ``<schedule>``: training iterations.

Every ``pspnet_<backbone>_<dataset>`` without crop and schedule is an alias of the entry with
the best single-scale mIoU (e.g. ``pspnet_r50-d8_ade20k`` = ``pspnet_r50-d8_ade20k-512x512-160k``).
ImageNet backbones are ``resnet{18,50,101}_v1c`` (mmsegmentation's pre-training of the deep-stem
ResNets) and ``resnet{18,50,101}_torchvision`` (torchvision's ``IMAGENET1K_V1``).

Each entry is a :class:`Weights`; ``get_weight(name).meta`` holds the class names under
``"categories"`` (as torchvision's weights enums do), and ``.transforms()`` the preprocessing.
The table is data (:mod:`pspnet_lib.hub.zoo_table`), the entry type :class:`Weights`
(:mod:`pspnet_lib.hub.weights`); this module holds the registry: look-up, listing, aliases,
your own entries and torchvision's per-model enums.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import warnings
from typing import cast

from ..models.variants import VARIANTS, get_variant
from .weights import Weights, WeightsEnum, sha256_prefix_from_filename
from .zoo_entries import builtin_entries

__all__ = [
    "Weights",
    "list_pretrained",
    "register_weights",
    "unregister_weights",
    "resolve_name",
    "WeightsEnum",
    "get_weight",
    "get_model_weights",
    "model_of",
    "find_weights_for_file",
    "sha256_prefix_from_filename",
]


_REGISTRY: dict[str, Weights] = {}
_ALIASES: dict[str, str] = {}


def register_weights(weights: Weights, *, aliases: tuple[str, ...] = (), overwrite: bool = False) -> Weights:
    """Add an entry (e.g. your own published checkpoint) to the zoo.

    ``load_pretrained(weights.name)`` then downloads, verifies, converts and caches it like the
    built-in entries. Raises ``ValueError`` if the name is taken, unless ``overwrite``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", weights.name):
        raise ValueError(f"invalid weights name {weights.name!r}: use letters, digits, '_', '-', '.'")
    if not re.fullmatch(r"[0-9a-f]{8,64}", weights.sha256):
        raise ValueError(
            f"weights {weights.name!r}: sha256 must be 8 to 64 lowercase hex digits, got {weights.sha256!r}"
        )
    for name in (weights.name, *aliases):
        if not overwrite and (name in _REGISTRY or name in _ALIASES):
            raise ValueError(f"a zoo entry named {name!r} already exists; pass overwrite=True to replace it")
    _REGISTRY[weights.name] = weights
    _ALIASES.pop(weights.name, None)
    for alias in aliases:
        _ALIASES[alias] = weights.name
    return weights


def unregister_weights(name: str) -> None:
    """Remove an entry added with :func:`register_weights` (and the aliases pointing to it)."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name or a == name]:
        del _ALIASES[alias]


def _register_builtin() -> None:
    entries, aliases = builtin_entries()
    for weights in entries:
        register_weights(weights)
    _ALIASES.update(aliases)


_register_builtin()


def resolve_name(name: str) -> str:
    """The full zoo name of ``name`` (itself, or the entry an alias points to)."""
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    candidates = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown pretrained weights {name!r}.{hint} See pspnet_lib.list_pretrained() or `pspnet list`.")


def find_weights_for_file(filename: str | None = None, sha256: str | None = None) -> tuple[Weights, str] | None:
    """The zoo entry whose upstream file this is, and how it was recognised, or None.

    Args:
        filename: the file's name (no folder), compared with each entry's upstream file name
            (e.g. ``pspnet_r50-d8_769x769_40k_cityscapes_20200606_112725-86638686.pth``).
        sha256: the file's full sha256 hex digest, compared with each entry's recorded prefix.

    Returns ``(weights, "file name")`` or ``(weights, "sha256")``; the name is tried first.
    """
    entries = list(_REGISTRY.values())
    if filename:
        for weights in entries:
            if weights.filename == filename:
                return weights, "file name"
    if sha256:
        digest = sha256.lower()
        for weights in entries:
            if digest.startswith(weights.sha256):
                return weights, "sha256"
    return None


def get_weights(name: str | Weights | WeightsEnum) -> Weights:
    """Deprecated (0.3; removed in the next release): use :func:`get_weight` (torchvision's
    spelling), which reads the same names."""
    warnings.warn(
        "pspnet_lib.get_weights is deprecated; use pspnet_lib.get_weight(name) (same names, torchvision's spelling)",
        DeprecationWarning,
        stacklevel=2,
    )
    return get_weight(name)


def list_pretrained(filter: str | None = None, *, task: str | None = None, include_aliases: bool = False) -> list[str]:
    """Names of the zoo entries, sorted.

    Args:
        filter: a shell-style pattern (``"*ade20k*"``, ``"pspnet_r18*"``); case-insensitive.
        task: ``"semantic-segmentation"`` or ``"backbone"`` to list one kind only.
        include_aliases: also list the short aliases (``pspnet_r50-d8_ade20k``).
    """
    if task is not None and task not in ("semantic-segmentation", "backbone"):
        raise ValueError(f"unknown task {task!r}; expected 'semantic-segmentation' or 'backbone'")
    names = [n for n, w in _REGISTRY.items() if task is None or w.task == task]
    if include_aliases:
        names += [a for a, target in _ALIASES.items() if task is None or _REGISTRY[target].task == task]
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), filter.lower())]
    return sorted(names)


def aliases_of(name: str) -> list[str]:
    """Aliases that point to the entry ``name``."""
    return sorted(a for a, target in _ALIASES.items() if target == name)


def get_weight(name: str | Weights | WeightsEnum) -> Weights:
    """torchvision's ``get_weight``: the :class:`Weights` of a zoo name, alias or ``"<Enum>.<MEMBER>"``.

    ``get_weight("pspnet_r50-d8_ade20k")``, ``get_weight("PSPNet_R50_D8_Weights.DEFAULT")`` and
    ``get_weight(get_model_weights("pspnet_r50_d8").DEFAULT)`` all work; a :class:`Weights` is
    returned as it is. Raises ``ValueError`` for an unknown name (with close matches),
    ``TypeError`` for something that is not a name.

    Example::

        w = get_weight("pspnet_r50-d8_ade20k-512x512-80k")
        w.meta["categories"][:3]     # ['wall', 'building', 'sky']
        preprocess = w.transforms()  # resize + float + ImageNet normalisation
    """
    if isinstance(name, Weights):
        return name
    if isinstance(name, WeightsEnum):
        return name.value
    if not isinstance(name, str):
        raise TypeError(f"get_weight expects a zoo name (str), got {type(name).__name__}")
    if "." in name:
        enum_name, _, member = name.partition(".")
        for variant in VARIANTS.values():
            weights_enum = get_model_weights(variant.name)
            if weights_enum.__name__ == enum_name:
                try:
                    return weights_enum[member].value
                except KeyError:
                    raise ValueError(
                        f"{enum_name} has no member {member!r}; members: {', '.join(weights_enum.__members__)}"
                    ) from None
    return _REGISTRY[resolve_name(name)]


_WEIGHT_ENUMS: dict[str, type[WeightsEnum]] = {}


def model_of(weights: Weights) -> str | None:
    """The model name (``pspnet_r50_d8``) a zoo entry belongs to, or None (backbones, your own entries)."""
    return weights.meta.get("model")


def get_model_weights(name: str) -> type[WeightsEnum]:
    """torchvision's ``get_model_weights``: the enum of the zoo entries of model ``name``.

    Members are named after the entry without the model prefix
    (``pspnet_r50-d8_ade20k-512x512-160k`` -> ``ADE20K_512X512_160K``; the rsb and fp16 entries
    keep their suffix: ``RSB_CITYSCAPES_512X1024_80K``), plus ``DEFAULT``. Entries added with
    :func:`register_weights` appear when their ``meta["model"]`` names the model.
    """
    variant = get_variant(name)
    members: dict[str, Weights] = {}
    prefix = f"pspnet_{variant.code}"
    for entry in sorted(_REGISTRY):
        weights = _REGISTRY[entry]
        if model_of(weights) != variant.name:
            continue
        key = re.sub(r"[^0-9A-Za-z]+", "_", entry.removeprefix(prefix)).strip("_").upper()
        members[key] = weights
    if variant.default_weights is not None and variant.default_weights in _REGISTRY:
        members["DEFAULT"] = _REGISTRY[variant.default_weights]
    enum_name = variant.name.replace("pspnet", "PSPNet").upper().replace("PSPNET", "PSPNet") + "_Weights"
    cached = _WEIGHT_ENUMS.get(variant.name)
    if cached is not None and {k: m.value for k, m in cached.__members__.items()} == members:
        return cached
    # The functional Enum API makes a subclass at run time; mypy reads the call as a member lookup.
    weights_enum = cast("type[WeightsEnum]", WeightsEnum(enum_name, list(members.items())))  # type: ignore[call-arg]
    weights_enum.__doc__ = f"Weights of {variant.name}: {variant.description}."
    _WEIGHT_ENUMS[variant.name] = weights_enum
    return weights_enum
