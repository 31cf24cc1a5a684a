"""Training a ResNet with `model.fit`: `train(TrainConfig(...), RunOptions(...))`.

Its pieces stand on their own: `recipes.resolve_config`, `schedules.WarmupSchedule`,
`optimizers.build_optimizer`, `distribute.resolve_precision` and `make_strategy`.

Everything a run writes goes to one run folder (`resnet_tf.runs`);
rerunning the same command resumes it from the last finished epoch, and a finished run
is left as it is.
"""

import dataclasses
import json
import math
import os
import sys

import keras

from resnet_tf.compat import kept_values, stored_config
from resnet_tf.data import load_data
from resnet_tf.data.service import distribute, service_target
from resnet_tf.errors import ConfigError
from resnet_tf.files import fault_point, write_json, write_text
from resnet_tf.metrics import (
    CALIBRATION_BINS,
    TTA,
    TTA_DESCRIPTIONS,
    calibration,
    evaluate_model,
    fit_temperature,
    plot_reliability,
    probabilities,
)
from resnet_tf.models.resnet import build_resnet
from resnet_tf.models.saving import load_keras_file
from resnet_tf.models.sources import recorded_transform
from resnet_tf.models.transform import set_transform
from resnet_tf.runs import CALIBRATION, RunDirectory, read_class_names
from resnet_tf.schedules import WarmupSchedule
from resnet_tf.training.callbacks import (
    AtomicBackupAndRestore,
    EpochScalars,
    MidEpochFault,
    ModelEMA,
    RunRecorder,
    StopOnInterrupt,
    StopOnNonFiniteLoss,
)
from resnet_tf.training.config import architecture, model_kwargs, resolve
from resnet_tf.training.cpu_tuning import apply_threads, describe_cpu_config, run_cpu_config
from resnet_tf.training.distill import install_distillation
from resnet_tf.training.distribute import (
    check_divisible,
    is_chief,
    make_strategy,
    resolve_precision,
    strategy_name,
    tf_config_is_chief,
    visible_gpus,
    work_around_keras_distributed_fit,
)
from resnet_tf.training.finetune import (
    CLASSIFIER,
    build_from_model,
    build_from_weights,
    copy_backbone,
    set_backbone_trainable,
    weights_kind,
)
from resnet_tf.training.optimizers import build_optimizer
from resnet_tf.training.pixels import normalizing_train_step
from resnet_tf.training.recipes import RunOptions, check_config, default_out

FINETUNE_BACKUP = "finetune"

# --- the command ------------------------------------------------------------------------


def train(config, options=RunOptions()):
    """Trains (or resumes, or finds complete) one run; returns its metrics dict.

    The dict is metrics.json's content plus `run_dir`, the run folder. Exporting the
    result is the caller's step (`resnet_tf.export.export_run`; `train.py` does it).

    Raises `ConfigError`, `resnet_tf.data.DataError` or `ValueError` for what the user
    can fix; everything else is a bug.
    """
    check_config(config, options)
    if options.data_service:
        service_target(options.data_service)  # unreachable: one line within seconds, no files
    run, resolved = resolve_run(config, options)
    try:
        return _train(run, resolved, options)
    finally:
        # Written, refused or failed, the run is free for the next process now, not at this
        # one's exit (a notebook's kernel may never exit); a new folder that holds no run
        # goes with its .lock.
        run.unlock()


def _train(run, resolved, options):
    done = _prepare_run(run, resolved, options)
    if done is not None:
        return done
    session = _start_tensorflow(resolved, options)
    data = _load_data(resolved, session.options)
    if session.chief and options.overwrite:
        run.clear()
    elif session.chief:
        _check_resumable(run, data.class_names)
    keras.mixed_precision.set_global_policy(session.precision)
    with session.strategy.scope():
        model = _build_model(resolved, data)
    runtime = _runtime(resolved, session, data, model)
    _print_config(resolved, runtime, session.precision_reason, run.path)
    if data.skipped_files:
        print(f"Warning: skipped {data.skipped_files} unreadable image file(s).", flush=True)
    if session.chief:
        _write_config(run, resolved, runtime, "running")
        write_text(run.file("classes.txt"), "\n".join(data.class_names) + "\n")
    monitor = "val_accuracy" if data.val is not None else "accuracy"
    ema, callbacks = _callbacks(resolved, run, session, monitor)
    if resolved.distill:  # the average teaches the weights it averages
        install_distillation(model, ema, resolved.distill)
    _fit(model, resolved, data, run, session, callbacks, runtime["learning_rate"])
    if ema:  # from here on the model is its EMA weights: final metrics and export
        ema.apply()
    if not session.chief:
        return None
    fault_point("final evaluation")
    metrics = _final_metrics(model, data, run.read_history(), monitor, resolved, run)
    write_json(run.file("metrics.json"), metrics)
    fault_point("before complete")
    _write_config(run, resolved, runtime, "complete")
    run.remove_backup()
    print(f"Run complete: {run.path}", flush=True)
    return dict(metrics, run_dir=run.path)


