"""Training and evaluation: loss, optimisation, the Trainer, checkpoints, distributed helpers and metrics."""

from .evaluate import evaluate, normalize_images
from .loss import PSPNetLoss, check_target
from .metrics import ConfusionMatrix, format_metrics_table, metrics_to_json
from .optim import PolyLambda, build_optimizer, build_poly_scheduler, param_groups
from .trainer import NonFiniteLossError, TrainConfig, Trainer, set_seed

__all__ = [
    "ConfusionMatrix",
    "NonFiniteLossError",
    "PSPNetLoss",
    "PolyLambda",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_poly_scheduler",
    "check_target",
    "evaluate",
    "format_metrics_table",
    "metrics_to_json",
    "normalize_images",
    "param_groups",
    "set_seed",
]
