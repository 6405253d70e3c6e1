"""Constants shared by datasets, transforms, training and inference."""

#: ImageNet statistics on the 0..1 scale: the input normalisation of every released PSPNet
#: checkpoint (mmsegmentation's mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]
#: on the 0..255 scale are the same numbers).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Mask value for pixels that are not scored (void, borders, padding).
IGNORE_INDEX: int = 255
