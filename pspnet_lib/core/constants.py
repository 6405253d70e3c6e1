"""Constants shared by datasets, transforms, training and inference."""

#: ImageNet statistics on the 0..1 scale: the input normalisation of every released PSPNet
#: checkpoint (mmsegmentation's mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]
#: on the 0..255 scale are the same numbers).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The ``"format"`` marker of the trainer's checkpoints (:mod:`pspnet_lib.engine.checkpoint`),
#: here so that the loaders can recognise one without importing the trainer.
CHECKPOINT_FORMAT: str = "pspnet_lib.train_checkpoint"

#: Bounds of stored class and channel counts (checked before anything is allocated). Label maps
#: are stored in at most 16 bits (PNG), hence 65536 classes; 1024 input channels is far above any
#: published model's yet keeps a model built from a stranger's file within memory.
MAX_NUM_CLASSES: int = 65536
MAX_IN_CHANNELS: int = 1024

#: Mask value for pixels that are not scored (void, borders, padding).
IGNORE_INDEX: int = 255

#: Statistics for models of other than 3 input channels whose weights record none: ImageNet's
#: mean and std averaged over R, G and B, repeated per channel (like timm's adaptation of RGB
#: weights to other channel counts). Weights trained on other data should store their own.
GENERIC_MEAN: float = sum(IMAGENET_MEAN) / 3
GENERIC_STD: float = sum(IMAGENET_STD) / 3


def input_channels(model: object) -> int:
    """``model.config.in_channels`` (3 for a module without a PSPNet config)."""
    return int(getattr(getattr(model, "config", None), "in_channels", 3) or 3)
