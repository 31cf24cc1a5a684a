"""What defines a run: `TrainConfig`, the recipes that fill in its defaults, and their checks."""

import dataclasses
import math
import os

from resnet_tf.data.preprocessing import CIFAR_PAD
from resnet_tf.errors import ConfigError, check_choice
from resnet_tf.metrics import TTA
from resnet_tf.models.resnet import DEPTHS
from resnet_tf.runs import hold_out_seed
from resnet_tf.schedules import SCHEDULES
from resnet_tf.training.cpu_tuning import CPU_CONFIGS

OPTIMIZERS = ("sgd", "adamw", "adam", "lamb")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LOSSES = ("softmax", "bce")
AUGMENTS = ("none", "basic", "randaugment", "augmix")
DEFAULT_VAL_SPLIT = 0.1
# Above this, one decoded batch no longer fits in memory on the machines this runs on.
MAX_IMAGE_SIZE = 4096
# A warmup never takes more than this share of a run (`--epochs 1` keeps a warmup).
MAX_WARMUP_SHARE = 0.25


def _recipe(description, *, depth, epochs, optimizer, lr_wd, warmup_epochs, label_smoothing,
            milestones=(0.5, 0.75), augment="basic", mixup=0.0, cutmix=0.0, random_erasing=0.0,
            ema=0.0, loss="softmax", grad_clip=None, stem=None, preset=None, tta="none",
            crop_padding=CIFAR_PAD):
    return dict(description=description, depth=depth, epochs=epochs, optimizer=optimizer,
                lr_wd=lr_wd, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                milestones=milestones, augment=augment, mixup=mixup, cutmix=cutmix,
                random_erasing=random_erasing, ema=ema, loss=loss, grad_clip=grad_clip,
                stem=stem, preset=preset, tta=tta, crop_padding=crop_padding)


# Named, reproducible recipes. Learning rates are per 256 images (scaled by
# global_batch / 256); `lr_wd` gives (lr, weight decay) per optimizer, so `--optimizer`
# alone picks sensible values. SGD weight decay is the L2 coefficient of the papers and
# torchvision (see `build_optimizer`); the others' is their decoupled coefficient.
# Without --recipe: "cifar" for images of 64 px or less, else "imagenet".
_LR_WD_CIFAR = {"sgd": (0.4, 5e-4), "adamw": (2e-3, 0.05), "adam": (1e-3, 0.0), "lamb": (5e-3, 0.02)}
RECIPES = {
    "cifar": _recipe(
        "He et al. 2016 on a 40-epoch cosine schedule; lr 0.4 per 256 and label smoothing "
        "0.1 won a 9-variant ResNet-20 sweep (benchmarks/results/CIFAR_RECIPES.md); weight "
        "EMA 0.999 (BatchNorm statistics included) and flip TTA added 0.5 and 1.0 points "
        "at 40 epochs, 1-pixel shifts on top of the flip 0.4 more, 2-pixel instead of "
        "4-pixel crop padding 0.4 more (README, Results)",
        depth=20, epochs=40, optimizer="sgd", lr_wd=_LR_WD_CIFAR, warmup_epochs=1,
        label_smoothing=0.1, ema=0.999, tta="flip-shift", crop_padding=2, preset="cifar"),
    "cifar-long": _recipe(
        "the 200-epoch CIFAR schedule of the ResNet-18 literature: SGD lr 0.1 at batch 128, "
        "wd 5e-4, cosine",
        depth=18, epochs=200, optimizer="sgd",
        lr_wd={**_LR_WD_CIFAR, "sgd": (0.2, 5e-4)}, warmup_epochs=1, label_smoothing=0.0,
        stem="cifar", preset="cifar"),
    "imagenet": _recipe(
        "Goyal et al. 2017 and Bag of Tricks (He et al. 2019): lr 0.1 per 256, 5 warmup "
        "epochs, label smoothing 0.1, no decay on BatchNorm parameters and biases",
        depth=50, epochs=90, optimizer="sgd",
        lr_wd={"sgd": (0.1, 1e-4), "adamw": (1e-3, 0.05), "adam": (1e-3, 0.0),
               "lamb": (1e-3, 0.02)},
        warmup_epochs=5, label_smoothing=0.1, milestones=(1 / 3, 2 / 3, 8 / 9),
        preset="imagenet"),
    "torchvision-v2": _recipe(
        "torchvision's recipe behind ResNet-50 IMAGENET1K_V2 (80.86 %): 600 epochs, SGD lr "
        "0.5 at batch 1024, wd 2e-5, 5 warmup epochs, label smoothing 0.1, MixUp 0.2, "
        "CutMix 1.0, random erasing 0.1, EMA (every 32 steps, 0.99998 adjusted: 0.99997 per "
        "step here); TrivialAugmentWide -> RandAugment (Keras has no TrivialAugment); "
        "its 176 px train / 224 px test sizes and repeated augmentation are not reproduced",
        depth=50, epochs=600, optimizer="sgd",
        lr_wd={"sgd": (0.125, 2e-5), "adamw": (1e-3, 0.05), "adam": (1e-3, 0.0),
               "lamb": (1e-3, 0.02)},
        warmup_epochs=5, label_smoothing=0.1, augment="randaugment", mixup=0.2, cutmix=1.0,
        random_erasing=0.1, ema=0.99997, preset="imagenet"),
    "rsb-a3": _recipe(
        "timm's ResNet strikes back A3 (Wightman et al. 2021): 100 epochs, LAMB lr 8e-3 at "
        "batch 2048, wd 0.02, 5 warmup epochs, BCE loss, RandAugment m6, MixUp 0.1, CutMix "
        "1.0, no label smoothing; its 160 px train / 224 px test sizes are not reproduced",
        depth=50, epochs=100, optimizer="lamb",
        lr_wd={"sgd": (0.1, 1e-4), "adamw": (1e-3, 0.05), "adam": (1e-3, 0.0),
               "lamb": (1e-3, 0.02)},
        warmup_epochs=5, label_smoothing=0.0, augment="randaugment", mixup=0.1, cutmix=1.0,
        loss="bce", preset="imagenet"),
}


