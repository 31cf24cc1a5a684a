"""What defines a run: the recipes that fill in its defaults, and the table of its
settings (`FIELDS`), which makes `TrainConfig`, `RunOptions` and `check_config`."""

import os

from resnet_tf.compat import spelled_now
from resnet_tf.data.preprocessing import CIFAR_PAD
from resnet_tf.errors import ConfigError
from resnet_tf.metrics import TTA
from resnet_tf.models.blocks import SHORTCUTS, VARIANTS
from resnet_tf.models.resnet import DEPTHS, STEMS
from resnet_tf.schedules import SCHEDULES
from resnet_tf.training.cpu_tuning import CPU_CONFIGS
from resnet_tf.training.fields import RECIPE, Field, dataclass_of

OPTIMIZERS = ("sgd", "adamw", "adam", "lamb")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LOSSES = ("softmax", "bce")
AUGMENTS = ("none", "basic", "randaugment", "augmix", "trivialaugment")
DEFAULT_VAL_SPLIT = 0.1
# Above this, one decoded batch no longer fits in memory on the machines this runs on.
MAX_IMAGE_SIZE = 4096
# Practical caps of counts: far above any real run, low enough that nothing overflows.
MAX_EPOCHS = 1_000_000
MAX_THREADS = 4096
# A warmup never takes more than this share of a run (`--epochs 1` keeps a warmup).
MAX_WARMUP_SHARE = 0.25


def _recipe(description, *, depth, epochs, optimizer, lr_wd, warmup_epochs, label_smoothing,
            milestones=(0.5, 0.75), augment="basic", mixup=0.0, cutmix=0.0, random_erasing=0.0,
            ema=0.0, loss="softmax", grad_clip=None, stem=None, preset=None, tta="none",
            crop_padding=CIFAR_PAD, train_size=None):
    return dict(description=description, depth=depth, epochs=epochs, optimizer=optimizer,
                lr_wd=lr_wd, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                milestones=milestones, augment=augment, mixup=mixup, cutmix=cutmix,
                random_erasing=random_erasing, ema=ema, loss=loss, grad_clip=grad_clip,
                stem=stem, preset=preset, tta=tta, crop_padding=crop_padding,
                train_size=train_size)


# Named, reproducible recipes. Learning rates are per 256 images (scaled by
# global_batch / 256); `lr_wd` gives (lr, weight decay) per optimizer, so `--optimizer`
# alone picks sensible values. SGD weight decay is the L2 coefficient of the papers and
# torchvision (see `build_optimizer`); the others' is their decoupled coefficient.
# Without --recipe: "cifar" for images of 64 px or less, else "imagenet".
_LR_WD_CIFAR = {"sgd": (0.4, 5e-4), "adamw": (2e-3, 0.05), "adam": (1e-3, 0.0), "lamb": (5e-3, 0.02)}
RECIPES = {
    "cifar": _recipe(
        "He et al. 2016 on a 40-epoch cosine schedule; lr 0.4 per 256 and label smoothing "
        "0.1 won a 9-variant ResNet-20 sweep (benchmarks/results/cifar_recipes.json); weight "
        "EMA 0.999 (BatchNorm statistics included), flip TTA with 1-pixel shifts and 2-pixel "
        "crop padding each added to the 40-epoch accuracy (measured in docs/accuracy.md)",
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
        "step here), TrivialAugmentWide, 176 px training crops and 224 px evaluation; its "
        "repeated augmentation is not reproduced",
        depth=50, epochs=600, optimizer="sgd",
        lr_wd={"sgd": (0.125, 2e-5), "adamw": (1e-3, 0.05), "adam": (1e-3, 0.0),
               "lamb": (1e-3, 0.02)},
        warmup_epochs=5, label_smoothing=0.1, augment="trivialaugment", mixup=0.2, cutmix=1.0,
        random_erasing=0.1, ema=0.99997, preset="imagenet", train_size=176),
    "rsb-a3": _recipe(
        "timm's ResNet strikes back A3 (Wightman et al. 2021): 100 epochs, LAMB lr 8e-3 at "
        "batch 2048, wd 0.02, 5 warmup epochs, BCE loss, RandAugment m6, MixUp 0.1, CutMix "
        "1.0, no label smoothing, 160 px training crops and 224 px evaluation",
        depth=50, epochs=100, optimizer="lamb",
        lr_wd={"sgd": (0.1, 1e-4), "adamw": (1e-3, 0.05), "adam": (1e-3, 0.0),
               "lamb": (1e-3, 0.02)},
        warmup_epochs=5, label_smoothing=0.0, augment="randaugment", mixup=0.1, cutmix=1.0,
        loss="bce", preset="imagenet", train_size=160),
}


