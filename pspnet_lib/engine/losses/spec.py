"""The loss spec: which terms, with which weights and options (as mmsegmentation's ``loss_decode`` list).

A spec is a list of terms, each a dict ``{"type": NAME, "loss_weight": W, **options}``, or the
same written as one line (what ``pspnet train --loss`` takes)::

    cross_entropy                                   # the default: the paper's loss
    ce + 0.5 * dice                                 # sums of weighted terms
    focal(gamma=2) + lovasz(per_image=true)         # with options (true/false/none, numbers, lists)
    ce(label_smoothing=0.1, class_weight=[1, 2, 4])

The line is read with Python's ``ast`` (never evaluated): ``+`` separates terms, ``*`` with a
number scales one, ``name(key=value, ...)`` gives options. Names: :data:`TERMS` (aliases
:data:`ALIASES`); options: the keyword arguments of the term classes in
:mod:`pspnet_lib.engine.losses.terms` except ``ignore_index``, which comes from the run's
settings. The sampler spec is the same with one name, ``ohem`` (:data:`SAMPLERS`).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ...core.constants import IGNORE_INDEX
from .ohem import OHEMPixelSampler
from .terms import CrossEntropyLoss, DiceLoss, FocalLoss, LossTerm, LovaszLoss

__all__ = [
    "ALIASES",
    "SAMPLERS",
    "TERMS",
    "build_loss_terms",
    "build_sampler",
    "parse_loss",
    "parse_sampler",
]

#: The loss terms by name (the spec's ``type``).
TERMS: dict[str, type[LossTerm]] = {
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "lovasz": LovaszLoss,
}
#: Other spellings of the term names.
ALIASES = {"ce": "cross_entropy", "crossentropy": "cross_entropy", "lovasz_softmax": "lovasz"}
#: The pixel samplers by name.
SAMPLERS = {"ohem": OHEMPixelSampler}
_SAMPLER_ALIASES = {"ohempixelsampler": "ohem"}

_EXAMPLE = "e.g. 'cross_entropy + 0.5*dice' or 'focal(gamma=2) + lovasz'"


def _options(cls: type) -> list[str]:
    """The keyword arguments of a term or sampler class, but ``ignore_index`` (the run's)."""
    return [name for name in inspect.signature(cls).parameters if name != "ignore_index"]


def _known_terms() -> str:
    aliases = {v: k for k, v in ALIASES.items() if k != "crossentropy"}
    return ", ".join(f"{name} ({aliases[name]})" if name in aliases else name for name in TERMS)


def _literal(node: ast.expr, text: str) -> Any:
    """A keyword value: a Python literal, or a bare word (true/false/none or a string such as present)."""
    if isinstance(node, ast.Name):
        word = node.id.lower()
        return {"true": True, "false": False, "none": None, "null": None}.get(word, node.id)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"cannot read the value {ast.unparse(node)!r} in {text!r}: use numbers, lists, true/false/none"
        ) from None


def _parse_line(text: str) -> list[dict[str, Any]]:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot read {text!r}: expected terms joined by +, {_EXAMPLE}") from None
    terms: list[dict[str, Any]] = []

    def number(node: ast.expr) -> float | None:
        try:
            value = ast.literal_eval(node)
        except ValueError:
            return None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def walk(node: ast.expr, weight: float) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            walk(node.left, weight)
            walk(node.right, weight)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left = number(node.left)
            factor, other = (left, node.right) if left is not None else (number(node.right), node.left)
            if factor is None:
                raise ValueError(f"cannot read {ast.unparse(node)!r} in {text!r}: one side of * must be a number")
            walk(other, weight * factor)
        elif isinstance(node, ast.Name):
            terms.append({"type": node.id, "loss_weight": weight})
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
            options = {str(kw.arg): _literal(kw.value, text) for kw in node.keywords if kw.arg is not None}
            if "loss_weight" in options and isinstance(options["loss_weight"], (int, float)):
                options["loss_weight"] = options["loss_weight"] * weight
            terms.append({"type": node.func.id, "loss_weight": weight, **options})
        else:
            raise ValueError(
                f"cannot read {ast.unparse(node)!r} in {text!r}: expected NAME, W*NAME or NAME(key=value, ...), {_EXAMPLE}"
            )

    walk(tree, 1.0)
    return terms


