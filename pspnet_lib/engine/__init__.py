"""Training and evaluation: settings, losses and class weights, optimisation, the Trainer, a training run
from a recipe, checkpoints, distributed helpers and metrics."""

from .class_weights import compute_class_weights
from .config import SettingError, TrainConfig
from .evaluate import evaluate, normalize_images
from .evaluate_dataset import DatasetEvaluation, evaluate_dataset
from .loss import PSPNetLoss, check_target
from .metrics import ConfusionMatrix, format_metrics_table, metrics_to_json
from .optim import PolyLambda, build_optimizer, build_poly_scheduler, param_groups
from .run import TrainingRun
from .sampler import set_seed
from .trainer import NonFiniteLossError, Trainer

__all__ = [
    "ConfusionMatrix",
    "DatasetEvaluation",
    "NonFiniteLossError",
    "PSPNetLoss",
    "PolyLambda",
    "SettingError",
    "TrainConfig",
    "Trainer",
    "TrainingRun",
    "build_optimizer",
    "build_poly_scheduler",
    "check_target",
    "compute_class_weights",
    "evaluate",
    "evaluate_dataset",
    "format_metrics_table",
    "metrics_to_json",
    "normalize_images",
    "param_groups",
    "set_seed",
]
