"""Training a ResNet with `model.fit`: the recipe, the optimizer and the `train` command.

`train(TrainConfig(...), RunOptions(...))` is the whole `train.py` command. Its pieces
stand on their own: `resolve_config`, `WarmupSchedule`, `build_optimizer`, and from
`resnet_tf.distribute` `resolve_precision` and `make_strategy`.

Everything a run writes goes to one run directory (`resnet_tf.run_directory`);
rerunning the same command resumes it from the last finished epoch, and a finished run
is left as it is.
"""

import dataclasses
import json
import math
import os
import shutil
import sys

import keras

from resnet_tf.blocks import check_choice
from resnet_tf.distribute import (  # noqa: F401  (resolve_precision and co. are API here too)
    is_chief,
    make_strategy,
    resolve_precision,
    strategy_name,
    visible_gpus,
    work_around_keras_multi_worker,
)
from resnet_tf.errors import ConfigError
from resnet_tf.files import write_json, write_text
from resnet_tf.metrics import evaluate_model
from resnet_tf.resnet import DEPTHS, build_resnet, default_variant
from resnet_tf.run_directory import (  # noqa: F401
    ARTIFACTS,
    AtomicBackupAndRestore,
    EpochScalars,
    RunDirectory,
    RunRecorder,
)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
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
        try:
            check_choice("depth", config.depth, DEPTHS)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                          ("precision", PRECISIONS)):
        if getattr(config, name) not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}; "
                              f"received {getattr(config, name)!r}.")
    for name in ("epochs", "batch_size", "image_size"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{_flag(name)} must be a positive integer; received {value}.")
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


def _default_out(depth, config):
    return os.path.join("runs", default_run_name(depth, config.dataset, config.data_dir))


def _flag(name):
    return name.replace("_", "-")


# --- optimization -----------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="resnet_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to zero or steps down at milestones.

    Args:
        peak: float. Learning rate at the end of the warmup.
        total_steps: int. Length of training in optimizer steps.
        warmup_steps: int. Steps of linear warmup from `peak / warmup_steps`.
        decay: str. "cosine" or "step".
        milestones: list of int. Steps where "step" multiplies the rate by `decay_rate`.
        decay_rate: float. Factor of each step decay.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", milestones=(),
                 decay_rate=0.1):
        check_choice("decay", decay, SCHEDULES)
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.milestones = [int(m) for m in milestones]
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        if self.decay == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        else:
            passed = sum(ops.cast(step >= m, "float32") for m in self.milestones)
            rate = self.peak * ops.power(self.decay_rate, passed)
        if not self.warmup_steps:
            return rate
        warm = self.peak * (step + 1.0) / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, rate)

    def get_config(self):
        return dict(peak=self.peak, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, decay=self.decay,
                    milestones=self.milestones, decay_rate=self.decay_rate)


