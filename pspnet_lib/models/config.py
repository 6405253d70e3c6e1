"""``PSPNetConfig``: every architecture choice of a PSPNet, checked before anything is allocated."""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.constants import MAX_IN_CHANNELS, MAX_NUM_CLASSES
from ..core.escape import printable, short_repr
from ._utils import NORM_TYPES
from .encoders.timm_names import check_timm_kwargs, check_timm_name, is_timm_backbone
from .resnet import OUTPUT_STRIDES, RESNET_DEPTHS

__all__ = ["PSPNetConfig", "BACKBONES"]

logger = logging.getLogger(__name__)

#: The ResNet backbones; any timm model that reaches the output stride is ``"timm:<name>"`` too.
BACKBONES = tuple(f"resnet{d}" for d in RESNET_DEPTHS)

#: The ResNet-only layout fields and their defaults: a timm backbone keeps its own stem and dilations.
_RESNET_ONLY = {"stem": "deep", "stem_channels": 64, "base_channels": 64, "contract_dilation": True, "dilations": None}


#: Bounds of the architecture values (checked before anything is allocated). Label maps are
#: stored in at most 16 bits (PNG), hence 65536 classes; widths and channel counts are far above
#: any published model's (2048) yet keep a model built from a stranger's file within memory.
#: (MAX_NUM_CLASSES and MAX_IN_CHANNELS are core.constants': stored pretrained_cfg uses them too.)
MAX_CHANNELS = 8192
MAX_BIN = 64
MAX_DILATION = 64


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {short_repr(value)}; expected one of {', '.join(allowed)}")
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        what = f"a positive integer (at most {high})" if low == 1 else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {what}, got {short_repr(value)}")
    return int(value)