# Recipe values that changed after runs were made with the old ones: a run resumed
# without the flag keeps its own value (the value here, of its stored config, for runs
# from before the field).
CHANGED_DEFAULTS = {"ema": lambda stored: 0.0, "tta": lambda stored: "none",
                    "split_seed": hold_out_seed, "crop_padding": lambda stored: CIFAR_PAD}


def stored_config(old):
    """A run's stored config (`old` is `RunDirectory.read_config()`), with the value the
    run had for each `CHANGED_DEFAULTS` field added after it was made: a flag given for
    such a field is then compared with what the run used, not ignored."""
    stored = old["config"]
    return {**{k: before(stored) for k, before in CHANGED_DEFAULTS.items()}, **stored}


def keep_run_values(config, resolved, old):
    """`resolved` with the stored values of `CHANGED_DEFAULTS` fields not given as flags,
    so that rerunning a run's command resumes it after a recipe default changed."""
    if old is None:
        return resolved
    stored = stored_config(old)
    return {**resolved, **{k: stored[k] for k in CHANGED_DEFAULTS if getattr(config, k) is None}}


def default_recipe(preset):
    """The recipe used without --recipe: "cifar" for small images, else "imagenet"."""
    return "cifar" if preset == "cifar" else "imagenet"


@dataclasses.dataclass
class TrainConfig:
    """What defines a run: two runs with equal resolved configs are the same run.

    `None` means the recipe's default (see `RECIPES`; without `recipe`, "cifar" for
    images of 64 px or less, else "imagenet"); `lr` is per 256 images; `milestones` are
    epochs (step schedule); `val_split` applies only when the data has no validation
    split of its own. Architecture fields left None take `build_resnet`'s defaults.
    """

    recipe: str | None = None
    depth: int | None = None
    variant: str | None = None
    stem: str | None = None
    shortcut: str | None = None
    groups: int | None = None
    width_per_group: int | None = None
    width_multiplier: float | None = None
    se_ratio: float | None = None
    stochastic_depth: float | None = None
    zero_init_residual: bool | None = None
    dropout: float | None = None
    weights: str | None = None
    freeze_epochs: int | None = None
    finetune_lr: float | None = None
    train_batchnorm: bool = False
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_dir: str | None = None
    val_split: float | None = None
    image_size: int | None = None
    augment: str | None = None
    mixup: float | None = None
    cutmix: float | None = None
    random_erasing: float | None = None
    crop_padding: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    wd: float | None = None
    label_smoothing: float | None = None
    loss: str | None = None
    grad_clip: float | None = None
    ema: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float | None = None
    milestones: tuple | None = None
    tta: str | None = None
    precision: str = "auto"
    seed: int = 0
    split_seed: int | None = None
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
    # CPU settings (`resnet_tf.training.cpu_tuning`); None takes the choice for this CPU.
    cpu_config: str = "auto"
    onednn: str | None = None
    inter_op_threads: int | None = None
    intra_op_threads: int | None = None
    steps_per_execution: int | None = None
    verbose: int | None = None


# --- the recipe -------------------------------------------------------------------------


