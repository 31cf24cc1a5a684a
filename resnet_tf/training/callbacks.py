"""The callbacks that write a run folder (see `resnet_tf.runs`) during `model.fit`.

Every file is replaced atomically, so a run killed at any moment leaves each file
either as it was or complete.
"""

import contextlib
import json
import math
import os
import signal
import threading

import keras
import numpy as np

from resnet_tf.errors import ConfigError, TrainingDivergedError
from resnet_tf.files import atomic_write, fault_point, write_text
from resnet_tf.runs import describe_non_finite, non_finite_weights


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: history.csv, curves.png, last.keras and best.keras, each atomically.

    Comes before the backup callback, so an epoch is recorded before it counts as done:
    a kill in between reruns that epoch, and its row is replaced rather than repeated.
    """

    def __init__(self, run, monitor, ema=None):
        super().__init__()
        self.run = run
        self.monitor = monitor
        self.ema = ema
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # the first epoch of this process, after any restore
            self.rows = [r for r in self.run.read_history() if r["epoch"] <= epoch]
            if self.rows:
                self.run.check_models()

    def on_epoch_end(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, "lr": lr, **{k: float(v) for k, v in logs.items()}}
        best = max((r.get(self.monitor, -math.inf) for r in self.rows), default=-math.inf)
        self.rows.append(row)
        self.run.write_history(self.rows)
        self.run.write_curves(self.rows)
        check_free_space(self.run.path, self.model)
        with self.ema.swapped() if self.ema else contextlib.nullcontext():
            atomic_write(self.run.file("last.keras"), self.model.save)
            if row.get(self.monitor, -math.inf) > best:
                atomic_write(self.run.file("best.keras"), self.model.save)


def check_free_space(folder, model, copies=4):
    """Raises `ConfigError` when `folder`'s disk cannot hold `copies` checkpoints of `model`.

    An epoch writes last.keras, maybe best.keras and the backup (weights and optimizer
    state), each through a temporary copy; a full disk mid-write is what TensorFlow and
    h5py handle worst, so the epoch stops before it, its previous state intact.
    """
    import shutil

    needed = copies * 4 * model.count_params() * 3  # float32 weights, ~2 optimizer slots
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"The disk of {folder} is (nearly) full. Received: {free / 2**20:.0f} MB free; "
            f"expected at least {needed / 2**20:.0f} MB for this epoch's checkpoints. Free "
            "some space and rerun the same command to resume from the last finished epoch.")


class ModelEMA(keras.callbacks.Callback):
    """An exponential moving average of every floating-point weight of the model,
    BatchNorm moving statistics included (timm's `ModelEmaV2`, torchvision's reference
    `ExponentialMovingAverage(use_buffers=True)`).

    Keras' optimizer EMA (`use_ema`) averages trainable variables only, so the averaged
    weights meet BatchNorm statistics measured on the training weights: ResNet-20 on the
    CIFAR copy, 8 epochs, reached 68.0 % with it against 81.6 % without (issue 13). The
    decay after `t` updates is `min(decay, (1 + t) / (10 + t))`, as
    `tf.train.ExponentialMovingAverage(num_updates=...)` does, so the average does not
    remember the random initialisation for thousands of steps.

    Validation (`on_test_begin`/`end`) runs on the average; `swapped()` holds it in the
    model for a block; `apply()` keeps it there. At each epoch end the average is written
    to `state_dir/ema-<optimizer step>.npz` before the backup callback (which must come
    after this one) saves, and a resumed run reads the file of the step it restored.
    """

    def __init__(self, decay, state_dir):
        super().__init__()
        self.decay = float(decay)
        self.state_dir = state_dir
        self._average = None
        self._restored = False

    def _weights(self):
        return [w for w in self.model.weights if "float" in str(w.dtype)]

    def averaged_weights(self):
        """The model's weights that are averaged, in the order of `average_values()`."""
        return self._weights()

    def average_values(self):
        """The average of each of `averaged_weights()` (variables; from `fit`'s start)."""
        return self._average

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if self._average is None:
            self._average = [tf.Variable(keras.ops.convert_to_numpy(w), trainable=False)
                             for w in self._weights()]
            self._updates = tf.Variable(0.0, trainable=False)
            self._last_step = tf.Variable(0.0, trainable=False)
            self._update = tf.function(self._update_average)
            self._swap = tf.function(self._swap_values)
        self._restored = False

    def on_epoch_begin(self, epoch, logs=None):
        # After every callback's on_train_begin: the backup has restored weights and step.
        if not self._restored:
            self._restore()
            self._restored = True

    def _restore(self):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == 0:
            self._reset()
            return
        path = os.path.join(self.state_dir, f"ema-{step}.npz")
        if not os.path.exists(path):
            raise ConfigError(
                f"The run's EMA weights are missing. Received: a backup at optimizer step "
                f"{step} without {path}; expected the file written with it. Rerun with "
                "--overwrite to start again.")
        with np.load(path) as state:
            for i, average in enumerate(self._average):
                average.assign(state[f"w{i}"])
            self._updates.assign(float(state["updates"]))
        self._last_step.assign(float(step))

    def _reset(self):
        for average, weight in zip(self._average, self._weights()):
            average.assign(keras.ops.convert_to_numpy(weight))
        self._updates.assign(0.0)
        self._last_step.assign(0.0)

    def _update_average(self):
        import tensorflow as tf

        step = tf.cast(self.model.optimizer.iterations, tf.float32)
        t = self._updates
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t)) ** (step - self._last_step)
        for average, weight in zip(self._average, self._weights()):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight, average.dtype))
        self._updates.assign_add(1.0)
        self._last_step.assign(step)

    def _swap_values(self):
        import tensorflow as tf

        for average, weight in zip(self._average, self._weights()):
            value = tf.identity(weight.value)
            weight.assign(average)
            average.assign(value)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def on_test_begin(self, logs=None):
        self._swap()

    def on_test_end(self, logs=None):
        self._swap()

    @contextlib.contextmanager
    def swapped(self):
        """Within the block the model holds the average; the training weights come back."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def apply(self):
        """Copies the average into the model (the end of training)."""
        for average, weight in zip(self._average, self._weights()):
            weight.assign(average)

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        os.makedirs(self.state_dir, exist_ok=True)
        arrays = {f"w{i}": a.numpy() for i, a in enumerate(self._average)}
        arrays["updates"] = np.float32(self._updates.numpy())
        atomic_write(os.path.join(self.state_dir, f"ema-{step}.npz"),
                     lambda tmp: _save_npz(tmp, arrays))
        # Keep this step's file and the one the current backup (one epoch older) needs.
        old = sorted((int(n[4:-4]) for n in os.listdir(self.state_dir)
                      if n.startswith("ema-") and n.endswith(".npz")), reverse=True)[2:]
        for s in old:
            os.remove(os.path.join(self.state_dir, f"ema-{s}.npz"))


def _save_npz(path, arrays):
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose weights and epoch files are replaced atomically."""

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        atomic_write(self._weights_path, self.model.save_weights)
        write_text(self._training_metadata_path,
                   json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class EpochScalars(keras.callbacks.Callback):
    """TensorBoard scalars per epoch, laid out as keras.callbacks.TensorBoard does it.

    Written with TensorFlow's own summary ops, so it needs no `tensorboard` package
    (which TensorFlow 2.21 no longer installs, and keras.callbacks.TensorBoard requires).
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        logs = dict(logs or {})
        logs["learning_rate"] = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        for key, value in logs.items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if split not in self.writers:
                self.writers[split] = tf.summary.create_file_writer(
                    os.path.join(self.log_dir, split))
            with self.writers[split].as_default():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value)), step=epoch,
                                 metadata=metadata)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}  # a fine-tuning run calls fit again for its second phase


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with `TrainingDivergedError` when an epoch ends with a non-finite
    loss or validation loss, or with non-finite weights (`runs.non_finite_weights`).

    Placed before the callbacks that save, so the diverged epoch is neither recorded
    nor backed up: the run folder keeps the last finite epoch, ready to resume.
    """

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        found = [f"the {name.replace('val_', 'validation ')} of epoch {epoch + 1} is "
                 f"{float(logs[name])}" for name in ("loss", "val_loss")
                 if logs.get(name) is not None and not math.isfinite(float(logs[name]))]
        if not found:
            broken = non_finite_weights(self.model)
            if broken:
                found = [f"after epoch {epoch + 1}, "
                         f"{describe_non_finite(broken, len(self.model.weights))}"]
        if found:
            raise TrainingDivergedError(
                f"Training diverged: {found[0]}; nothing of that epoch was saved and no model "
                "was exported. Received: a non-finite loss or weights; expected finite ones. "
                "Lower --lr or --wd (or add --warmup-epochs) and pass --overwrite, or rerun as "
                "it is to retry from the last finished epoch.")


class StopOnInterrupt(keras.callbacks.Callback):
    """Ctrl-C stops training at the end of the current batch; a second Ctrl-C at once.

    Python turns SIGINT into a KeyboardInterrupt at the next bytecode; when that bytecode
    belongs to a finalizer (TensorFlow frees traced functions in `__del__`, often while the
    first step is traced), the exception is printed as "ignored", with a traceback, and
    training went on. While `fit` runs, the first SIGINT is only recorded here and raised
    after the batch; a second one goes to the handler from before `fit`.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False
        self._previous = None

    def on_train_begin(self, logs=None):
        # Only the main thread may set handlers; an ignored SIGINT (nohup) stays ignored.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        if not self.interrupted:
            self.interrupted = True
        elif callable(self._previous):
            self._previous(signum, frame)
        else:
            raise KeyboardInterrupt

    def _check(self, *args, **kwargs):
        if self.interrupted:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _check

    def restore(self):
        """Puts back the SIGINT handler from before `fit`: the caller's step after `fit`
        returns or raises (a callback's `on_train_end` is skipped when it raises)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class MidEpochFault(keras.callbacks.Callback):
    """`fault_point("start of epoch N")`, and `fault_point("mid epoch N")` after the second
    batch of every epoch N.

    Added only when `RESNET_TF_KILL_AT` is set: a batch hook makes Keras hand every
    step's logs to Python, which the trainer otherwise avoids.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        fault_point(f"start of epoch {epoch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            fault_point(f"mid epoch {self._epoch + 1}")