def default_recipe(preset):
    """The recipe used without --recipe: "cifar" for small images, else "imagenet"."""
    return "cifar" if preset == "cifar" else "imagenet"


# Every setting of a run, in TrainConfig's order, then RunOptions'. `default=None` with
# `default_text=RECIPE`: the recipe's value (`config.resolve_config`).
_COUNT = dict(low=1, high=MAX_EPOCHS, cap=True)
_FRACTION = dict(low=0, high=1, high_open=True)
FIELDS = (
    Field("recipe", str, "named recipe whose values fill every flag not given", "recipe",
          default_text="cifar for images of 64 px or less, else imagenet",
          choices=tuple(RECIPES)),
    # model
    Field("depth", int, "ResNet depth: 18, 34, 50, 101, 152, 200 or the CIFAR 20, 32, 44, "
          "56, 110, 164, 1001", "model", default_text=RECIPE, choices=DEPTHS),
    Field("variant", str, "block variant", "model",
          default_text="v1.5; v2 for depths 164 and 1001", choices=VARIANTS),
    Field("stem", str, "stem", "model", choices=STEMS,
          default_text="the recipe's, else cifar for images of 64 px or less, deep with "
                       "--variant d, else imagenet"),
    Field("shortcut", str, "projection shortcut: B (1x1 conv) or A (zero-padded identity)",
          "model", default_text="A for the CIFAR basic-block networks, else B",
          choices=SHORTCUTS),
    Field("groups", int, "ResNeXt cardinality", "model", default_text="1", low=1, high=1024,
          cap=True),
    Field("width_per_group", int, "ResNeXt width per group", "model", default_text="64",
          low=1, high=MAX_IMAGE_SIZE, cap=True),
    Field("width_multiplier", float, "Wide ResNet factor", "model", default_text="1", low=0,
          low_open=True, high=64, cap=True),
    Field("se_ratio", float, "squeeze-and-excitation ratio, e.g. 0.0625", "model",
          default_text="0, none", **_FRACTION),
    Field("stochastic_depth", float, "drop probability of the last block's branch", "model",
          default_text="0", **_FRACTION),
    Field("zero_init_residual", bool, "start every residual branch at zero (last BatchNorm "
          "gamma 0)", "model", default_text="off"),
    Field("dropout", float, "dropout before the classifier", "model", default_text="0",
          **_FRACTION),
    Field("weights", str, "start from pretrained weights: a registry name (resnet_tf "
          "list_weights), a torchvision/timm/keras.applications file, a .keras file or a run "
          "folder; the classifier is new", "model", default_text="none, random weights"),
    Field("freeze_epochs", int, "with --weights: train only the new head for N epochs "
          "(backbone and BatchNorm frozen), then fine-tune everything", "model",
          default_text="0", low=0, high=MAX_EPOCHS, cap=True),
    Field("finetune_lr", float, "with --freeze-epochs: learning rate per 256 images after "
          "unfreezing", "model", default_text="a tenth of --lr", low=0, low_open=True,
          high=1000, cap=True),
    Field("train_batchnorm", bool, "with --weights: let BatchNorm statistics and parameters "
          "train", "model", default=False,
          default_text="frozen, in inference mode, as fine-tuning guides advise"),
    # data
    Field("dataset", str, "TFDS dataset name, or 'synthetic'; ignored with --data-dir",
          "data", default="cifar10"),
    Field("data_dir", str, "folder with one sub-folder of images per class", "data",
          default_text="none: --dataset"),
    Field("val_dir", str, "validation folder laid out like --data-dir", "data",
          default_text="none: --val-split of the training images"),
    Field("val_split", float, "fraction of the training images held out for validation "
          "when the data has no validation split", "data",
          default_text=f"{DEFAULT_VAL_SPLIT}; 0 for none", **_FRACTION),
    Field("image_size", int, "input size: of the validation images and the export, and of "
          "the training crops unless --train-size (alias --eval-size)", "data",
          default_text="the images' own", low=1, high=MAX_IMAGE_SIZE, cap=True, hint="pixels"),
    Field("train_size", int, "size of the training crops when it differs from --image-size "
          "(train/test resolution, FixRes; torchvision's --train-crop-size)", "data",
          default_text=RECIPE + "; none: --image-size", low=1, high=MAX_IMAGE_SIZE, cap=True,
          hint="pixels"),
    Field("augment", str, "augmentation policy: basic (random crop + flip), randaugment, "
          "augmix, trivialaugment (TrivialAugmentWide; each after the basic crop and flip) "
          "or none", "data",
          default_text=RECIPE, choices=AUGMENTS, no_flag="none"),
    Field("mixup", float, "MixUp alpha, 0 for none", "data", default_text=RECIPE, low=0,
          high=100, cap=True),
    Field("cutmix", float, "CutMix alpha, 0 for none; with --mixup each batch uses one of "
          "the two", "data", default_text=RECIPE, low=0, high=100, cap=True),
    Field("random_erasing", float, "random erasing probability", "data", default_text=RECIPE,
          low=0, high=1, hint="a probability"),
    Field("crop_padding", int, "zero padding per side before the random crop of small "
          "images (the cifar preset; 0: flip only)", "data", default_text=RECIPE, low=0,
          high=MAX_IMAGE_SIZE, cap=True, hint="pixels", metavar="PIXELS"),
    # optimization
    Field("epochs", int, "epochs", "optimization", default_text=RECIPE, **_COUNT),
    Field("batch_size", int, "global batch size, divided over the replicas", "optimization",
          default=128, low=1, high=2**20, cap=True),
    Field("grad_accum", int, "micro-batches per optimizer update: the gradients of N batches "
          "of --batch-size are averaged into one update, the learning rate scaled by the "
          "effective batch (N x --batch-size)", "optimization", default=1, low=1, high=1024,
          cap=True, metavar="N"),
    Field("optimizer", str, "SGD with Nesterov momentum, AdamW, Adam or LAMB", "optimization",
          default_text=RECIPE, choices=OPTIMIZERS),
    # Any rate that stays finite in float32 at the largest batch: one that diverges at
    # once is how a run's divergence handling is tested.
    Field("lr", float, "learning rate per 256 images, scaled by batch-size/256",
          "optimization", default_text=RECIPE, low=0, low_open=True, high=1e30, cap=True),
    Field("momentum", float, "SGD momentum", "optimization", default=0.9, **_FRACTION),
    Field("wd", float, "weight decay, not applied to BatchNorm parameters or biases; for SGD "
          "the L2 coefficient of the papers", "optimization", default_text=RECIPE, low=0,
          high=10, cap=True),
    Field("label_smoothing", float, "label smoothing", "optimization", default_text=RECIPE,
          **_FRACTION),
    Field("loss", str, "softmax cross-entropy, or binary cross-entropy on logits as ResNet "
          "strikes back trains", "optimization", default_text=RECIPE, choices=LOSSES),
    Field("grad_clip", float, "clip the global gradient norm to this", "optimization",
          default_text="the recipe's, none so far", low=0, low_open=True, high=1e6, cap=True),
    Field("ema", float, "keep an EMA of the weights with this decay per step; validation, "
          "best.keras, metrics.json and the export use it", "optimization",
          default_text=RECIPE, hint="a decay per step such as 0.999, or 0 for none",
          **_FRACTION),
    Field("distill", float, "self-distillation: the share of the training target taken "
          "from the EMA teacher's predictions on each batch and its mirror images (needs "
          "--ema)", "optimization", default=0.0, hint="a share such as 0.5, or 0 for none",
          **_FRACTION),
    Field("schedule", str, "learning-rate decay after the warmup", "optimization",
          default="cosine", choices=SCHEDULES),
    Field("warmup_epochs", float, "linear warmup epochs", "optimization",
          default_text="recipe, at most a quarter of --epochs", low=0, high=MAX_EPOCHS,
          cap=True),
    Field("milestones", tuple, "epochs where --schedule step divides the rate by 10",
          "optimization", default_text="the recipe's 50%,75% (CIFAR) or 33%,67%,89% of "
          "--epochs", low=0, high=MAX_EPOCHS, cap=True),
    # run
    Field("tta", str, "test-time augmentation of the final evaluation and of the export "
          "(what the run reports is what it serves): flip (2 views) or flip-shift (flip and "
          "1-pixel diagonal shifts, 10 views); metrics.json also keeps the other "
          "evaluations", "run", default_text=RECIPE, choices=TTA),
    Field("calibrate", bool, "fit a temperature on the validation images after training "
          "(calibration.json, reliability.png); metrics.json gives the calibration error "
          "before and after, and the export and resnet-predict apply it; --no-calibrate "
          "turns it off", "run", default_text="on when there are validation images",
          no_flag=False),
    Field("precision", str, "auto: mixed_float16 on GPUs of compute capability 7.0+, "
          "mixed_bfloat16 on CPUs with AMX/AVX512-BF16, else float32", "run", default="auto",
          choices=PRECISIONS),
    Field("seed", int, "random seed of the weights, data order and augmentation", "run",
          default=0, low=0, high=2**32 - 1),
    Field("split_seed", int, "seed of the validation hold-out drawn when there is no "
          "--val-dir", "run", default_text="0, whatever --seed is, so runs with other seeds "
          "are measured on the same images", low=0, high=2**32 - 1),
    Field("deterministic", bool, "reproducible data order, augmentation and ops (slower)",
          "run", default=False, default_text="off"),
    # how a run executes (RunOptions)
    Field("out", str, "run directory", "run", default_text="runs/resnet<depth>_<dataset>",
          options=True),
    Field("overwrite", bool, "replace a run in --out instead of resuming or refusing", "run",
          default=False, default_text="off", options=True),
    Field("devices", int, "use the first N GPUs; without GPUs, N > 1 splits the CPU into N "
          "logical devices (for testing distribution)", "run", default_text="all GPUs, or "
          "the CPU", low=1, high=MAX_THREADS, cap=True, options=True, metavar="N"),
    Field("tfds_dir", str, "TFDS data directory", "data", default_text="TFDS's, "
          "~/tensorflow_datasets", options=True),
    Field("manual_dir", str, "folder of manually downloaded TFDS archives", "data",
          options=True),
    Field("export", bool, "do not export a SavedModel at the end", "run", default=True,
          default_text="export", options=True),
    Field("export_dir", str, "SavedModel base directory", "run",
          default_text="<out>/export/<model name>", options=True),
    Field("data_service", str, "send the training pipeline to the tf.data service "
          "dispatcher at HOST:PORT (python -m resnet_tf data-service)", "data",
          default_text="none: this process", options=True, metavar="HOST:PORT"),
    Field("cpu_config", str, "auto: the measured choice for this CPU's kind; tf-defaults: "
          "TensorFlow's own", "CPU speed", default="auto", choices=CPU_CONFIGS, options=True),
    Field("onednn", str, "TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; the command "
          "restarts itself once to set it)", "CPU speed", default_text="--cpu-config's",
          choices=("on", "off"), options=True),
    Field("inter_op_threads", int, "TensorFlow's inter-op thread pool", "CPU speed",
          default_text="--cpu-config's", low=1, high=MAX_THREADS, cap=True, options=True,
          metavar="N"),
    Field("intra_op_threads", int, "TensorFlow's intra-op thread pool", "CPU speed",
          default_text="--cpu-config's", low=1, high=MAX_THREADS, cap=True, options=True,
          metavar="N"),
    Field("steps_per_execution", int, "training steps per compiled call", "CPU speed",
          default_text="--cpu-config's", options=True, metavar="N", **_COUNT),
    Field("verbose", int, "Keras' fit verbosity", "run", default_text="1 in a terminal, "
          "else 2", low=0, high=2, options=True, flag=False),
)
CONFIG_FIELDS = tuple(f for f in FIELDS if not f.options)
OPTION_FIELDS = tuple(f for f in FIELDS if f.options)