def check_config(config, options=RunOptions()):
    """Rejects what can be rejected without TensorFlow or data; raises `ConfigError`."""
    if config.recipe is not None:
        check_choice("recipe", config.recipe, tuple(RECIPES), error=ConfigError)
    if config.depth is not None:
        check_choice("depth", config.depth, DEPTHS, error=ConfigError)
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                          ("precision", PRECISIONS), ("loss", LOSSES), ("tta", TTA)):
        value = getattr(config, name)
        if value is not None and value not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}. Received: "
                              f"--{name} {value!r}; expected one of them.")
    augment = _augment_policy(config.augment)
    if augment is not None and augment not in AUGMENTS:
        raise ConfigError(f"--augment must be one of {', '.join(AUGMENTS)}. Received: --augment "
                          f"{augment!r}; expected one of them.")
    for name in ("epochs", "batch_size", "image_size", "groups", "width_per_group"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{_flag(name)} must be a positive integer. Received: "
                              f"--{_flag(name)} {value}; expected 1 or more.")
    if config.freeze_epochs is not None and config.freeze_epochs < 0:
        raise ConfigError(f"--freeze-epochs must be >= 0. Received: --freeze-epochs "
                          f"{config.freeze_epochs}; expected 0 or more.")
    if (config.freeze_epochs or config.finetune_lr or config.train_batchnorm) and not config.weights:
        raise ConfigError("--freeze-epochs, --finetune-lr and --train-batchnorm fine-tune "
                          "pretrained weights. Received: no --weights; expected --weights "
                          "NAME|PATH as well.")
    if config.freeze_epochs and config.ema:
        raise ConfigError("--ema cannot be combined with --freeze-epochs. Received: --ema "
                          f"{config.ema} --freeze-epochs {config.freeze_epochs}; expected one "
                          "of the two.")
    if config.freeze_epochs and config.epochs and config.freeze_epochs >= config.epochs:
        raise ConfigError(f"--freeze-epochs ({config.freeze_epochs}) must be less than --epochs "
                          f"({config.epochs}): the backbone would never be fine-tuned.")
    if config.image_size is not None and config.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"--image-size is too large. Received: --image-size {config.image_size}; "
                          f"expected at most {MAX_IMAGE_SIZE} pixels.")
    if config.crop_padding is not None and config.crop_padding < 0:
        raise ConfigError(f"--crop-padding is a number of pixels. Received: --crop-padding "
                          f"{config.crop_padding}; expected 0 or more (0: flip only).")
    for name in ("seed", "split_seed"):
        value = getattr(config, name)
        if value is not None and not 0 <= value < 2**32:
            raise ConfigError(f"--{_flag(name)} is out of range. Received: --{_flag(name)} "
                              f"{value}; expected an integer from 0 to {2**32 - 1}.")
    floats = ("lr", "wd", "label_smoothing", "val_split", "momentum", "warmup_epochs", "mixup",
              "cutmix", "random_erasing", "ema", "grad_clip", "width_multiplier", "se_ratio",
              "stochastic_depth", "dropout", "finetune_lr")
    for name in floats:
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"--{_flag(name)} must be a finite number. Received: "
                              f"--{_flag(name)} {value}; expected a number such as 0.1.")
    for name in ("lr", "grad_clip", "width_multiplier", "finetune_lr"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"--{_flag(name)} must be positive. Received: --{_flag(name)} "
                              f"{value}; expected a number above 0.")
    for name, low, high in (("wd", 0, math.inf), ("label_smoothing", 0, 1), ("val_split", 0, 1),
                            ("momentum", 0, 1), ("mixup", 0, math.inf), ("cutmix", 0, math.inf),
                            ("se_ratio", 0, 1), ("stochastic_depth", 0, 1), ("dropout", 0, 1)):
        value = getattr(config, name)
        if value is not None and not low <= value < high:
            raise ConfigError(f"--{_flag(name)} must be in [{low}, {high}). Received: "
                              f"--{_flag(name)} {value}; expected {low} <= value < {high}.")
    if config.random_erasing is not None and not 0 <= config.random_erasing <= 1:
        raise ConfigError("--random-erasing is a probability. Received: --random-erasing "
                          f"{config.random_erasing}; expected a number from 0 to 1.")
    if config.ema is not None and config.ema != 0 and not 0 < config.ema < 1:
        raise ConfigError(f"--ema is a decay per step. Received: --ema {config.ema}; expected a "
                          "number strictly between 0 and 1, such as 0.999 (or 0 for none).")
    if config.warmup_epochs is not None and config.warmup_epochs < 0:
        raise ConfigError(f"--warmup-epochs must be >= 0. Received: --warmup-epochs "
                          f"{config.warmup_epochs}; expected 0 or more.")
    for flag, path in (("--data-dir", config.data_dir), ("--val-dir", config.val_dir)):
        if path is not None and not os.path.isdir(path):
            what = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ConfigError(f"{flag} {path} {what}; expected a folder with one sub-folder "
                              "of images per class.")
    if options.devices is not None and options.devices < 1:
        raise ConfigError(f"--devices must be a positive integer. Received: --devices "
                          f"{options.devices}; expected 1 or more.")
    for flag, value in (("--steps-per-execution", options.steps_per_execution),
                        ("--inter-op-threads", options.inter_op_threads),
                        ("--intra-op-threads", options.intra_op_threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer. Received: {flag} {value}; "
                              "expected 1 or more.")
    check_choice("cpu_config", options.cpu_config, CPU_CONFIGS, error=ConfigError)
    if options.onednn is not None:
        check_choice("onednn", options.onednn, ("on", "off"), error=ConfigError)


def _augment_policy(augment):
    """`True`/`False` (the flag of earlier versions) as the policy names they meant."""
    if augment is True:
        return "basic"
    if augment is False:
        return "none"
    return augment


def resolve_config(config, preset, image_size):
    """The config with every default filled in from its recipe for data of `preset`."""
    name = config.recipe or default_recipe(preset)
    recipe = RECIPES[name]
    resolved = dataclasses.asdict(config)
    optimizer = config.optimizer or recipe["optimizer"]
    lr, wd = recipe["lr_wd"][optimizer]
    epochs = config.epochs or recipe["epochs"]
    warmup = config.warmup_epochs
    if warmup is None:
        # Scaled to short runs rather than dropped: `--epochs 1` keeps a quarter-epoch warmup.
        warmup = min(recipe["warmup_epochs"], MAX_WARMUP_SHARE * epochs)
    elif warmup >= epochs:
        raise ConfigError(f"--warmup-epochs ({warmup:g}) must be less than --epochs ({epochs}).")
    milestones = config.milestones
    if milestones is None:
        milestones = [round(f * epochs) for f in recipe["milestones"]]

    def pick(field):
        value = getattr(config, field)
        return recipe[field] if value is None else value

    resolved.update(
        recipe=name,
        depth=config.depth or recipe["depth"],
        stem=config.stem or recipe["stem"] or ("cifar" if preset == "cifar" else
                                               "deep" if config.variant == "d" else "imagenet"),
        # The dataset name is ignored when images come from a folder.
        dataset=None if config.data_dir else config.dataset,
        data_dir=config.data_dir and os.path.abspath(config.data_dir),
        val_dir=config.val_dir and os.path.abspath(config.val_dir),
        val_split=DEFAULT_VAL_SPLIT if config.val_split is None else config.val_split,
        split_seed=split_seed(config),
        image_size=image_size,
        preset=preset,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr if config.lr is None else config.lr,
        wd=wd if config.wd is None else config.wd,
        label_smoothing=pick("label_smoothing"),
        augment=_augment_policy(config.augment) or recipe["augment"],
        mixup=pick("mixup"),
        cutmix=pick("cutmix"),
        random_erasing=pick("random_erasing"),
        crop_padding=pick("crop_padding"),
        # The EMA does not span the two phases of --freeze-epochs (check_config refuses
        # the flags together); a recipe's EMA is dropped there.
        ema=config.ema or 0.0 if config.freeze_epochs else pick("ema"),
        loss=pick("loss"),
        grad_clip=pick("grad_clip"),
        tta=pick("tta"),
        warmup_epochs=warmup,
        milestones=sorted(int(m) for m in milestones),
    )
    return resolved


def split_seed(config):
    """The seed of the validation hold-out: `--split-seed`, else 0 whatever `--seed` is, so
    that runs with other seeds are measured on the same images."""
    return 0 if config.split_seed is None else config.split_seed


def augmentation(config):
    """The augmentation a run uses, known before its data is loaded: the flags, else the
    recipe's (both default recipes, "cifar" and "imagenet", use "basic" and nothing more).
    """
    recipe = RECIPES[config.recipe or "cifar"]
    policy = _augment_policy(config.augment) or recipe["augment"]
    return {"augment": policy,
            **{name: recipe[name] if getattr(config, name) is None else getattr(config, name)
               for name in ("mixup", "cutmix", "random_erasing", "crop_padding")}}


def model_kwargs(resolved):
    """`build_resnet` keyword arguments from a resolved config (None: the builder's default)."""
    names = {"variant": "variant", "stem": "stem", "shortcut": "shortcut", "groups": "groups",
             "width_per_group": "width_per_group", "width_multiplier": "width_multiplier",
             "se_ratio": "se_ratio", "stochastic_depth": "stochastic_depth_rate",
             "zero_init_residual": "zero_init_residual", "dropout": "dropout"}
    return {arg: resolved[key] for key, arg in names.items() if resolved.get(key) is not None}


def describe_recipe(resolved):
    """The resolved values as `--print-recipe` prints them, one `name: value` per line."""
    recipe = RECIPES[resolved["recipe"]]
    lines = [f"recipe: {resolved['recipe']} ({recipe['description']})"]
    lines += [f"{key}: {value}" for key, value in resolved.items() if key != "recipe"]
    return "\n".join(lines)


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
