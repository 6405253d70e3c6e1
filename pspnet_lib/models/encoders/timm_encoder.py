"""A timm feature extractor as the PSPNet backbone, at the output stride asked for: measured, never trusted.

``TimmEncoder("convnext_tiny", output_stride=8)`` builds ``timm.create_model(name, features_only=True,
output_stride=8, in_chans=...)`` and then *measures* the stride of every returned stage with a
forward pass on the meta device (shapes only: no memory, no arithmetic). Families answer
``output_stride`` in three ways (timm's source, confirmed by ``benchmarks/timm_families.py``):
most CNNs dilate their last stages (ResNet, ConvNeXt, RegNet, EfficientNet, MobileNetV3, ...),
some reject it (an assertion: DLA, HRNet, VGG, ...) and many have no such option (a TypeError:
ViT, Swin, MaxViT, ...); a family that accepted the option and still returned coarser features
would be caught by the measurement. Each of those is one ``ValueError`` naming the family and the
output strides it does reach, never a model that trains at the wrong resolution.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from .._utils import guard_running_stats_in_recompute, is_capturing_graph
from .static_padding import make_same_padding_static
from .stride_probe import PROBE_SIZE, deepest_side, measure_strides, returns_nhwc
from .timm_names import require_timm, timm_family

__all__ = ["TimmEncoder", "OUTPUT_STRIDES", "PROBE_SIZE"]

logger = logging.getLogger(__name__)

#: The output strides a PSPNet may ask of an encoder (as for ResNets).
OUTPUT_STRIDES = (8, 16, 32)


class TimmEncoder(nn.Module):
    """timm's ``features_only`` model of ``name`` whose last stage is at ``output_stride``.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"convnext_tiny.fb_in1k"``);
            checked by :func:`~pspnet_lib.models.encoders.check_timm_name` first.
        output_stride: 8, 16 or 32. 32 builds the model as timm defines it; 8 and 16 pass
            ``output_stride`` to timm, which dilates the last stages of families that support it.
        in_channels: input channels (``in_chans``; timm adapts the first convolution of RGB weights).
        model_kwargs: further constructor settings (``drop_path_rate``; see ``TIMM_KWARGS``).
        pretrained: ImageNet weights for timm's own loader (its filters and input-channel adaptation
            apply): a state dict in timm's layout (as timm's Hub repositories hold it); None =
            random weights. Every tensor of the feature model must be found in it.

    ``forward(x)`` returns the stage features, shallow to deep, as ``(N, C, h, w)`` tensors (NCHW
    even where timm returns NHWC); ``feature_info`` lists ``num_chs``, the *measured*
    ``reduction`` and timm's ``module`` name per stage.

    Raises:
        ImportError: timm is not installed (with the ``pip install`` line).
        ValueError: in one line naming the model and its family: the family cannot reach
            ``output_stride`` (with the strides it does reach), cannot take ``in_channels``, cannot
            run on inputs of another size than its training size, or the weights do not fit.
    """

    #: timm's feature model (``FeatureListNet``, ``EfficientNetFeatures``, ...); typed Any: timm is optional
    model: Any

    def __init__(
        self,
        name: str,
        *,
        output_stride: int = 8,
        in_channels: int = 3,
        model_kwargs: Mapping[str, Any] | None = None,
        pretrained: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        self.name = name
        self.family = timm_family(name.partition(".")[0])
        self.output_stride = output_stride
        self.in_channels = in_channels
        self.model_kwargs = dict(model_kwargs or {})
        self.model, shapes = _build_checked(name, output_stride, in_channels, dict(model_kwargs or {}), pretrained)
        make_same_padding_static(self.model)  # dynamic-size export of dilated stages (torch.export)
        self.nhwc = returns_nhwc(self.model)
        modules = [info.get("module", "") for info in self.model.feature_info.get_dicts()]
        self.feature_info: list[dict] = [
            {"num_chs": channels, "reduction": reduction, "module": module}
            for (channels, reduction), module in zip(shapes, modules)
        ]
        self.grad_checkpointing = False
        self._guards: list[Any] = []

    @property
    def out_channels(self) -> list[int]:
        """Channels of the returned stages."""
        return [info["num_chs"] for info in self.feature_info]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's own gradient checkpointing of the feature model; BatchNorm statistics updated once.

        Raises ``ValueError`` for a family whose feature model has no ``set_grad_checkpointing``.
        """
        if not hasattr(self.model, "set_grad_checkpointing"):
            raise ValueError(f"timm:{self.name} (family {self.family}) offers no gradient checkpointing")
        self.model.set_grad_checkpointing(enable)
        if enable and not self._guards:
            self._guards = guard_running_stats_in_recompute(self.model)
        elif not enable:
            for handle in self._guards:
                handle.remove()
            self._guards = []
        self.grad_checkpointing = enable

    def min_input_size(self, feature_size: int = 1) -> int:
        """The smallest input side for which the deepest stage is at least ``feature_size`` pixels.

        1: the smallest input the encoder runs on (a patchifying stem needs several pixels: 8 for
        ConvNeXt at output stride 8); 2: the smallest a dynamic-size ``torch.export`` accepts (it
        specialises maps of size 1). Measured on the meta device (binary search), then remembered.
        """
        cache = self.__dict__.setdefault("_min_sizes", {})
        if feature_size not in cache:

            def deepest(side: int) -> int:
                try:
                    return deepest_side(self.model, self.in_channels, side)
                except Exception:
                    return 0

            high = 1  # doubling, then bisection: a handful of shape-only passes
            while deepest(high) < feature_size:
                if high > 64 * self.output_stride * feature_size:
                    raise ValueError(f"timm:{self.name} gives no {feature_size}-pixel stage at any input size")
                high *= 2
            low = high // 2 + 1 if high > 1 else 1
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if deepest(mid) >= feature_size else (mid + 1, high)
            cache[feature_size] = low
        return int(cache[feature_size])

    def check_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """``ValueError`` unless ``state_dict`` (timm's layout) holds every tensor of this encoder.

        Works on a model built on the meta device, so weights can be checked before a real build.
        """
        _check_loaded(self.model, state_dict, f"timm:{self.name} (timm family {self.family})")

    def group_matcher(self, coarse: bool = False, prefix: str = "") -> dict[str, Any]:
        """timm's parameter groups, from the feature model's own modules in the order they run.

        ``"stem"``: the modules before the first stage timm returns; ``"blocks"``: each later
        top-level module (``coarse=True``) or each block inside it (the elements of its
        ``Sequential`` / ``ModuleList`` containers). ``prefix`` goes before every name.
        """
        base = f"{prefix}model."
        stages = [str(info.get("module", "")) for info in self.model.feature_info.get_dicts()]
        children = [(n, m) for n, m in self.model.named_children() if _has_parameters(m)]

        def is_stage(child: str) -> bool:
            return any(s == child or s.startswith(child + ".") or s.replace(".", "_") == child for s in stages)

        first = next((i for i, (n, _) in enumerate(children) if is_stage(n)), 0)
        stem = [n for n, _ in children[:first]]
        units: list[str] = []
        for child, module in children[first:]:
            units += [child] if coarse else _blocks(child, module)
        return {
            "stem": rf"^{re.escape(base)}(?:{'|'.join(map(re.escape, stem))})\." if stem else None,
            "blocks": [(rf"^{re.escape(base + unit)}\.", (i,)) for i, unit in enumerate(units)],
        }

    def no_weight_decay(self) -> set[str]:
        """Names (here) of the parameters timm's model exempts from weight decay (position embeddings, ...).

        timm's list-style feature models keep only the classification model's modules, not its
        ``no_weight_decay()``; a feature model that wraps the whole model (``FeatureGetterNet``, as
        ``model.model``) answers through it. None of the families that reach output stride 8 or 16
        has such parameters (norms and biases are exempted by timm's optimiser factory anyway).
        """
        whole = getattr(self.model, "model", None)
        own = getattr(whole, "no_weight_decay", None)
        return {f"model.model.{name}" for name in own()} if callable(own) else set()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            # Recompute whole blocks in backward (no early stop), so that the running-statistics
            # guard restores every BatchNorm it touched.
            with torch.utils.checkpoint.set_checkpoint_early_stop(False):
                features = self.model(x)
        else:
            features = self.model(x)
        features = [f.permute(0, 3, 1, 2) for f in features] if self.nhwc else list(features)
        if is_capturing_graph() and x.is_contiguous():
            # A captured graph gets the features in the input's layout. Families that compute in
            # NHWC (ConvNeXt's permuted LayerNorms) return channels-last strides from an NCHW input;
            # the heads' stride checks on them at a size ``h // 8`` are guards torch.export cannot
            # prove from a user's Dim(min=...) (a batch-1 ``torch.export.export`` failed: issue 23).
            # Eager keeps timm's strides (no copy).
            features = [f.contiguous() for f in features]
        return features


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _blocks(name: str, module: nn.Module) -> list[str]:
    """The blocks of a top-level module: its children with parameters, containers opened one level."""
    units = []
    for child, sub in module.named_children():
        if not _has_parameters(sub):
            continue
        if isinstance(sub, (nn.Sequential, nn.ModuleList)):
            units += [f"{name}.{child}.{k}" for k, c in sub.named_children() if _has_parameters(c)]
        else:
            units.append(f"{name}.{child}")
    return units or [name]


