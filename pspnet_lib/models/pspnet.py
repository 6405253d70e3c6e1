"""PSPNet: a backbone (the dilated ResNet, or a timm encoder), the pyramid pooling head and an auxiliary FCN head."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelHubMixin, PyTorchModelHubMixin

from ._utils import is_symbolic_tracing, make_norm_layer
from .config import BACKBONES, MAX_NUM_CLASSES, PSPNetConfig
from .conventions import BackboneConventions
from .encoders import build_encoder
from .heads import FCNHead, PSPHead, make_classifier
from .variants import PRESETS

__all__ = ["PSPNetConfig", "PSPNet", "build_pspnet", "PRESETS", "BACKBONES", "MAX_NUM_CLASSES"]

logger = logging.getLogger(__name__)


@torch.fx.wrap
def _select_outputs(return_aux: Any, main: torch.Tensor, aux: torch.Tensor | None) -> Any:
    """``model(x, return_aux)`` of an FX-traced PSPNet: the choice is made when the graph runs.

    A leaf of the traced graph (``torch.fx.wrap``), so a ``GraphModule`` keeps the ``return_aux``
    argument of the eager model instead of freezing one branch.
    """
    if not return_aux:
        return main
    if aux is None:
        raise ValueError(_NO_AUX)
    return main, aux


_NO_AUX = (
    "return_aux=True needs the auxiliary head, but this model was built with aux=False; "
    "build it with aux=True or call model(x) for the main logits only"
)


def _attach(main: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """``main`` unchanged, with ``aux`` joined to its autograd graph with a zero weight.

    In training mode ``model(x)`` computes the auxiliary head too, so that every parameter takes
    part in the backward pass and ``DistributedDataParallel(model)`` works with its default
    ``find_unused_parameters=False`` (the aux head then receives zero gradients; train it with
    ``model(x, return_aux=True)``). One aux value is enough to connect the graph;
    ``nan_to_num`` keeps a non-finite aux logit from turning ``0 * x`` into NaN.
    """
    return main + torch.nan_to_num(aux[:1, :1, :1, :1]).mul(0)


# huggingface_hub < 0.29 has no paper_url (a TypeError at import); our own model card cites the paper anyway.
_PAPER_URL = (
    {"paper_url": "https://arxiv.org/abs/1612.01105"}
    if "paper_url" in inspect.signature(ModelHubMixin.__init_subclass__).parameters
    else {}
)


class PSPNet(
    BackboneConventions,
    PyTorchModelHubMixin,
    library_name="pspnet_lib",
    pipeline_tag="image-segmentation",
    tags=["pspnet", "semantic-segmentation"],
    **_PAPER_URL,
):
    """Pyramid Scene Parsing Network (Zhao et al., CVPR 2017).

    Args:
        config: a :class:`PSPNetConfig` (or a mapping of its fields). Use :func:`build_pspnet`
            for the usual way to make one.
        pretrained_cfg: what a user of the weights needs besides the architecture: the input
            normalisation (``mean``/``std`` on the 0..1 scale), ``classes``, ``palette``,
            ``ignore_index`` and the ``inference`` protocol the published numbers used. Set by
            :func:`~pspnet_lib.load_pretrained`; empty for a freshly built model, in which case
            ImageNet statistics and whole-image inference are assumed. See docs/weights.md.
        norm_layer: optional factory ``channels -> nn.Module`` replacing ``config.norm``
            (not stored in the config). A timm backbone keeps its own norms: ``norm`` and
            ``norm_layer`` then apply to the heads.
        encoder: the backbone, already built for ``config`` (e.g. a timm encoder with ImageNet
            weights, as ``build_pspnet(..., weights_backbone=...)`` makes); default: built from
            ``config`` with random weights (:mod:`pspnet_lib.models.encoders`).

    ``model(x)`` returns logits ``(N, num_classes, H, W)`` at the input's own size, for any
    ``H, W >= 1`` (a timm backbone may need a few pixels more: 8 for ConvNeXt, whose stem
    patchifies; a smaller input is a ``ValueError`` saying so); ``model(x, return_aux=True)`` returns ``(main, aux)``. The input is a float
    tensor ``(N, in_channels, H, W)``, normalised as the weights expect (ImageNet mean/std for
    every released checkpoint). In training mode ``model(x)`` also runs the auxiliary head and
    joins it to the graph with weight zero, so that ``DistributedDataParallel`` works without
    ``find_unused_parameters`` (docs/training.md); the returned values are unchanged.

    ``config.backbone`` is a ResNet (``"resnet50"``: the paper's dilated network) or any timm model
    that reaches the output stride (``"timm:convnext_tiny"``; docs/model.md lists the families).
    The pyramid takes the backbone's last stage, the auxiliary head the stage before.

    The model traces with ``torch.fx.symbolic_trace`` (input checks run in eager mode only), so
    ``torchvision.models.feature_extraction.create_feature_extractor`` works on it; node names
    are in docs/model.md.

    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (from ``huggingface_hub``'s
    ``PyTorchModelHubMixin``) write and read ``config.json`` (the config and ``pretrained_cfg``),
    ``model.safetensors`` and a model card; see docs/hub.md.
    """

    #: How the weights were loaded (a :class:`pspnet_lib.hub.LoadReport`), set by the loaders; a
    #: model built without weights has none. (Typed Any: the models floor does not import hub.)
    load_report: Any
    #: the backbone: a :class:`~pspnet_lib.models.resnet.ResNet` or a timm encoder
    #: (:class:`~pspnet_lib.models.encoders.timm_encoder.TimmEncoder`), see :mod:`pspnet_lib.models.encoders`
    backbone: Any

    def __init__(
        self,
        config: PSPNetConfig | Mapping[str, Any] | None = None,
        *,
        pretrained_cfg: Mapping[str, Any] | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pretrained_cfg: dict[str, Any] = dict(pretrained_cfg or {})
        if config is None:
            config = PSPNetConfig()
        elif not isinstance(config, PSPNetConfig):
            config = PSPNetConfig.from_dict(config)
        self.config = config
        norm_layer = norm_layer or make_norm_layer(config.norm, config.norm_groups)
        self.backbone = encoder if encoder is not None else build_encoder(config, norm_layer)
        channels = self.backbone.out_channels
        if config.ppm_channels is None:  # a timm backbone's: known once it is built
            config.ppm_channels = channels[-1] // len(config.bins)
        if config.aux and len(channels) < 2:
            raise ValueError(
                f"{config.backbone} returns one feature stage; the auxiliary head needs two: build with aux=False"
            )
        # PSPNetConfig.__post_init__ fills the widths left as None.
        assert config.head_channels is not None and config.aux_channels is not None
        self.decode_head = PSPHead(
            channels[-1],
            config.num_classes,
            channels=config.head_channels,
            bins=config.bins,
            branch_channels=config.ppm_channels,
            dropout=config.dropout,
            norm_layer=norm_layer,
            align_corners=config.align_corners,
        )
        self.aux_head = (
            FCNHead(
                channels[-2], config.num_classes, config.aux_channels, dropout=config.dropout, norm_layer=norm_layer
            )
            if config.aux
            else None
        )

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def feature_info(self) -> list[dict]:
        """Channels (``num_chs``), stride (``reduction``) and module of each stage :meth:`forward_features` returns
        (ResNets also give the ``dilation``; a timm backbone's strides are measured)."""
        return self.backbone.feature_info

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in training: recompute backbone stages and the PSP head in backward."""
        self.backbone.set_grad_checkpointing(enable)
        self.decode_head.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        """Replace both classifiers with freshly initialised ones for ``num_classes`` classes.

        ``num_classes=0`` removes them (timm's convention): ``model(x)`` then returns the PSP
        head's features ``(N, head_channels, h, w)`` at the feature map's size (``h = ceil(H / 8)``
        for output stride 8), and ``return_aux=True`` also the aux head's ``(N, aux_channels, h, w)``.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer (0: no classifier), got {num_classes!r}")
        self.config.num_classes = num_classes
        heads = [self.decode_head] + ([self.aux_head] if self.aux_head is not None else [])
        reference = next(self.decode_head.parameters())
        for head in heads:
            head.classifier = make_classifier(head.channels, num_classes).to(reference.device, reference.dtype)

    def get_classifier(self) -> nn.Module:
        """The main classifier (``decode_head.classifier``: a 1x1 conv, ``nn.Identity`` when ``num_classes=0``)."""
        return self.decode_head.classifier

    def forward_head(self, features: list[torch.Tensor] | torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The PSP head on :meth:`forward_features`' output (or its last stage), at the feature map's size.

        Returns logits ``(N, num_classes, h, w)``, or with ``pre_logits=True`` the features before
        dropout and classifier ``(N, head_channels, h, w)``. ``model(x)`` (eval mode) equals
        ``F.interpolate(model.forward_head(model.forward_features(x)), x.shape[-2:], mode="bilinear",
        align_corners=model.config.align_corners)``.
        """
        last = features if isinstance(features, torch.Tensor) else features[-1]
        if pre_logits:
            return self.decode_head.forward_features(last)
        return self.decode_head(last)

    def predict(self, images: Any, **kwargs: Any) -> Any:
        """Segment images given as paths, PIL images, arrays or tensors; see :func:`pspnet_lib.predict`."""
        from ..inference.predict import predict

        return predict(self, images, **kwargs)

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"PSPNet expects a torch.Tensor of shape (N, {self.config.in_channels}, H, W), got {type(x).__name__}; "
                "for images, paths or arrays use pspnet_lib.predict / model.predict, which preprocess them"
            )
        if x.ndim != 4:
            hint = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
            raise ValueError(
                f"PSPNet expects a 4-D input (N, {self.config.in_channels}, H, W), got shape {tuple(x.shape)}.{hint}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"PSPNet expects a floating-point input, got {x.dtype}. Convert and normalise first, e.g. "
                "x.float() / 255 followed by ImageNet mean/std normalisation "
                "(get_weight(name).transforms() does this)."
            )
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"PSPNet was built for {self.config.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}). If your tensor is channels-last (N, H, W, C), permute it with "
                "x.permute(0, 3, 1, 2); for other channel counts build the model with in_channels=..."
            )
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"PSPNet needs H, W >= 1, got shape {tuple(x.shape)}")

    def _run_backbone(self, x: torch.Tensor) -> list[torch.Tensor]:
        try:
            return self.backbone(x)
        except RuntimeError:
            # A timm backbone may need a few pixels (a patchifying stem): say so instead of a
            # convolution's size error. Measured only here, when an input failed.
            smallest = getattr(self.backbone, "min_input_size", None)
            if callable(smallest) and not is_symbolic_tracing() and not torch.compiler.is_compiling():
                side = smallest(1)
                if x.shape[2] < side or x.shape[3] < side:
                    raise ValueError(
                        f"{self.config.backbone} needs inputs of at least {side}x{side} pixels, got shape "
                        f"{tuple(x.shape)}; pad or resize the image"
                    ) from None
            raise

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stage features, shallow to deep (ResNet: layer1..layer4; see :attr:`feature_info`)."""
        if not is_symbolic_tracing():
            self._check_input(x)
        return self._run_backbone(x)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not is_symbolic_tracing():
            if return_aux and self.aux_head is None:
                raise ValueError(_NO_AUX)
            self._check_input(x)
        # With num_classes=0 the heads return features, which stay at the feature map's size.
        size = x.shape[-2:] if self.config.num_classes > 0 else None
        features = self._run_backbone(x)
        main = self._upsample(self.decode_head(features[-1]), size)
        if isinstance(return_aux, torch.fx.Proxy):
            # FX tracing: build both outputs and let the graph pick at run time (_select_outputs).
            aux = self._upsample(self.aux_head(features[-2]), size) if self.aux_head is not None else None
            if aux is not None and self.training:
                main = _attach(main, aux)
            return _select_outputs(return_aux, main, aux)
        if not return_aux:
            if self.training and self.aux_head is not None and torch.is_grad_enabled():
                return _attach(main, self.aux_head(features[-2]))
            return main
        if self.aux_head is None:
            raise ValueError(_NO_AUX)
        return main, self._upsample(self.aux_head(features[-2]), size)

    def _upsample(self, logits: torch.Tensor, size) -> torch.Tensor:
        if size is None:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.config.align_corners)

    # --- Hugging Face Hub (PyTorchModelHubMixin); the implementations live in pspnet_lib.hub.hf ---

    def _save_pretrained(self, save_directory: Path) -> None:
        from ..hub.hf import save_model_files

        save_model_files(self, save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs: Any) -> PSPNet:
        from ..hub.hf import from_pretrained_files

        return from_pretrained_files(cls, model_id, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        from ..hub.model_card import generate_model_card

        return generate_model_card(self, **kwargs)


_LOAD_OPTIONS = {
    "cache_dir",
    "local_files_only",
    "progress",
    "strict",
    "trust_pickle",
    "revision",
    "pretrained_cfg",
    "rgb_bands",
}
#: the options of reading backbone weights (weights_backbone=)
_SOURCE_OPTIONS = {"cache_dir", "local_files_only", "progress", "trust_pickle", "revision"}


def build_pspnet(
    backbone: str = "resnet50",
    num_classes: int | None = None,
    *,
    weights: Any = None,
    preset: str | None = None,
    config: PSPNetConfig | Mapping[str, Any] | None = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
    weights_backbone: str | os.PathLike | None = None,
    **overrides: Any,
) -> PSPNet:
    """Build a PSPNet.

    Args:
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``
            (the paper's dilated ResNet), or ``"timm:<name>"``: any timm model whose family reaches
            ``output_stride`` (``"timm:convnext_tiny"``; needs ``pip install "pspnet_lib[timm]"``;
            the families and the strides they reach are listed in docs/model.md). The stride a
            timm encoder really has is measured when it is built: one that cannot reach
            ``output_stride`` is a ``ValueError`` naming its family and the strides it reaches.
        num_classes: number of output classes (default 21; with ``weights``: as in the weights,
            another value replaces the classifiers for fine-tuning).
        weights: torchvision's ``weights=``: None (random initialisation), ``"DEFAULT"`` (the
            default weights of the named model with this architecture, see
            :func:`~pspnet_lib.list_models`), a zoo name or a ``Weights`` entry. The weights must fit
            the backbone and any layout field given; the model is returned in eval mode.
        preset: a named set of overrides from :data:`PRESETS`: ``"mmseg"`` (default layout, deep
            stem 32-32-64), ``"mmseg-b"`` (7x7 stem) or ``"semseg"`` (the author's layout).
        config: a full config (or mapping, e.g. a loaded ``config.json``); when given,
            ``backbone``/``num_classes`` defaults are ignored and ``overrides`` apply on top.
        norm_layer: a custom norm factory (e.g. ``functools.partial(nn.GroupNorm, 16)``).
        weights_backbone: ImageNet weights for the backbone only (heads stay randomly
            initialised): a zoo name such as ``"resnet50_v1c"`` or ``"resnet50_torchvision"``
            (see :func:`~pspnet_lib.list_pretrained`), a file or a URL. The stem type follows the
            weights unless set explicitly. For a timm backbone: ``"DEFAULT"`` (timm's weights of
            the name, its default pretrained tag unless the name has one), a pretrained tag
            (``"fb_in22k"``), ``"hf-hub:org/repo"`` or a ``.safetensors`` / checkpoint file in
            timm's layout; read through timm's pretrained configs and the Hugging Face cache
            (``local_files_only=True`` / ``HF_HUB_OFFLINE=1``: never the network), with the
            encoder's mean/std recorded in ``model.pretrained_cfg``. See docs/weights.md. With
            ``in_channels=N`` (and optionally ``rgb_bands=(r, g, b)``) the RGB weights of the first
            convolution are adapted to N bands (see :func:`~pspnet_lib.load_pretrained`).
        **overrides: any :class:`PSPNetConfig` field (``aux=False``, ``output_stride=16``, ...);
            with ``weights`` also :func:`~pspnet_lib.load_pretrained`'s options (``cache_dir``,
            ``local_files_only``, ``progress``, ...); with ``weights_backbone`` ``cache_dir``,
            ``local_files_only``, ``progress``, ``revision`` and ``trust_pickle``.

    Example::

        model = build_pspnet("resnet50", num_classes=150)
        model = build_pspnet("resnet101", num_classes=19, preset="semseg")
        model = build_pspnet("resnet50", num_classes=19, weights_backbone="resnet50_v1c")
        model = build_pspnet("timm:convnext_tiny", num_classes=19, weights_backbone="DEFAULT")
    """
    if config is not None:
        base = config.to_dict() if isinstance(config, PSPNetConfig) else dict(config)
        if num_classes is not None:
            base["num_classes"] = num_classes
    else:
        base = {"backbone": backbone, "num_classes": 21 if num_classes is None else num_classes}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        base.update(PRESETS[preset])
    # load_pretrained's options (cache_dir=, progress=, ...) apply when weights= is given
    load_options = {k: overrides.pop(k) for k in _LOAD_OPTIONS & set(overrides)} if weights is not None else {}
    rgb_bands = overrides.pop("rgb_bands", None)
    if rgb_bands is not None and weights is None and weights_backbone is None:
        raise ValueError("rgb_bands places RGB weights in a model of in_channels bands: pass it with weights_backbone=")
    if weights_backbone is not None:
        load_options = {k: overrides.pop(k) for k in _SOURCE_OPTIONS & set(overrides)}
    base.update(overrides)
    if weights is not None:
        if weights_backbone is not None or norm_layer is not None:
            raise ValueError(
                "weights= loads a whole model: it cannot be combined with weights_backbone= or norm_layer="
            )
        from ..hub.entrypoints import build_with_weights

        explicit = set(overrides) | set(PRESETS.get(preset or "", {})) | (set(base) if config is not None else set())
        return build_with_weights(base, explicit, weights, num_classes, **load_options)
    if weights_backbone is not None:
        from ..hub.loading import build_with_backbone_weights

        explicit = set(overrides) | set(PRESETS.get(preset or "", {})) | (set(base) if config is not None else set())
        return build_with_backbone_weights(
            base, weights_backbone, explicit=explicit, norm_layer=norm_layer, rgb_bands=rgb_bands, **load_options
        )
    return PSPNet(PSPNetConfig.from_dict(base), norm_layer=norm_layer)