def resolve_run(config, options):
    """`(RunDirectory, ResolvedConfig)` of a run, read from its data's facts (before its
    pipelines exist) and, when the run folder holds a run from before a recipe default
    changed, that run's own values of what the flags leave unset."""
    resolved = resolve(config, options)
    run = RunDirectory(options.out or default_out(resolved.depth, config))
    old = None if options.overwrite else run.read_config()
    if old is not None:
        resolved = resolved.replace(**kept_values(dataclasses.asdict(config),
                                                  stored_config(old["config"])))
    return run, resolved


@dataclasses.dataclass(frozen=True)
class _Session:
    """What TensorFlow was set up with for this process."""

    options: RunOptions  # with the CPU settings' steps per execution
    cpu: dict | None
    strategy: object
    chief: bool
    precision: str
    precision_reason: str


def _start_tensorflow(resolved, options):
    """CPU threads, the distribution strategy, precision and seeds, in the order
    TensorFlow needs them (threads before its first op)."""
    cpu = None if visible_gpus() else cpu_config_for(options)
    if cpu is not None:
        apply_threads(cpu)
        options = dataclasses.replace(options, steps_per_execution=cpu["steps_per_execution"])
    strategy = make_strategy(options.devices, resolved.batch_size)
    check_divisible(resolved.batch_size, strategy.num_replicas_in_sync)
    precision, reason = resolve_precision(resolved.precision)
    keras.utils.set_random_seed(resolved.seed)
    if resolved.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return _Session(options, cpu, strategy, is_chief(strategy), precision, reason)


def _load_data(resolved, options):
    """The train and validation pipelines at the resolved size, preset and augmentation."""
    return load_data(
        resolved.dataset, data_dir=resolved.data_dir, val_dir=resolved.val_dir,
        val_split=resolved.val_split, image_size=resolved.image_size,
        train_size=resolved.train_size, preset=resolved.preset,
        batch_size=resolved.batch_size, seed=resolved.seed, split_seed=resolved.split_seed,
        deterministic=resolved.deterministic, tfds_dir=options.tfds_dir,
        manual_dir=options.manual_dir, augment=resolved.augment, mixup=resolved.mixup,
        cutmix=resolved.cutmix, random_erasing=resolved.random_erasing,
        crop_padding=resolved.crop_padding, eval_transform=run_transform(resolved),
        # uint8 batches where the pipeline allows, normalized in the training step
        train_pixels="auto")


def _runtime(resolved, session, data, model):
    """config.json's "runtime": how this process runs the run (none of it is the run)."""
    replicas = session.strategy.num_replicas_in_sync
    batch = resolved.batch_size
    return dict(
        precision=session.precision, strategy=strategy_name(session.strategy),
        replicas=replicas, per_replica_batch=batch // replicas, global_batch=batch,
        # --lr is per 256 images of the effective batch (--grad-accum micro-batches).
        learning_rate=resolved.lr * batch * resolved.grad_accum / 256,
        effective_batch=batch * resolved.grad_accum,
        data_service=session.options.data_service,
        steps_per_epoch=data.train_examples // batch,
        train_examples=data.train_examples, val_examples=data.val_examples,
        skipped_files=data.skipped_files, classes=len(data.class_names), model=model.name,
        train_pixels=data.train_pixels,
        parameters=model.count_params(),
        versions={"keras": keras.__version__, "tensorflow": _tf_version()},
        cpu_settings=None if session.cpu is None else describe_cpu_config(session.cpu))


def _write_config(run, resolved, runtime, status):
    write_json(run.file("config.json"),
               {"config": resolved.to_dict(), "status": status, "runtime": runtime})


