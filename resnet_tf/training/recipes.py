"""What defines a run: `TrainConfig`, the recipes that fill in its defaults, and their checks."""

import dataclasses
import math
import os

from resnet_tf.errors import ConfigError, check_choice
from resnet_tf.models.resnet import DEPTHS
from resnet_tf.schedules import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

# Defaults per data preset ("cifar": images of 64 px or less). Learning rates are per 256
# images, scaled by global_batch / 256. SGD weight decay is the L2 coefficient of the
# papers and torchvision (see `build_optimizer`); AdamW's is its decoupled coefficient.
RECIPES = {
    # He et al. 2016 with a 40-epoch cosine schedule; lr 0.4 per 256 and label smoothing
    # 0.1 won a 9-variant ResNet-20 sweep (benchmarks/CIFAR_RECIPES.md): +0.9 points over
    # lr 0.2 and no smoothing.
    "cifar": dict(depth=20, epochs=40, warmup_epochs=1, label_smoothing=0.1,
                  sgd=(0.4, 5e-4), adamw=(2e-3, 0.05), milestones=(0.5, 0.75)),
    # Goyal et al. 2017 and "Bag of Tricks" (He et al. 2019): lr 0.1 per 256, 5 warmup
    # epochs, label smoothing 0.1, no decay on BatchNorm parameters and biases.
    "imagenet": dict(depth=50, epochs=90, warmup_epochs=5, label_smoothing=0.1,
                     sgd=(0.1, 1e-4), adamw=(1e-3, 0.05), milestones=(1 / 3, 2 / 3, 8 / 9)),
}
DEFAULT_VAL_SPLIT = 0.1
# Above this, one decoded batch no longer fits in memory on the machines this runs on.
MAX_IMAGE_SIZE = 4096


@dataclasses.dataclass
class TrainConfig:
    """What defines a run: two runs with equal resolved configs are the same run.

    `None` means the recipe's default for the data (see `RECIPES`); `lr` is per 256
    images; `milestones` are epochs (step schedule); `val_split` applies only when the
    data has no validation split of its own.
    """

    depth: int | None = None
    variant: str | None = None
    stem: str | None = None
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_dir: str | None = None
    val_split: float | None = None
    image_size: int | None = None
    augment: bool = True
    epochs: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    wd: float | None = None
    label_smoothing: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float | None = None
    milestones: tuple | None = None
    precision: str = "auto"
    seed: int = 0
    deterministic: bool = False


@dataclasses.dataclass
class RunOptions:
    """How and where a run executes; none of it changes the result."""

    out: str | None = None
    overwrite: bool = False
    devices: int | None = None
    tfds_dir: str | None = None
    manual_dir: str | None = None
    export: bool = True
    export_dir: str | None = None
    steps_per_execution: int = 1
    verbose: int | None = None


# --- the recipe -------------------------------------------------------------------------


def check_config(config, options=RunOptions()):
    """Rejects what can be rejected without TensorFlow or data; raises `ConfigError`."""
    if config.depth is not None:
        check_choice("depth", config.depth, DEPTHS, error=ConfigError)
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                          ("precision", PRECISIONS)):
        if getattr(config, name) not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}; "
                              f"received {getattr(config, name)!r}.")
    for name in ("epochs", "batch_size", "image_size"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{_flag(name)} must be a positive integer; received {value}.")
    if config.image_size is not None and config.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"--image-size is too large. Received: --image-size {config.image_size}; "
                          f"expected at most {MAX_IMAGE_SIZE} pixels.")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"--seed is out of range. Received: --seed {config.seed}; expected an "
                          f"integer from 0 to {2**32 - 1}.")
    for name in ("lr", "wd", "label_smoothing", "val_split", "momentum", "warmup_epochs"):
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"--{_flag(name)} must be a finite number. Received: "
                              f"--{_flag(name)} {value}; expected a number such as 0.1.")
    if config.lr is not None and not config.lr > 0:
        raise ConfigError(f"--lr must be positive; received {config.lr}.")
    for name, value, low, high in (("wd", config.wd, 0, math.inf),
                                   ("label-smoothing", config.label_smoothing, 0, 1),
                                   ("val-split", config.val_split, 0, 1),
                                   ("momentum", config.momentum, 0, 1)):
        if value is not None and not low <= value < high:
            raise ConfigError(f"--{name} must be in [{low}, {high}); received {value}.")
    if config.warmup_epochs is not None and config.warmup_epochs < 0:
        raise ConfigError(f"--warmup-epochs must be >= 0; received {config.warmup_epochs}.")
    for flag, path in (("--data-dir", config.data_dir), ("--val-dir", config.val_dir)):
        if path is not None and not os.path.isdir(path):
            what = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ConfigError(f"{flag} {path} {what}; expected a folder with one sub-folder "
                              "of images per class.")
    if options.devices is not None and options.devices < 1:
        raise ConfigError(f"--devices must be a positive integer; received {options.devices}.")
    if options.steps_per_execution < 1:
        raise ConfigError("--steps-per-execution must be a positive integer; "
                          f"received {options.steps_per_execution}.")


def resolve_config(config, preset, image_size):
    """The config with every default filled in for data of `preset` and `image_size`."""
    recipe = RECIPES[preset]
    resolved = dataclasses.asdict(config)
    lr, wd = recipe[config.optimizer]
    epochs = config.epochs or recipe["epochs"]
    warmup = config.warmup_epochs
    if warmup is None:
        warmup = recipe["warmup_epochs"] if recipe["warmup_epochs"] < epochs else 0
    elif warmup >= epochs:
        raise ConfigError(f"--warmup-epochs ({warmup:g}) must be less than --epochs ({epochs}).")
    milestones = config.milestones
    if milestones is None:
        milestones = [round(f * epochs) for f in recipe["milestones"]]
    resolved.update(
        depth=config.depth or recipe["depth"],
        stem=config.stem or ("cifar" if preset == "cifar" else
                             "deep" if config.variant == "d" else "imagenet"),
        # The dataset name is ignored when images come from a folder.
        dataset=None if config.data_dir else config.dataset,
        data_dir=config.data_dir and os.path.abspath(config.data_dir),
        val_dir=config.val_dir and os.path.abspath(config.val_dir),
        val_split=DEFAULT_VAL_SPLIT if config.val_split is None else config.val_split,
        image_size=image_size,
        preset=preset,
        epochs=epochs,
        lr=lr if config.lr is None else config.lr,
        wd=wd if config.wd is None else config.wd,
        label_smoothing=(recipe["label_smoothing"] if config.label_smoothing is None
                         else config.label_smoothing),
        warmup_epochs=warmup,
        milestones=sorted(int(m) for m in milestones),
    )
    return resolved


def default_run_name(depth, dataset=None, data_dir=None):
    """`resnet20_cifar10`; a folder `/data/cifar/train` is named after `cifar`."""
    tag = dataset
    if data_dir:
        parts = os.path.abspath(data_dir).rstrip(os.sep).split(os.sep)
        tag = parts[-1]
        if tag.lower() in ("train", "training", "images") and len(parts) > 2:
            tag = parts[-2]
    return f"resnet{depth}_{tag}"


def default_out(depth, config):
    return os.path.join("runs", default_run_name(depth, config.dataset, config.data_dir))


def _flag(name):
    return name.replace("_", "-")