def _entries(spec: Any, what: str) -> list[dict[str, Any]]:
    if isinstance(spec, str):
        return _parse_line(spec)
    if isinstance(spec, Mapping):
        return [dict(spec)]
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        entries: list[dict[str, Any]] = []
        for item in spec:
            if isinstance(item, str):
                entries += _parse_line(item)
            elif isinstance(item, Mapping):
                entries.append(dict(item))
            else:
                raise ValueError(f"each {what} entry must be a dict with a 'type' or a term name, got {item!r}")
        return entries
    raise ValueError(f"{what} must be a spec line ({_EXAMPLE}) or a list of {{'type': ...}} dicts, got {spec!r}")


def _checked_name(
    entry: dict[str, Any], registry: Mapping[str, type], aliases: Mapping[str, str], what: str, kind: str, known: str
) -> str:
    """The canonical name of ``entry["type"]`` (removed from ``entry``); ``ValueError`` for an unknown
    name or an option the class does not take."""
    name = str(entry.pop("type", "")).strip().lower()
    name = aliases.get(name, name)
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; expected {known}" if name else f"a {what} needs a 'type' ({known})")
    allowed = _options(registry[name])
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(f"the {name} {kind} has no option {', '.join(unknown)}; its options: {', '.join(allowed)}")
    return name


def parse_loss(spec: str | Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
    """The canonical form of a loss spec: ``[{"type": NAME, "loss_weight": W, **options}, ...]``.

    Names are canonical (aliases resolved), ``loss_weight`` is a float (default 1), options keep
    the values given. Every term is built once to check its options.

    Raises:
        ValueError: an unknown term or option, a bad value (naming it and what is allowed), an
            empty spec or one whose every term has ``loss_weight`` 0.
    """
    canonical = []
    for entry in _entries(spec, "loss"):
        name = _checked_name(entry, TERMS, ALIASES, "loss term", "loss", f"one of {_known_terms()}")
        options = {"loss_weight": 1.0, **entry}
        if isinstance(options["loss_weight"], int) and not isinstance(options["loss_weight"], bool):
            options["loss_weight"] = float(options["loss_weight"])
        try:
            TERMS[name](**options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"the {name} loss: {error}") from None
        canonical.append({"type": name, **options})
    if not canonical:
        raise ValueError(f"the loss needs at least one term, {_EXAMPLE}")
    if not any(term["loss_weight"] > 0 for term in canonical):
        raise ValueError("every loss term has loss_weight 0: nothing would be trained")
    return canonical


def parse_sampler(spec: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The canonical form of a pixel-sampler spec: None, or ``{"type": "ohem", "thresh": T, "min_kept": K}``
    (defaults filled in: mmsegmentation's ``thresh=None``, ``min_kept=100000``).

    Accepts None, ``"none"``, ``"ohem"``, ``"ohem(thresh=0.7, min_kept=100000)"`` or the dict form.

    Raises:
        ValueError: an unknown sampler or option, ``thresh`` outside (0, 1), ``min_kept`` <= 1.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    entries = _entries(spec, "sampler")
    if len(entries) != 1:
        raise ValueError(f"one sampler only, e.g. 'ohem(thresh=0.7, min_kept=100000)', got {spec!r}")
    entry = entries[0]
    if entry.get("loss_weight", 1.0) != 1.0:
        raise ValueError(f"a sampler takes no weight, got {spec!r}")
    entry.pop("loss_weight", None)
    name = _checked_name(entry, SAMPLERS, _SAMPLER_ALIASES, "sampler", "sampler", ", ".join(SAMPLERS))
    try:
        return SAMPLERS[name](**entry).to_dict()
    except (TypeError, ValueError) as error:
        raise ValueError(f"the {name} sampler: {error}") from None


def build_loss_terms(
    spec: str | Mapping[str, Any] | Sequence[Any],
    ignore_index: int = IGNORE_INDEX,
    class_weight: Sequence[float] | None = None,
) -> list[LossTerm]:
    """The term modules of a spec. ``class_weight`` is given to every term that has none of its own
    (every term takes class weights; see each term for how it uses them)."""
    terms = []
    for entry in parse_loss(spec):
        options = dict(entry)
        cls = TERMS[options.pop("type")]
        if class_weight is not None and options.get("class_weight") is None:
            options["class_weight"] = list(class_weight)
        terms.append(cls(ignore_index=ignore_index, **options))
    return terms


def build_sampler(spec: str | Mapping[str, Any] | None, ignore_index: int = IGNORE_INDEX) -> OHEMPixelSampler | None:
    """The sampler of a spec (None for none)."""
    canonical = parse_sampler(spec)
    if canonical is None:
        return None
    options = dict(canonical)
    return SAMPLERS[options.pop("type")](ignore_index=ignore_index, **options)