def _backup_dir(run, session):
    """The chief's backup/; other workers keep only their own, beside it."""
    if session.chief:
        return run.file("backup")
    return os.path.join(run.file("backup"), f"worker-{session.strategy.cluster_resolver.task_id}")


def _callbacks(resolved, run, session, monitor):
    """`(ema or None, callbacks of a phase given its backup folder)`."""
    # The divergence check comes first: a non-finite epoch is neither recorded nor backed up.
    # Validation, best.keras, metrics.json and the export use the average (before the
    # backup, which saves the state that the average's file must match).
    # The average is updated every batch; with --grad-accum N the weights change every N
    # batches, and decay ** (1 / N) per batch averages as `ema` per update does.
    ema = (ModelEMA(resolved.ema ** (1 / resolved.grad_accum), _backup_dir(run, session))
           if resolved.ema else None)
    before = [StopOnNonFiniteLoss(), *([ema] if ema else [])]
    after = []
    if session.chief:
        before.append(RunRecorder(run, monitor, ema=ema))
        after.append(EpochScalars(run.file("logs")))
    if os.environ.get("RESNET_TF_KILL_AT"):
        after.append(MidEpochFault())

    def for_phase(backup):
        return [*before, AtomicBackupAndRestore(backup, delete_checkpoint=False), *after]

    return ema, for_phase


def _fit(model, resolved, data, run, session, callbacks, peak_lr):
    """`model.fit` over the run's phases, each with its own backup folder."""
    classes = len(data.class_names)
    train_ds = data.train if getattr(data, "one_hot_labels", False) else _one_hot(data.train, classes)
    val_ds = None if data.val is None else _one_hot(data.val, classes)
    options = session.options
    if options.data_service:  # the whole training pipeline runs on the service's workers
        train_ds = distribute(train_ds, options.data_service, job_name=None)
    verbose = options.verbose if options.verbose is not None else (1 if sys.stdout.isatty() else 2)
    backup = _backup_dir(run, session)
    pixels = data.train_pixels == "uint8"  # normalized in the training step
    for phase in _phases(resolved, run, peak_lr, model):
        with session.strategy.scope():
            _compile(model, resolved, data, phase, options)
        work_around_keras_distributed_fit(model, session.strategy, train_ds)
        phase_backup = backup if phase.backup is None else os.path.join(backup, phase.backup)
        interrupt = StopOnInterrupt()
        try:
            with normalizing_train_step(model, pixels):
                model.fit(train_ds, validation_data=val_ds, epochs=phase.end,
                          initial_epoch=phase.start, verbose=verbose, shuffle=False,
                          callbacks=[*callbacks(phase_backup), interrupt])
        finally:
            interrupt.restore()
        if interrupt.interrupted:  # swallowed after the last batch: stop before what follows
            raise KeyboardInterrupt


def _build_model(resolved, data):
    """The network: new, or its backbone from --weights with a new classifier."""
    classes = len(data.class_names)
    bce = resolved.loss == "bce"
    # Training crops of another size than the evaluation's: the network takes any size.
    side = data.image_size if data.train_size in (None, data.image_size) else None
    args = dict(input_shape=(side, side, 3), classes=classes,
                # BCE trains logits through a sigmoid; exports and evaluation add a softmax.
                classifier_activation=None if bce else "softmax", **model_kwargs(resolved))
    weights = resolved.weights
    if not weights:
        model = build_resnet(resolved.depth, **args)
    elif weights_kind(weights) == "keras":
        path = os.path.join(weights, "best.keras") if os.path.isdir(weights) else weights
        source = load_keras_file(path, error=ConfigError)
        model = build_from_model(source, weights, depth=resolved.depth, **args)
    else:
        model = build_from_weights(weights, depth=resolved.depth, **args)
    set_transform(model, run_transform(resolved))  # its .keras files evaluate as the run did
    return model


def run_transform(resolved):
    """The run's `EvalTransform`: its config's "eval_transform", or for a run resumed from
    before runs recorded one (None), its preset's at its image size."""
    return recorded_transform(resolved.to_dict())


@dataclasses.dataclass
class _Phase:
    start: int
    end: int
    peak_lr: float
    warmup_epochs: float
    frozen: bool
    backup: str | None  # sub-folder of backup/ holding this phase's state