def decayed_variables(model):
    """The variables that get weight decay: kernels, not BatchNorm parameters or biases."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


def build_optimizer(name, learning_rate, weight_decay, model, momentum=0.9):
    """SGD with Nesterov momentum, or AdamW; decoupled decay on kernels only.

    Keras decays decoupled (`w -= lr * weight_decay * w`, outside the momentum). Coupled
    L2 of the same coefficient, as the papers and torchvision apply it, is amplified by
    SGD's momentum to an effective `1 / (1 - momentum)` times that; SGD therefore gets
    `weight_decay / (1 - momentum)` so that `wd=5e-4` means what recipes mean by it.
    """
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True,
                                         weight_decay=weight_decay / (1.0 - momentum) or None)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    decayed = {id(v) for v in decayed_variables(model)}
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    return optimizer


# --- the command ------------------------------------------------------------------------


def train(config, options=RunOptions()):
    """Trains (or resumes, or finds complete) one run; returns its metrics dict.

    Raises `ConfigError`, `resnet_tf.data.DataError` or `ValueError` for what the user
    can fix; everything else is a bug.
    """
    check_config(config, options)
    # The run directory is known before loading data when named or derivable, so a
    # complete or conflicting run is reported at once.
    out = options.out
    if out is None and config.depth is not None:
        out = _default_out(config.depth, config)
    if out is not None:
        done = _prepare_run(RunDirectory(out), config, options)
        if done is not None:
            return done

    strategy = make_strategy(options.devices)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(f"--batch-size {config.batch_size} is not divisible by the "
                          f"{replicas} replicas; use a multiple of {replicas}.")
    precision, precision_reason = resolve_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    from resnet_tf import data as data_lib

    data = data_lib.load_data(
        config.dataset, data_dir=config.data_dir, val_dir=config.val_dir,
        val_split=DEFAULT_VAL_SPLIT if config.val_split is None else config.val_split,
        image_size=config.image_size, batch_size=config.batch_size, seed=config.seed,
        deterministic=config.deterministic, augment=config.augment,
        tfds_dir=options.tfds_dir, manual_dir=options.manual_dir)
    resolved = resolve_config(config, data.preset, data.image_size)
    run = RunDirectory(out or _default_out(resolved["depth"], config))
    if out is None:
        done = _prepare_run(run, config, options, resolved)
        if done is not None:
            return done
    chief = is_chief(strategy)
    multi_worker = strategy_name(strategy) == "MultiWorkerMirroredStrategy"
    if chief and options.overwrite:
        run.clear()

    keras.mixed_precision.set_global_policy(precision)
    peak_lr = resolved["lr"] * config.batch_size / 256  # --lr is per 256 images
    with strategy.scope():
        model = _compiled_model(resolved, data, peak_lr, options)
    runtime = dict(
        precision=precision, strategy=strategy_name(strategy), replicas=replicas,
        per_replica_batch=config.batch_size // replicas, global_batch=config.batch_size,
        learning_rate=peak_lr,
        steps_per_epoch=data.train_examples // config.batch_size,
        train_examples=data.train_examples, val_examples=data.val_examples,
        skipped_files=data.skipped_files, classes=len(data.class_names), model=model.name,
        parameters=model.count_params(),
        versions={"keras": keras.__version__, "tensorflow": _tf_version()})
    _print_config(resolved, runtime, precision_reason, run.path)
    if data.skipped_files:
        print(f"Warning: skipped {data.skipped_files} unreadable image file(s).", flush=True)

    backup = run.file("backup")
    if chief:
        write_json(run.file("config.json"),
                   {"config": resolved, "status": "running", "runtime": runtime})
        write_text(run.file("classes.txt"), "\n".join(data.class_names) + "\n")
    else:
        # Other workers keep only their own backup, beside the chief's.
        backup = os.path.join(backup, f"worker-{strategy.cluster_resolver.task_id}")
    monitor = "val_accuracy" if data.val is not None else "accuracy"
    callbacks = [AtomicBackupAndRestore(backup, delete_checkpoint=False)]
    if chief:
        callbacks = [RunRecorder(run, monitor), *callbacks, EpochScalars(run.file("logs"))]
    train_ds = _one_hot(data.train, len(data.class_names))
    val_ds = None if data.val is None else _one_hot(data.val, len(data.class_names))
    if multi_worker:
        work_around_keras_multi_worker(model, strategy, train_ds)
    verbose = options.verbose if options.verbose is not None else (1 if sys.stdout.isatty() else 2)
    model.fit(train_ds, validation_data=val_ds, epochs=resolved["epochs"],
              callbacks=callbacks, verbose=verbose, shuffle=False)
    if not chief:
        return None
    metrics = _final_metrics(model, data, run.read_history(), monitor)
    write_json(run.file("metrics.json"), metrics)
    if options.export:
        _export(model, options.export_dir or run.file(os.path.join("export", model.name)),
                data)
    write_json(run.file("config.json"),
               {"config": resolved, "status": "complete", "runtime": runtime})
    shutil.rmtree(run.file("backup"), ignore_errors=True)
    print(f"Run complete: {run.path}", flush=True)
    return metrics


def _compiled_model(resolved, data, peak_lr, options):
    """The model, compiled with the recipe's optimizer, loss and metrics."""
    classes = len(data.class_names)
    steps = data.train_examples // resolved["batch_size"]
    model = build_resnet(
        resolved["depth"], variant=resolved["variant"], stem=resolved["stem"],
        input_shape=(data.image_size, data.image_size, 3), classes=classes)
    schedule = WarmupSchedule(
        peak_lr,
        total_steps=resolved["epochs"] * steps,
        warmup_steps=round(resolved["warmup_epochs"] * steps),
        decay=resolved["schedule"],
        milestones=[m * steps for m in resolved["milestones"]])
    model.compile(
        optimizer=build_optimizer(resolved["optimizer"], schedule, resolved["wd"], model,
                                  resolved["momentum"]),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=resolved["label_smoothing"]),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(min(5, classes), name="top5")],
        # XLA pays off on GPUs; on CPUs it made ResNet training slower.
        jit_compile=bool(visible_gpus()),
        steps_per_execution=options.steps_per_execution,
    )
    return model


