"""torch.hub entry points of pspnet_lib.

    import torch
    model = torch.hub.load("<owner>/<repo>", "pspnet_r50_d8", weights="DEFAULT", trust_repo=True)
    model = torch.hub.load("/path/to/checkout", "pspnet_r18_d8", weights=None, num_classes=5, source="local")
    torch.hub.load("<owner>/<repo>", "list_models", trust_repo=True)      # the entry points
    torch.hub.load("<owner>/<repo>", "list_pretrained", trust_repo=True)  # the weights
    torch.hub.load("<owner>/<repo>", "get_weight", name="pspnet_r50-d8_ade20k", trust_repo=True)

One entry point per model (``pspnet_lib.list_models()``), the same builders as
``pspnet_lib.get_model``. ``weights`` is None (random init), ``"DEFAULT"``, a zoo name of that model
or a ``Weights`` entry; ``pretrained=`` (False, True, or any ``pspnet_lib.load_pretrained``
source: file, URL, ``hf-hub:``) works too. See docs/hub.md.
"""

dependencies = ["torch", "torchvision", "huggingface_hub", "safetensors", "filelock"]

from pspnet_lib.hub.entrypoints import ENTRY_POINTS as _ENTRY_POINTS  # noqa: E402
from pspnet_lib.hub.entrypoints import list_models  # noqa: E402,F401  (entry points too)
from pspnet_lib.hub.zoo.registry import get_weight, list_pretrained  # noqa: E402,F401

globals().update(_ENTRY_POINTS)