def _phases(resolved, run, peak_lr, model):
    """One phase, or with --weights and --freeze-epochs N: the frozen-backbone head phase
    (epochs 1..N), then fine-tuning at --finetune-lr; a resumed run skips what is done."""
    epochs = resolved.epochs
    finetuning = bool(resolved.weights)
    frozen_epochs = (resolved.freeze_epochs or 0) if finetuning else 0
    train_bn = bool(resolved.train_batchnorm)
    if not frozen_epochs:
        if finetuning:
            set_backbone_trainable(model, True, train_bn)
        yield _Phase(0, epochs, peak_lr, resolved.warmup_epochs, False, None)
        return
    _, done = run.backup_state()
    if done < frozen_epochs:
        set_backbone_trainable(model, False)
        yield _Phase(0, frozen_epochs, peak_lr, min(resolved.warmup_epochs, frozen_epochs / 4),
                     True, None)
    elif not os.path.isdir(run.file(os.path.join("backup", FINETUNE_BACKUP))):
        # The head phase ended in an earlier process: start from its last epoch's weights.
        copy_backbone(load_keras_file(run.file("last.keras"), error=ConfigError), model,
                      run.file("last.keras"))
        model.get_layer(CLASSIFIER).set_weights(
            load_keras_file(run.file("last.keras"), error=ConfigError)
            .get_layer(CLASSIFIER).get_weights())
    set_backbone_trainable(model, True, train_bn)
    finetune_lr = resolved.finetune_lr or resolved.lr / 10
    yield _Phase(frozen_epochs, epochs, finetune_lr * resolved.batch_size / 256, 0.0, False,
                 FINETUNE_BACKUP)


def _compile(model, resolved, data, phase, options):
    """Compiles `model` with the recipe's optimizer, loss and metrics for one phase."""
    classes = len(data.class_names)
    steps = data.train_examples // resolved.batch_size
    span = phase.end - phase.start
    schedule = WarmupSchedule(
        phase.peak_lr,
        total_steps=span * steps,
        warmup_steps=round(phase.warmup_epochs * steps),
        decay=resolved.schedule,
        milestones=[(m - phase.start) * steps for m in resolved.milestones
                    if phase.start < m < phase.end])
    if resolved.loss == "bce":
        loss = keras.losses.BinaryCrossentropy(from_logits=True,
                                               label_smoothing=resolved.label_smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=resolved.label_smoothing)
    model.compile(
        optimizer=build_optimizer(resolved.optimizer, schedule, resolved.wd, model,
                                  resolved.momentum, grad_clip=resolved.grad_clip,
                                  grad_accum=resolved.grad_accum),
        loss=loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(min(5, classes), name="top5")],
        # XLA pays off on GPUs; on CPUs it made ResNet training slower.
        jit_compile=bool(visible_gpus()),
        steps_per_execution=options.steps_per_execution or 1,
    )
    # Built now, not by the first training step: tf.function traces a step that creates
    # variables twice (once to create them), which doubled every run's start-up tracing.
    model.optimizer.build(model.trainable_variables)


def _final_metrics(model, data, history, monitor, resolved, run):
    """metrics.json: the evaluation the export serves (the run's --tta) first, the others
    beside it, and with --calibrate the temperature fitted on the validation images."""
    if data.val is not None:
        served, kept = resolved.tta, []
        metrics = evaluate_model(model, data.val, data.class_names, tta=served,
                                 on_batch=lambda images, labels, scores: kept.append((scores, labels)))
        evaluations = {served: _summary(metrics)}
        for other in TTA:  # each named beside the served one
            if other != served:
                evaluations[other] = _summary(evaluate_model(model, data.val, data.class_names,
                                                             tta=other))
        metrics.update(served={"tta": served, "description": TTA_DESCRIPTIONS[served]},
                       evaluations={tta: evaluations[tta] for tta in TTA})
        if served != "none":  # the key of runs before the export served TTA
            metrics["single_view"] = {k: evaluations["none"][k] for k in ("top1", "top5")}
        print(f"Validation, as the export serves it ({TTA_DESCRIPTIONS[served]}): top-1 "
              f"{metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} on {metrics['examples']} "
              "images.", flush=True)
        print("  also: " + "; ".join(f"{TTA_DESCRIPTIONS[t]} top-1 {evaluations[t]['top1']:.4f}"
                                     for t in TTA if t != served) + ".", flush=True)
        if resolved.calibrate:
            metrics["calibration"] = _calibrate(kept, metrics, run)
    else:
        metrics = {"top1": None, "top5": None, "examples": 0,
                   "note": "no validation data (--val-split 0 and no validation split); "
                           "nothing to calibrate on"}
    if history:
        best = max(history, key=lambda r: r.get(monitor, -math.inf))
        metrics.update(epochs=int(history[-1]["epoch"]), best_epoch=int(best["epoch"]),
                       **{f"best_{monitor}": best.get(monitor)})
    return metrics


