"""torch.hub entry points of pspnet_lib.

    import torch
    model = torch.hub.load("<owner>/<repo>", "pspnet_r50_d8", pretrained=True, trust_repo=True)
    model = torch.hub.load("/path/to/checkout", "pspnet_r18_d8", pretrained=False, num_classes=5, source="local")
    torch.hub.load("<owner>/<repo>", "list_pretrained", trust_repo=True)

One entry point per architecture family. ``pretrained`` is False (random init), True (the
family's default weights) or a zoo name of that family (``list_pretrained()``); any other
``pspnet_lib.load_pretrained`` source (file, URL, ``hf-hub:``) works too. See docs/hub.md.
"""

dependencies = ["torch", "torchvision", "huggingface_hub", "safetensors", "filelock"]

from pspnet_lib.hub.entrypoints import build_family as _build_family  # noqa: E402
from pspnet_lib.hub.registry import list_pretrained  # noqa: E402,F401  (an entry point too)

_ARGS = """
    Args:
        pretrained: False for random initialisation; True for the default weights ({default});
            or a zoo name of this family (``list_pretrained("pspnet_{code}_*")``), a checkpoint
            file, URL or ``"hf-hub:org/repo"``.
        num_classes: number of classes. With pretrained weights: replaces the classifiers
            (fine-tuning); without: defaults to 21.
        **kwargs: PSPNetConfig overrides (``aux=False``, ``align_corners=True``, ...), and for
            ``pretrained=False`` ``weights_backbone=True`` ({backbone}) or a backbone file/name;
            for pretrained weights the options of ``pspnet_lib.load_pretrained`` (``cache_dir``,
            ``local_files_only``, ...).

    Returns a ``PSPNet`` (in eval mode when pretrained). ``model.pretrained_cfg`` holds the
    classes, palette, preprocessing and inference protocol of the weights.
"""


def _doc(code, summary, default, backbone):
    return summary + "\n" + _ARGS.format(code=code, default=default or "none: pass a file", backbone=backbone or "none")


def pspnet_r18_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r18-d8", pretrained, num_classes, **kwargs)


def pspnet_r50_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r50-d8", pretrained, num_classes, **kwargs)


def pspnet_r101_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r101-d8", pretrained, num_classes, **kwargs)


def pspnet_r18b_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r18b-d8", pretrained, num_classes, **kwargs)


def pspnet_r50b_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r50b-d8", pretrained, num_classes, **kwargs)


def pspnet_r101b_d8(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r101b-d8", pretrained, num_classes, **kwargs)


def pspnet_r50_d32(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r50-d32", pretrained, num_classes, **kwargs)


def pspnet_r50b_d32(pretrained=False, num_classes=None, **kwargs):
    return _build_family("r50b-d32", pretrained, num_classes, **kwargs)


def pspnet_semseg50(pretrained=False, num_classes=None, **kwargs):
    return _build_family("semseg50", pretrained, num_classes, **kwargs)


def pspnet_semseg101(pretrained=False, num_classes=None, **kwargs):
    return _build_family("semseg101", pretrained, num_classes, **kwargs)


def _set_docs():
    from pspnet_lib.hub.entrypoints import FAMILIES

    for code, family in FAMILIES.items():
        fn = globals()["pspnet_" + code.replace("-", "_")]
        fn.__doc__ = _doc(code, f"PSPNet, {family.description}.", family.default_weights, family.default_backbone_weights)


_set_docs()