def _create(
    name: str,
    output_stride: int,
    in_channels: int,
    model_kwargs: dict[str, Any],
    pretrained: Mapping[str, torch.Tensor] | None,
) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)``, its errors turned into one-line ``ValueError``."""
    timm = require_timm()
    kwargs: dict[str, Any] = {"features_only": True, "in_chans": in_channels, **model_kwargs}
    if output_stride != 32:  # 32 is every family's own stride: families without the option build too
        kwargs["output_stride"] = output_stride
    if pretrained is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": dict(pretrained)})
    what = f"timm:{name} (timm family {timm_family(name.partition('.')[0])})"
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as exc:
        message = str(exc)
        if "output_stride" in message:
            raise _StrideError(f"{what} has no output_stride option (it cannot dilate)") from None
        if "in_chans" in message:
            raise ValueError(
                f"{what} cannot take in_channels={in_channels}: its constructor has no in_chans option; "
                "use in_channels=3 or another family"
            ) from None
        for key in model_kwargs:
            if key in message:
                raise ValueError(f"{what} has no {key} setting; remove it from backbone_kwargs") from None
        raise ValueError(f"{what} cannot build a feature extractor (features_only=True): {message}") from None
    except (AssertionError, ValueError, NotImplementedError) as exc:
        if output_stride != 32:
            detail = f" ({type(exc).__name__}: {exc})" if str(exc) else ""
            raise _StrideError(f"{what} rejects output_stride={output_stride}{detail}") from None
        raise ValueError(f"{what} cannot build a feature extractor (features_only=True): {exc}") from None
    except RuntimeError as exc:
        if pretrained is not None and ("size mismatch" in str(exc) or "state_dict" in str(exc)):
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            raise ValueError(f"the backbone weights do not fit {what}: {' '.join(lines[:3])[:300]}") from None
        raise
    # timm keeps the pretrained_cfg (with our weights in it) on the model: drop them, so that no
    # copy of the weights stays referenced.
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        cfg.pop("state_dict", None)
    if pretrained is not None:
        _check_loaded(model, pretrained, what)
    return model


def _check_loaded(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Every tensor of the feature model must have come from ``state_dict``.

    timm loads backbone weights non-strictly (a feature model has no classifier), so weights of
    another model would load nothing and say so only in a log line. A feature model's names are
    the classification model's, with the first dot of flattened ``Sequential`` stages written
    ``_`` (``stages.0`` -> ``stages_0``); a name found there with the same shape was loaded
    (``load_state_dict`` refuses shape mismatches).
    """
    names = set(state_dict) | {k.replace(".", "_", 1) for k in state_dict}
    missing = [k for k in model.state_dict() if k not in names and not k.endswith("num_batches_tracked")]
    if missing:
        total = len(model.state_dict())
        raise ValueError(
            f"the backbone weights do not fit {what}: {len(missing)} of its {total} tensors are not in them "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); pass weights of this model in timm's layout"
        )