def _summary(metrics):
    return {"top1": metrics["top1"], "top5": metrics["top5"], "ece": metrics["ece"]}


def _calibrate(kept, metrics, run):
    """Fits the temperature on the validation scores (as served), writes calibration.json
    and the reliability diagram after it, and returns what metrics.json says of it."""
    import numpy as np

    probs = np.concatenate([scores for scores, _ in kept])
    labels = np.concatenate([np.asarray(labels) for _, labels in kept])
    temperature = fit_temperature(probs, labels)
    after = calibration(probabilities(probs, temperature), labels)
    result = {"temperature": temperature, "ece_before": metrics["ece"], "ece_after": after["ece"],
              "bins": CALIBRATION_BINS, "examples": int(len(labels)),
              "note": "fitted and measured on the validation images (temperature scaling)"}
    write_json(run.file(CALIBRATION), result)
    plot_reliability(after, run.file("reliability.png"),
                     title=f"after temperature {temperature:.3f}: ECE {after['ece']:.4f}")
    print(f"Calibration: temperature {temperature:.3f}; expected calibration error "
          f"{metrics['ece']:.4f} -> {after['ece']:.4f} ({CALIBRATION_BINS} bins); the export "
          "applies it.", flush=True)
    return result


def _prepare_run(run, resolved, options):
    """Takes the run's lock, refuses a conflicting directory, makes sure it is writable,
    cleans what a killed run left behind; returns the metrics if the run is complete."""
    run.check_writable()
    if tf_config_is_chief():  # other workers of a multi-worker run write their backups only
        run.lock()
        run.remove_debris()
    if not options.overwrite:
        old = run.read_config()
        if old is not None:
            old = {**old, "config": stored_config(old["config"])}
        if run.check(resolved.to_dict(), old):
            print(f"Run {run.path} is already complete ({resolved.epochs} epochs); "
                  "nothing to do. Pass --overwrite to train it again.", flush=True)
            try:
                with open(run.file("metrics.json")) as f:
                    return dict(json.load(f), run_dir=run.path)
            except (OSError, ValueError):
                return {"run_dir": run.path}
    run.check_writable()
    return None


def _check_resumable(run, class_names):
    """Refuses to resume a run whose finished epochs cannot be continued, before writing.

    Finished epochs (history.csv) need the backup state they were saved with, and the
    data must have the classes the run was trained on.
    """
    old = run.read_config()
    if old is None:
        return
    history = run.read_history()
    state, backed_up = run.backup_state()
    # The recorder writes an epoch's row just before the backup: one row more is a kill
    # in between, and that epoch is simply run again.
    if state != "ok" and state != "missing" or len(history) > backed_up + 1:
        reason = {"missing": "there is no backup state (backup/ is missing)",
                  "ok": f"its backup state holds only {backed_up}"}.get(state, state)
        raise ConfigError(
            f"--out {run.path} holds {len(history)} finished epoch(s) but {reason}, so the run "
            "cannot resume where it stopped; pass --overwrite to start it again, or choose "
            "another --out.")
    stored = read_class_names(run.file("classes.txt"))
    if stored is not None and stored != list(class_names):
        only_run = sorted(set(stored) - set(class_names))
        only_data = sorted(set(class_names) - set(stored))
        raise ConfigError(
            f"--out {run.path} was trained on other classes. Received: data with "
            f"{len(class_names)} classes (not in the run: {only_data}); expected the run's "
            f"{len(stored)} classes (missing from the data: {only_run}). Pass --overwrite to "
            "start again, or choose another --out.")