def _int_list(name: str, value: Any, low: int, high: int, *, max_len: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= max_len:
        raise ValueError(f"{name} must be a list of 1 to {max_len} integers, got {short_repr(value)}")
    return [_integer(f"{name}[{i}]", v, low, high) for i, v in enumerate(value)]


@dataclass
class PSPNetConfig:
    """Every architecture choice of a PSPNet; ``PSPNetConfig(**json.load(f))`` rebuilds a model.

    Defaults reproduce mmsegmentation's ``pspnet_r50-d8`` (where most released weights come from).
    See docs/model.md for each field and which released weights use which value.
    """

    backbone: str = "resnet50"
    num_classes: int = 21
    in_channels: int = 3
    stem: str = "deep"
    stem_channels: int = 64
    base_channels: int = 64
    output_stride: int = 8
    contract_dilation: bool = True
    dilations: list[int] | None = None
    bins: list[int] = field(default_factory=lambda: [1, 2, 3, 6])
    ppm_channels: int | None = None
    head_channels: int | None = None
    aux: bool = True
    aux_channels: int | None = None
    dropout: float = 0.1
    align_corners: bool = False
    norm: str = "batch"
    norm_groups: int = 32
    backbone_kwargs: dict[str, float] | None = None

    def __post_init__(self) -> None:
        # Every value is checked for type and range here, before anything is allocated: a config
        # may come from a stranger's config.json (issue 10: num_classes=10**9 asked for 512 GB).
        if is_timm_backbone(self.backbone):
            check_timm_name(self.backbone)  # unknown names and a missing timm fail here, before any build
            for name, default in _RESNET_ONLY.items():
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} applies to ResNet backbones only; {self.backbone} keeps "
                        f"its own layout (leave {name} at its default {default!r})"
                    )
        else:
            if isinstance(self.backbone, str) and self.backbone not in BACKBONES:
                try:  # "convnext_tiny" where "timm:convnext_tiny" was meant
                    import timm

                    known = timm.is_model(self.backbone)
                except ImportError:
                    known = False
                if known:
                    raise ValueError(
                        f"unknown backbone {self.backbone!r}; for timm's model write backbone='timm:{self.backbone}'"
                    )
            self.backbone = _choice("backbone", self.backbone, BACKBONES + ("timm:<name>",))
            if self.backbone_kwargs is not None:
                raise ValueError("backbone_kwargs applies to timm backbones ('timm:<name>') only")
        self.backbone_kwargs = check_timm_kwargs(self.backbone_kwargs)
        self.stem = _choice("stem", self.stem, ("standard", "deep"))
        self.norm = _choice("norm", self.norm, tuple(NORM_TYPES))
        # num_classes=0: no classifiers, the model returns head features (timm's convention)
        if not (
            isinstance(self.num_classes, numbers.Integral)
            and not isinstance(self.num_classes, bool)
            and self.num_classes == 0
        ):
            value = self.num_classes
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_NUM_CLASSES:
                raise ValueError(
                    f"num_classes must be an integer in [1, {MAX_NUM_CLASSES}] (the number of classes), or 0 for no "
                    f"classifier (the model then returns head features); got {short_repr(value)}"
                )
            self.num_classes = int(value)
        self.in_channels = _integer("in_channels", self.in_channels, 1, MAX_IN_CHANNELS)
        self.stem_channels = _integer("stem_channels", self.stem_channels, 1, MAX_CHANNELS)
        # layer4 is 8 * base_channels wide (x4 for Bottleneck): bounded like every other width
        self.base_channels = _integer("base_channels", self.base_channels, 1, MAX_CHANNELS // 32)
        self.norm_groups = _integer("norm_groups", self.norm_groups, 1, MAX_CHANNELS)
        self.output_stride = _integer("output_stride", self.output_stride, 1, 64)
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride!r}")
        for name in ("ppm_channels", "head_channels", "aux_channels"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _integer(name, value, 1, MAX_CHANNELS))
        for name in ("contract_dilation", "aux", "align_corners"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {short_repr(getattr(self, name))}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, numbers.Real)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be a number in [0, 1), got {short_repr(self.dropout)}")
        self.dropout = float(self.dropout)
        self.bins = _int_list("bins", self.bins, 1, MAX_BIN, max_len=16)
        if self.dilations is not None:
            self.dilations = _int_list("dilations", self.dilations, 1, MAX_DILATION, max_len=4)
            if len(self.dilations) != 4:
                raise ValueError(f"dilations must list 4 integers (one per ResNet stage), got {self.dilations!r}")
        if is_timm_backbone(self.backbone):
            # smp's and mmsegmentation's widths for timm encoders; ppm_channels (C_last // len(bins))
            # is resolved by PSPNet from the encoder's measured channels.
            self.head_channels = 512 if self.head_channels is None else self.head_channels
            self.aux_channels = 256 if self.aux_channels is None else self.aux_channels
            return
        # Resolve the depth-dependent widths so that the stored config is explicit.
        basic = RESNET_DEPTHS[self.depth][0].expansion == 1
        if self.head_channels is None:
            self.head_channels = 128 if basic else 512
        if self.aux_channels is None:
            self.aux_channels = 64 if basic else 256
        if self.ppm_channels is None:
            self.ppm_channels = self.backbone_channels[3] // len(self.bins)
            if self.ppm_channels < 1:  # only a very narrow base_channels with many bins gets here
                raise ValueError(
                    f"ppm_channels would be 0 (layer4's {self.backbone_channels[3]} channels over {len(self.bins)} "
                    f"bins); set ppm_channels or a larger base_channels (got {self.base_channels})"
                )

    @property
    def is_timm(self) -> bool:
        """Whether the backbone is a timm model (``"timm:<name>"``)."""
        return is_timm_backbone(self.backbone)

    @property
    def depth(self) -> int:
        """The ResNet depth (18 ... 152); ``AttributeError`` for a timm backbone (``getattr`` defaults apply)."""
        if self.is_timm:
            raise AttributeError(f"{self.backbone} is not a ResNet: it has no depth")
        return int(self.backbone.removeprefix("resnet"))

    @property
    def backbone_channels(self) -> list[int]:
        """Channels of the four ResNet stages; ``AttributeError`` for a timm backbone (its channels are
        ``model.backbone.out_channels``, known once it is built)."""
        expansion = RESNET_DEPTHS[self.depth][0].expansion
        return [self.base_channels * 2**i * expansion for i in range(4)]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``backbone_kwargs`` only when set and ``base_channels`` only
        when not 64: the configs of every released model stay as before)."""
        values = dataclasses.asdict(self)
        if values["backbone_kwargs"] is None:
            del values["backbone_kwargs"]
        if values["base_channels"] == 64:
            del values["base_channels"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str | None = None, unknown: str = "error") -> PSPNetConfig:
        """Build a config from a mapping, validating every value before anything is allocated.

        Args:
            source: where ``values`` came from (a file name); errors then start with it.
            unknown: ``"error"`` rejects unknown keys listing the valid ones; ``"warn"`` logs a
                warning naming ``source`` and the keys, and ignores them (files written by a newer
                version).

        Raises ``ValueError`` in one line naming the key, the expected type/range and the value.
        """
        prefix = f"{source}: " if source else ""
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{prefix}the architecture config must be a JSON object / mapping, got {type(values).__name__}"
            )
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(printable(k, 80) for k in values if k not in valid)
        if bad and isinstance(values.get("config"), Mapping):
            raise ValueError(
                f"{prefix}this looks like the config.json of a save_pretrained folder, which holds the architecture under "
                "'config': pass values['config'] (or load the folder with pspnet_lib.load_pretrained(folder))"
            )
        if bad and unknown != "warn":
            raise ValueError(f"{prefix}unknown PSPNet option(s) {bad}; valid options are: {', '.join(sorted(valid))}")
        if bad:
            logger.warning("%signoring unknown architecture key(s) %s (written by another version?)", prefix, bad)
        try:
            return cls(**{k: v for k, v in values.items() if k in valid})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{prefix}{exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
