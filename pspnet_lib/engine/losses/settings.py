"""The loss settings of a run (``loss``, ``aux_loss``, ``class_weight``, ``sampler``) in their stored
forms, checked: what :class:`~pspnet_lib.engine.config.TrainConfig` calls, kept here so that the
settings module holds the fields and this one the rules."""

from __future__ import annotations

from typing import Any

from ..class_weights import CLASS_WEIGHT_RULES
from .spec import TERMS, parse_loss, parse_sampler
from .terms import check_class_weight

__all__ = ["LossSettingError", "check_class_counts", "loss_settings"]


class LossSettingError(ValueError):
    """A loss setting is wrong: ``setting`` names it, ``value`` is what was given; the message
    (without the setting's name) says what is allowed."""

    def __init__(self, setting: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.setting, self.value = setting, value


def loss_settings(
    loss: Any, aux_loss: Any, class_weight: Any, sampler: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str | list[float] | None, dict[str, Any] | None]:
    """``(loss, aux_loss, class_weight, sampler)`` in their stored forms: the term lists of
    :func:`~pspnet_lib.engine.losses.parse_loss`, None / a rule name (``auto``,
    ``median_frequency``, ``inverse_log``) / a list of floats (``"w0,w1,..."`` is read), and the
    sampler dict of :func:`~pspnet_lib.engine.losses.parse_sampler`.

    Raises:
        LossSettingError: naming the setting that is wrong.
    """
    parsed = []
    for name, value in (("loss", loss), ("aux_loss", aux_loss)):
        try:
            parsed.append(None if value is None and name == "aux_loss" else parse_loss(value))
        except ValueError as error:
            raise LossSettingError(name, value, str(error)) from None
    main, aux = parsed
    assert main is not None
    try:
        sampler = parse_sampler(sampler)
    except ValueError as error:
        raise LossSettingError("sampler", sampler, str(error)) from None
    if sampler is not None and not any(TERMS[term["type"]].per_pixel for term in main):
        raise LossSettingError(
            "sampler", sampler["type"], "weights per-pixel terms, but the loss has none: add cross_entropy or focal"
        )
    return main, aux, _class_weight(class_weight), sampler


def _class_weight(value: Any) -> str | list[float] | None:
    rules = ("auto", *CLASS_WEIGHT_RULES)
    weights = value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none"):
            return None
        if text in rules:
            return text
        try:
            weights = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise LossSettingError(
                "class_weight", value, f"must be {', '.join(rules)} or one weight per class (w0,w1,...)"
            ) from None
    try:
        return check_class_weight(weights)
    except ValueError as error:
        raise LossSettingError("class_weight", value, str(error)) from None


def check_class_counts(
    num_classes: int,
    loss: list[dict[str, Any]],
    aux_loss: list[dict[str, Any]] | None,
    class_weight: str | list[float] | None,
) -> None:
    """Raise :class:`LossSettingError` when a class-weight list (the run's, or a term's own) does not
    hold ``num_classes`` weights."""
    if isinstance(class_weight, list) and len(class_weight) != num_classes:
        raise LossSettingError(
            "class_weight",
            class_weight,
            f"has {len(class_weight)} weights but there are {num_classes} classes: give one per class, or auto",
        )
    for name, terms in (("loss", loss), ("aux_loss", aux_loss or [])):
        for term in terms:
            weights = term.get("class_weight")
            if weights is not None and len(weights) != num_classes:
                raise LossSettingError(
                    name,
                    term["type"],
                    f"the {term['type']} term's class_weight has {len(weights)} weights but there are {num_classes} classes",
                )