def _one_hot(dataset, classes):
    import tensorflow as tf

    return dataset.map(lambda x, y: (x, tf.one_hot(y, classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _tf_version():
    import tensorflow as tf

    return tf.__version__


def cpu_config_for(options):
    """The CPU settings of a run: `cpu_tuning.run_cpu_config` from its options."""
    return run_cpu_config(options.cpu_config, onednn=options.onednn,
                          inter_op=options.inter_op_threads, intra_op=options.intra_op_threads,
                          steps_per_execution=options.steps_per_execution)


def _print_config(c, r, precision_reason, path):
    """Prints the resolved config `c` and the runtime `r` the run starts with."""
    decay = "SGD L2" if c.optimizer == "sgd" else c.optimizer
    if c.schedule == "cosine":
        schedule = "cosine"
    else:
        schedule = f"step x0.1 at epochs {', '.join(map(str, c.milestones))}"
    data = c.data_dir or c.dataset
    built = ", ".join(f"{k} {v}" for k, v in model_kwargs(c).items()
                      if k not in ("variant", "stem")) or "builder defaults"
    augment = [c.augment] + [f"{k} {getattr(c, k):g}"
                             for k in ("mixup", "cutmix", "random_erasing") if getattr(c, k)]
    if c.preset == "cifar" and c.augment != "none":
        augment.append(f"crop padding {c.crop_padding}")
    lines = [
        ("recipe", c.recipe),
        ("model", f"{r['model']} (depth {c.depth}, variant {architecture(c)['variant']}, "
                  f"stem {c.stem}), {r['parameters']:,} parameters"),
        ("architecture", built),
        *([("weights", f"{c.weights}" + (
            f"; head only for {c.freeze_epochs} epoch(s), then everything at lr "
            f"{c.finetune_lr or c.lr / 10:g} per 256 images" if c.freeze_epochs
            else "") + ("; BatchNorm trains" if c.train_batchnorm
                        else "; BatchNorm frozen"))] if c.weights else []),
        ("data", f"{data}: {r['train_examples']} train / {r['val_examples']} val images, "
                 f"{r['classes']} classes, {c.image_size} px, preset {c.preset}"
                 + (f", training crops {c.train_size} px" if c.train_size not in (None, c.image_size)
                    else "")
                 + (f"; training pipeline on the tf.data service at {r['data_service']}"
                    if r.get("data_service") else "")
                 + ("; uint8 training batches, normalized in the training step"
                    if r.get("train_pixels") == "uint8" else "")),
        ("augmentation", ", ".join(augment)),
        ("precision", f"{r['precision']} ({precision_reason})"),
        ("strategy", f"{r['strategy']}, {r['replicas']} replica(s)"),
        *([("cpu settings", r["cpu_settings"])] if r.get("cpu_settings") else []),
        ("batch", f"{r['global_batch']} global, {r['per_replica_batch']} per replica, "
                  f"{r['steps_per_epoch']} steps per epoch"
                  + (f"; {c.grad_accum} accumulated per update ({r['effective_batch']} images)"
                     if c.grad_accum > 1 else "")),
        ("learning rate", f"{r['learning_rate']:g} ({c.lr:g} per 256 images x "
                          f"{r['effective_batch']}/256), {schedule}, "
                          f"{c.warmup_epochs:g} warmup epoch(s)"),
        ("optimizer", f"{c.optimizer}" + (f" nesterov momentum {c.momentum:g}"
                                             if c.optimizer == "sgd" else "")
         + (f", gradient norm clipped at {c.grad_clip:g}" if c.grad_clip else "")
         + (f", weight EMA {c.ema:g} (BatchNorm statistics included)" if c.ema else "")),
        ("weight decay", f"{c.wd:g} ({decay}; not on BatchNorm parameters or biases)"),
        ("loss", f"{'binary cross-entropy' if c.loss == 'bce' else 'softmax cross-entropy'}, "
                 f"label smoothing {c.label_smoothing:g}"),
        ("epochs", f"{c.epochs}"),
        ("evaluation", f"{TTA_DESCRIPTIONS[c.tta]}, also served by the export"
                       + ("; then a calibration temperature" if c.calibrate else "")),
        ("seed", f"{c.seed}{' (deterministic)' if c.deterministic else ''}; "
                 f"split seed {c.split_seed} (draws the hold-out without --val-dir)"),
        ("run directory", path),
    ]
    print("Configuration:")
    for key, value in lines:
        print(f"  {key:<16}{value}")
    sys.stdout.flush()
