"""The callbacks that write a run folder (see `resnet_tf.runs`) during `model.fit`.

Every file is replaced atomically, so a run killed at any moment leaves each file
either as it was or complete.
"""

import contextlib
import json
import math
import os

import keras

from resnet_tf.errors import ConfigError, TrainingDivergedError
from resnet_tf.files import atomic_write, fault_point, write_text


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: history.csv, curves.png, last.keras and best.keras, each atomically.

    Comes before the backup callback, so an epoch is recorded before it counts as done:
    a kill in between reruns that epoch, and its row is replaced rather than repeated.
    """

    def __init__(self, run, monitor, ema=False):
        super().__init__()
        self.run = run
        self.monitor = monitor
        self.ema = ema
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # the first epoch of this process, after any restore
            self.rows = [r for r in self.run.read_history() if r["epoch"] <= epoch]

    def on_epoch_end(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, "lr": lr, **{k: float(v) for k, v in logs.items()}}
        best = max((r.get(self.monitor, -math.inf) for r in self.rows), default=-math.inf)
        self.rows.append(row)
        self.run.write_history(self.rows)
        self.run.write_curves(self.rows)
        check_free_space(self.run.path, self.model)
        with ema_weights_in(self.model, self.ema):
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


@contextlib.contextmanager
def ema_weights_in(model, enabled=True):
    """Within the block the model holds its optimizer's EMA weights; the training weights
    come back after it (Keras' own `SwapEMAWeights` swap, used outside `evaluate`).

    The backup callback saves outside such a block, so a resumed run continues from the
    training weights and the average exactly as they were.
    """
    if not enabled:
        yield
        return
    swapper = keras.callbacks.SwapEMAWeights()
    swapper.set_model(model)
    swapper._swap_variables()  # noqa: SLF001 - Keras' swap, the one evaluation uses
    try:
        yield
    finally:
        swapper._swap_variables()  # noqa: SLF001


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
    """Stops training with `TrainingDivergedError` when an epoch ends with a non-finite loss.

    Placed before the callbacks that save, so the diverged epoch is neither recorded
    nor backed up: the run folder keeps the last finite epoch, ready to resume.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDivergedError(
                f"Training diverged: the loss of epoch {epoch + 1} is {float(loss)}; nothing of "
                "that epoch was saved and no model was exported. Received: a non-finite loss; "
                "expected a finite one. Lower --lr (or add --warmup-epochs) and pass --overwrite, "
                "or rerun as it is to retry from the last finished epoch.")


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
