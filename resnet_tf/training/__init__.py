"""The training layer: recipes and their checks, optimizers, distribution, the callbacks
that write a run folder, and `train`.

    from resnet_tf.training import TrainConfig, RunOptions, train
    train(TrainConfig(depth=20, data_dir="images/", epochs=40), RunOptions(out="runs/r20"))
"""

from resnet_tf.schedules import WarmupSchedule
from resnet_tf.training.config import ResolvedConfig, resolve_config
from resnet_tf.training.distribute import make_strategy, resolve_precision
from resnet_tf.training.optimizers import build_optimizer
from resnet_tf.training.pixels import normalizing_train_step
from resnet_tf.training.recipes import (
    DEFAULT_VAL_SPLIT,
    OPTIMIZERS,
    PRECISIONS,
    RECIPES,
    RunOptions,
    TrainConfig,
)
from resnet_tf.training.trainer import train

__all__ = [
    "DEFAULT_VAL_SPLIT",
    "OPTIMIZERS",
    "PRECISIONS",
    "RECIPES",
    "ResolvedConfig",
    "RunOptions",
    "TrainConfig",
    "WarmupSchedule",
    "build_optimizer",
    "make_strategy",
    "normalizing_train_step",
    "resolve_config",
    "resolve_precision",
    "train",
]