TrainConfig = dataclass_of("TrainConfig", CONFIG_FIELDS, """What defines a run: two runs with
    equal resolved configs are the same run.

    `None` means the recipe's default (see `RECIPES`; without `recipe`, "cifar" for
    images of 64 px or less, else "imagenet"); `lr` is per 256 images; `milestones` are
    epochs (step schedule); `val_split` applies only when the data has no validation
    split of its own. Architecture fields left None take `build_resnet`'s defaults.
    Each field is described by its `Field` in `FIELDS` (`train.py --help`).
    """, __name__)

RunOptions = dataclass_of("RunOptions", OPTION_FIELDS, """How and where a run executes; none
    of it changes the result. CPU settings (`resnet_tf.training.cpu_tuning`) left None
    take the choice for this CPU.""", __name__)


def check_config(config, options=RunOptions()):
    """Rejects what can be rejected without TensorFlow or data; raises `ConfigError`."""
    for field in FIELDS:
        value = getattr(options if field.options else config, field.name)
        if field.name == "augment":
            value = spelled_now(value, "augment")  # True/False: earlier versions' flag
        if value is not None:
            field.check(value)
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
    if options.data_service and config.deterministic:
        raise ConfigError("--deterministic cannot be combined with --data-service: the "
                          "service's workers finish in any order. Received: both; expected "
                          "one of the two.")
    for flag, path in (("--data-dir", config.data_dir), ("--val-dir", config.val_dir)):
        if path is not None and not os.path.isdir(path):
            what = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ConfigError(f"{flag} {path} {what}; expected a folder with one sub-folder "
                              "of images per class.")


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
