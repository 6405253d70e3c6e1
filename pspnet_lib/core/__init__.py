"""The bottom floor (docs/architecture.md): what every other part of the package shares.

Constants (normalisation, ignore index, the checkpoint marker), image reading and conversion,
palettes, keep-ratio geometry, and the typed ``pretrained_cfg`` (:class:`PretrainedCfg`,
:class:`InferenceProtocol`). Modules here import nothing from the rest of ``pspnet_lib``
except ``_version`` and ``_files``.
"""

from .inference_protocol import InferenceProtocol
from .pretrained_cfg import PretrainedCfg

__all__ = ["InferenceProtocol", "PretrainedCfg"]