class _StrideError(ValueError):
    """The family cannot give the output stride asked for (the message says how)."""


#: ``(name, output_stride, in_channels, settings) -> [(channels, stride), ...]`` measured so far.
_MEASURED: dict[tuple[str, int, int, str], list[tuple[int, int]]] = {}


def _build_and_measure(
    name: str,
    output_stride: int,
    in_channels: int,
    model_kwargs: dict[str, Any],
    pretrained: Mapping[str, torch.Tensor] | None,
) -> tuple[nn.Module, list[tuple[int, int]]]:
    """Build and measure; a model whose last stage is not at ``output_stride`` raises :class:`_StrideError`."""
    model = _create(name, output_stride, in_channels, model_kwargs, pretrained)
    what = f"timm:{name} (timm family {timm_family(name.partition('.')[0])})"
    # The strides depend on the architecture only (not on weights or device): measured once per
    # process for each, so that the meta-device probe and the real build of a load measure once.
    # (The full name: a pretrained tag may set a fixed input size.)
    key = (name, output_stride, in_channels, repr(sorted(model_kwargs.items())))
    try:
        shapes = _MEASURED[key] if key in _MEASURED else measure_strides(model, in_channels)
    except Exception as exc:
        raise ValueError(
            f"{what} cannot run on {PROBE_SIZE}x{PROBE_SIZE} and {2 * PROBE_SIZE}x{2 * PROBE_SIZE} inputs "
            f"({type(exc).__name__}: {str(exc)[:200]}); "
            "PSPNet needs encoders that take any input size"
        ) from None
    if not shapes:
        raise ValueError(f"{what} returned no feature maps")
    _MEASURED[key] = shapes
    measured = shapes[-1][1]
    if measured != output_stride:
        asked = "" if output_stride == 32 else f" (it ignores output_stride={output_stride})"
        raise _StrideError(f"{what} has its last stage at stride {measured}, measured, not {output_stride}{asked}")
    return model, shapes