def _final_metrics(model, data, history, monitor):
    if data.val is not None:
        metrics = evaluate_model(model, data.val, data.class_names)
        print(f"Validation: top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} "
              f"on {metrics['examples']} images.", flush=True)
    else:
        metrics = {"top1": None, "top5": None, "examples": 0,
                   "note": "no validation data (--val-split 0 and no validation split)"}
    if history:
        best = max(history, key=lambda r: r.get(monitor, -math.inf))
        metrics.update(epochs=int(history[-1]["epoch"]), best_epoch=int(best["epoch"]),
                       **{f"best_{monitor}": best.get(monitor)})
    return metrics


def _prepare_run(run, config, options, resolved=None):
    """Refuses a conflicting directory, makes sure it is writable; metrics if complete."""
    old = run.read_config()
    if not options.overwrite:
        if old is not None and resolved is None:
            stored = old["config"]
            resolved = resolve_config(config, stored["preset"],
                                      config.image_size or stored["image_size"])
        if run.check(resolved, old):
            print(f"Run {run.path} is already complete ({resolved['epochs']} epochs); "
                  "nothing to do. Pass --overwrite to train it again.", flush=True)
            try:
                with open(run.file("metrics.json")) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return {}
    run.check_writable()
    return None


def _one_hot(dataset, classes):
    import tensorflow as tf

    return dataset.map(lambda x, y: (x, tf.one_hot(y, classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _export(model, base_dir, data):
    try:
        from resnet_tf.export import export_serving_model
    except ImportError as error:
        print(f"Note: not exporting a SavedModel ({error}).", flush=True)
        return
    path = export_serving_model(model, base_dir, class_names=data.class_names,
                                image_size=data.image_size, preset=data.preset)
    print(f"Exported the serving model to {path}", flush=True)


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def _print_config(c, r, precision_reason, path):
    decay = "SGD" if c["optimizer"] == "sgd" else "AdamW"
    if c["schedule"] == "cosine":
        schedule = "cosine"
    else:
        schedule = f"step x0.1 at epochs {', '.join(map(str, c['milestones']))}"
    data = c["data_dir"] or c["dataset"]
    lines = [
        ("model", f"{r['model']} (depth {c['depth']}, variant {c['variant'] or default_variant(c['depth'])}, "
                  f"stem {c['stem']}), {r['parameters']:,} parameters"),
        ("data", f"{data}: {r['train_examples']} train / {r['val_examples']} val images, "
                 f"{r['classes']} classes, {c['image_size']} px, preset {c['preset']}"),
        ("precision", f"{r['precision']} ({precision_reason})"),
        ("strategy", f"{r['strategy']}, {r['replicas']} replica(s)"),
        ("batch", f"{r['global_batch']} global, {r['per_replica_batch']} per replica, "
                  f"{r['steps_per_epoch']} steps per epoch"),
        ("learning rate", f"{r['learning_rate']:g} ({c['lr']:g} per 256 images x "
                          f"{r['global_batch']}/256), {schedule}, "
                          f"{c['warmup_epochs']:g} warmup epoch(s)"),
        ("optimizer", f"{c['optimizer']}" + (f" nesterov momentum {c['momentum']:g}"
                                             if c["optimizer"] == "sgd" else "")),
        ("weight decay", f"{c['wd']:g} ({decay}; not on BatchNorm parameters or biases)"),
        ("label smoothing", f"{c['label_smoothing']:g}"),
        ("epochs", f"{c['epochs']}"),
        ("seed", f"{c['seed']}{' (deterministic)' if c['deterministic'] else ''}"),
        ("run directory", path),
    ]
    print("Configuration:")
    for key, value in lines:
        print(f"  {key:<16}{value}")
    sys.stdout.flush()
