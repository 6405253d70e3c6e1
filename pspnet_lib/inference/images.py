"""Image reading and conversion: moved to :mod:`pspnet_lib.core.images` (the bottom floor, so that
the datasets can use it too); re-exported here because 0.1's docs named this path."""

from ..core.images import (
    ACCEPTED_INPUTS,
    IMAGE_EXTENSIONS,
    is_image_batch,
    load_image,
    pil_to_array,
    pil_to_rgb,
    read_image,
    to_image_tensor,
    to_rgb_tensor,
)

__all__ = [
    "load_image",
    "read_image",
    "pil_to_rgb",
    "pil_to_array",
    "to_rgb_tensor",
    "to_image_tensor",
    "is_image_batch",
    "IMAGE_EXTENSIONS",
    "ACCEPTED_INPUTS",
]