def reachable_strides(
    name: str, in_channels: int = 3, model_kwargs: Mapping[str, Any] | None = None
) -> dict[int, str | None]:
    """For each output stride of 8, 16, 32: None if ``name``'s family reaches it, else why not.

    Built and measured on the meta device (nothing allocated or computed).
    """
    found: dict[int, str | None] = {}
    for stride in OUTPUT_STRIDES:
        try:
            with torch.device("meta"):
                _build_and_measure(name, stride, in_channels, dict(model_kwargs or {}), None)
        except ValueError as exc:
            found[stride] = str(exc).split(") ", 1)[-1]  # without the "timm:name (timm family f)" prefix
            continue
        found[stride] = None
    return found


def _build_checked(
    name: str,
    output_stride: int,
    in_channels: int,
    model_kwargs: dict[str, Any],
    pretrained: Mapping[str, torch.Tensor] | None,
) -> tuple[nn.Module, list[tuple[int, int]]]:
    try:
        return _build_and_measure(name, output_stride, in_channels, model_kwargs, pretrained)
    except _StrideError as exc:
        reasons = reachable_strides(name, in_channels, model_kwargs)
        strides = [s for s, reason in reasons.items() if reason is None and s != output_stride]
        if strides:
            supported = f"it supports output_stride {' and '.join(map(str, strides))}"
        else:
            supported = (
                f"it reaches none of {', '.join(map(str, OUTPUT_STRIDES))} (at 32, its own stride: it {reasons[32]})"
            )
        raise ValueError(
            f"{exc}; {supported}. The families that reach output stride 8 by dilation are listed in docs/model.md"
        ) from None
