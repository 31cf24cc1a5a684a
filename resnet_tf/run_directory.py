"""The run directory: the files one training run writes, and the callbacks that write them.

    config.json   the resolved configuration (and whether the run is complete)
    classes.txt   class names, one per line, in label order
    history.csv   one row per finished epoch; curves.png plots it
    best.keras    the model with the best validation accuracy so far; last.keras the latest
    metrics.json  `resnet_tf.metrics.evaluate_model` on the validation data at the end
    logs/         TensorBoard; backup/ the BackupAndRestore state; export/ the SavedModel

Every file is replaced atomically, so a run killed at any moment leaves each file
either as it was or complete.
"""

import csv
import json
import math
import os
import shutil
import tempfile

import keras

from resnet_tf.errors import ConfigError
from resnet_tf.files import atomic_write, write_text

# Written by `train`; `--overwrite` removes exactly these and nothing else.
ARTIFACTS = ("config.json", "classes.txt", "history.csv", "curves.png", "metrics.json",
             "best.keras", "last.keras", "logs", "backup", "export")


class RunDirectory:
    """The files of one run under `path`."""

    def __init__(self, path):
        self.path = os.path.abspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    def read_config(self):
        try:
            with open(self.file("config.json")) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {self.file('config.json')} ({error}); "
                              "pass --overwrite to start the run again.") from None

    def check(self, resolved, old):
        """Refuses a directory that holds something else; True if the run is complete.

        `old` is `read_config()`; `resolved` the new configuration (needed if `old` is).
        """
        if old is None:
            if self._entries():
                raise ConfigError(f"--out {self.path} is not empty and holds no run "
                                  "(no config.json); choose another --out or pass --overwrite.")
            return False
        # Keys a newer version added are not differences: the old run did not have them.
        differing = [k for k in sorted(resolved)
                     if k in old["config"] and resolved[k] != old["config"][k]]
        if differing:
            changes = ", ".join(f"{k}: {old['config'].get(k)!r} -> {resolved.get(k)!r}"
                                for k in differing)
            raise ConfigError(f"--out {self.path} holds a run with a different configuration "
                              f"({changes}); pass --overwrite to replace it, or choose "
                              "another --out.")
        return old.get("status") == "complete"

    def check_writable(self):
        try:
            os.makedirs(self.path, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise ConfigError(f"cannot write to --out {self.path} "
                              f"({error.strerror or error}).") from None

    def clear(self):
        for name in ARTIFACTS:
            path = self.file(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)

    def _entries(self):
        try:
            return os.listdir(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_history(self):
        try:
            with open(self.file("history.csv"), newline="") as f:
                return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except FileNotFoundError:
            return []

    def write_history(self, rows):
        columns = list(rows[0])
        lines = [",".join(columns)]
        lines += [",".join(_format(row.get(c)) for c in columns) for row in rows]
        write_text(self.file("history.csv"), "\n".join(lines) + "\n")

    def write_curves(self, rows):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(10, 4))
        FigureCanvasAgg(figure)
        epochs = [int(r["epoch"]) for r in rows]
        for ax, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
            for prefix, label in (("", "train"), ("val_", "validation")):
                if prefix + metric in rows[0]:
                    ax.plot(epochs, [r[prefix + metric] for r in rows], marker=".", label=label)
            ax.set_xlabel("epoch")
            ax.set_title(metric)
            ax.grid(alpha=0.3)
            ax.legend()
        figure.tight_layout()
        atomic_write(self.file("curves.png"), lambda tmp: figure.savefig(tmp, format="png",
                                                                          dpi=100))


def _format(value):
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.7g}"


class RunRecorder(keras.callbacks.Callback):
    """Per epoch: history.csv, curves.png, last.keras and best.keras, each atomically.

    Comes before the backup callback, so an epoch is recorded before it counts as done:
    a kill in between reruns that epoch, and its row is replaced rather than repeated.
    """

    def __init__(self, run, monitor):
        super().__init__()
        self.run = run
        self.monitor = monitor
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
        atomic_write(self.run.file("last.keras"), self.model.save)
        if row.get(self.monitor, -math.inf) > best:
            atomic_write(self.run.file("best.keras"), self.model.save)


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
