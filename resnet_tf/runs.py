"""The run folder contract: the files one training run writes, and the one reader of them.

    config.json   the resolved configuration (and whether the run is complete)
    classes.txt   class names, one per line, in label order
    history.csv   one row per finished epoch; curves.png plots it
    best.keras    the model with the best validation accuracy so far; last.keras the latest
    metrics.json  `resnet_tf.metrics.evaluate_model` on the validation data at the end
    logs/         TensorBoard; backup/ the BackupAndRestore state; export/ the SavedModel

Every file is replaced atomically, so a run killed at any moment leaves each file
either as it was or complete. `--overwrite` deletes only what `is_run_file` proves the
run wrote, and only in a folder holding a run (config.json): never a user's file.
"""

import atexit
import contextlib
import csv
import json
import os
import re
import tempfile

# hold_out_seed is read here by the commands that read a run's hold-out.
from resnet_tf.compat import hold_out_seed, spelled_now  # noqa: F401
from resnet_tf.errors import ConfigError
from resnet_tf.files import atomic_write, fault_point, remove_debris, write_text

LOCK_FILE = ".lock"
_HELD_LOCKS = {}  # run path -> file descriptor holding its flock, for this process
_CREATED = {}  # run path -> the outermost folder this process created for it

# Written by `train`; `--overwrite` removes these files and, in logs/ and backup/, the
# files `is_run_file` recognises; export/ is kept: a new model gets a new version there.
CALIBRATION = "calibration.json"
RUN_FILES = ("config.json", "classes.txt", "history.csv", "curves.png", "metrics.json",
             "best.keras", "last.keras", CALIBRATION, "reliability.png")
ARTIFACTS = (*RUN_FILES, "logs", "backup", "export")
_RUN_SUBFOLDER_FILES = {
    # TensorBoard event files of EpochScalars, in logs/train and logs/validation.
    "logs": re.compile(r"(train|validation)/events\.out\.tfevents\.[^/]+"),
    # BackupAndRestore and ModelEMA state, also of a fine-tuning phase and other workers.
    "backup": re.compile(r"((finetune|worker-\d+)/){0,2}"
                         r"(latest\.weights\.h5|training_metadata\.json|ema-\d+\.npz)"),
}
# Inside an exported version folder (TF Serving ignores assets.extra): which run wrote it.
EXPORT_MARKER = os.path.join("assets.extra", "resnet_tf_run.json")


def is_run_file(relative):
    """True when `relative` (a path inside a run folder, "/"-separated) names a file that
    `train` writes: the proof `RunDirectory.clear` needs before deleting it."""
    top, _, rest = relative.partition("/")
    if not rest:
        return top in RUN_FILES
    pattern = _RUN_SUBFOLDER_FILES.get(top)
    return bool(pattern and pattern.fullmatch(rest))


def default_class_names(classes):
    """The names of `classes` unnamed classes: "class_0", "class_1", ..."""
    return [f"class_{i}" for i in range(classes)]


def read_class_names(path):
    """Class names, one per line, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


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
                                  "(no config.json); choose another --out (an empty or new "
                                  "folder, or a run folder).")
            return False
        # Keys a newer version added are not differences: the old run did not have them;
        # values an older version spelled otherwise are compared as they are spelled now.
        stored = {k: spelled_now(v, k) for k, v in old["config"].items()}
        differing = [k for k in sorted(resolved)
                     if k in stored and resolved[k] != stored[k]]
        if differing:
            changes = ", ".join(f"{k}: {stored.get(k)!r} -> {resolved.get(k)!r}"
                                for k in differing)
            raise ConfigError(f"--out {self.path} holds a run with a different configuration "
                              f"({changes}); pass --overwrite to replace it, or choose "
                              "another --out.")
        complete = old.get("status") == "complete"
        if complete:
            self.check_models()
        return complete

    def check_models(self):
        """Raises `ConfigError` when a run that finished an epoch has no best.keras: the
        best epoch's model cannot be made again, so the run is not complete, and resuming
        would end without it. (last.keras is rewritten by the next epoch, and runs of
        the first version did not write it.)"""
        if not os.path.isfile(self.file("best.keras")):
            raise ConfigError(
                f"--out {self.path} has finished epochs but no best.keras. Received: a run "
                "folder missing its best model; expected the file every finished epoch "
                "keeps. Pass --overwrite to train the run again.")

    def check_writable(self):
        try:
            if self.path not in _CREATED:
                _CREATED[self.path] = _first_missing(self.path)
            os.makedirs(self.path, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise ConfigError(f"cannot write to --out {self.path} "
                              f"({error.strerror or error}).") from None

    def clear(self):
        """`--overwrite`: deletes the files the run wrote (`is_run_file`) and nothing else.

        Raises `ConfigError`, deleting nothing, when the folder holds files but no run
        (no config.json): they are someone else's. Folders left empty are removed.
        """
        if not os.path.isfile(self.file("config.json")) and self._entries():
            raise ConfigError(
                f"--out {self.path} holds files but no run (no config.json), and --overwrite "
                "replaces only a run's own files. Received: a folder of other files; expected "
                "a run folder or an empty one. Choose another --out.")
        # config.json goes last: a kill on the way leaves a run folder, which the same
        # command clears again.
        self._remove_run_files(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file("config.json"))

    def remove_backup(self):
        """Deletes the backup state of a complete run (only the files the run wrote)."""
        self._remove_run_files(self.file("backup"))

    def _remove_run_files(self, folder):
        """Deletes the files under `folder` that `is_run_file` recognises (config.json
        aside), then the folders of logs/ and backup/ that this leaves empty."""
        for current, _, names in os.walk(folder, topdown=False):
            relative = os.path.relpath(current, self.path).replace(os.sep, "/")
            for name in names:  # files and links; os.walk lists folders apart
                if name != "config.json" and is_run_file(
                        name if relative == "." else f"{relative}/{name}"):
                    os.remove(os.path.join(current, name))
                    fault_point("clearing the run")
            if current != self.path and relative.split("/")[0] in _RUN_SUBFOLDER_FILES:
                with contextlib.suppress(OSError):
                    os.rmdir(current)  # only when empty: a user's file keeps its folder

    def _entries(self):
        try:
            return [n for n in os.listdir(self.path) if n != LOCK_FILE]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def lock(self):
        """Makes this process the only one writing the run; raises `ConfigError` otherwise.

        An exclusive `flock` on `<run>/.lock`, which the kernel drops when the process
        ends however it ends (kill -9 included), so a dead run never blocks the next.
        Held until `unlock` or the process's exit; asking again in the same process is a
        no-op.
        """
        if self.path in _HELD_LOCKS:
            return
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; run without one
            return
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"--out {self.path} is in use by process {holder}, which is writing this run; "
                "wait for it to finish (or stop it) and rerun, or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if not _HELD_LOCKS:
            atexit.register(release_unused_folders)
        _HELD_LOCKS[self.path] = fd

    def unlock(self):
        """Ends this process's hold of the run (`lock`), so another process may write it;
        a folder that holds no run goes first (`release_if_unused`)."""
        self.release_if_unused()
        fd = _HELD_LOCKS.pop(self.path, None)
        if fd is not None:
            os.close(fd)

    def release_if_unused(self):
        """Undoes `check_writable` and `lock` of a command that wrote no run here (it was
        refused or failed first): deletes the `.lock` and the folders this process created,
        if empty, so no trace is left in a folder that is not a run."""
        if os.path.exists(self.file("config.json")):
            return
        fd = _HELD_LOCKS.pop(self.path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.remove(self.file(LOCK_FILE))
            os.close(fd)
        created = _CREATED.pop(self.path, None)
        folder = self.path
        while created and (folder == created or folder.startswith(created + os.sep)):
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)

    def remove_debris(self):
        """Deletes what a killed run leaves behind: half-written temporaries of its files."""
        for folder in (self.path, self.file("backup"), self.file("backup/finetune")):
            remove_debris(folder)

    def backup_state(self):
        """`("ok", finished epochs)`, `("missing", 0)` or `(reason it cannot be read, 0)`
        for the BackupAndRestore state in backup/ (or backup/finetune/, the state of a
        fine-tuning run's second phase, when that exists)."""
        import json as _json

        folder = "backup/finetune" if os.path.isdir(self.file("backup/finetune")) else "backup"
        meta = self.file(f"{folder}/training_metadata.json")
        weights = self.file(f"{folder}/latest.weights.h5")
        if not os.path.exists(meta) and not os.path.exists(weights):
            return "missing", 0
        try:
            with open(meta) as f:
                epoch = _json.load(f)["epoch"]
            if not isinstance(epoch, int):
                raise ValueError(f"epoch={epoch!r}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"{folder}/training_metadata.json is damaged ({type(error).__name__}: {error})", 0
        try:
            import h5py

            with h5py.File(weights, "r"):
                pass
        except Exception as error:  # noqa: BLE001 - any failure means the same to the user
            return f"{folder}/latest.weights.h5 is damaged ({type(error).__name__})", 0
        return "ok", epoch + 1

    def read_history(self):
        try:
            with open(self.file("history.csv"), newline="") as f:
                return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise ConfigError(f"cannot read {self.file('history.csv')} ({type(error).__name__}: "
                              f"{error}); expected the CSV train.py writes. Pass --overwrite to "
                              "start the run again.") from None

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


def temperature_beside(model_path):
    """The calibration temperature the run of a model file (or a run folder) fitted, or None
    (no run, a run trained without calibration, or one made before it existed)."""
    folder = model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
    try:
        with open(os.path.join(folder, CALIBRATION)) as f:
            temperature = json.load(f)["temperature"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(temperature) if isinstance(temperature, (int, float)) and temperature > 0 else None


def non_finite_weights(model):
    """The paths of `model`'s weights holding NaN or infinity (empty when all are finite).

    A run records an epoch, and an exporter writes a model, only when this is empty.
    """
    import numpy as np

    return [getattr(w, "path", w.name) for w, value in zip(model.weights, model.get_weights())
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all()]


def describe_non_finite(names, total):
    """"3 of 97 weights are not finite (NaN or infinity), e.g. 'conv1/kernel'"."""
    return (f"{len(names)} of {total} weights are not finite (NaN or infinity), e.g. "
            f"{names[0]!r}")


def release_unused_folders():
    """`RunDirectory.release_if_unused` for every run folder this process locked or made
    (registered to run at exit)."""
    for path in list(_HELD_LOCKS) + list(_CREATED):
        RunDirectory(path).release_if_unused()


def _first_missing(path):
    """The outermost folder of `path` that does not exist yet, or None."""
    missing = None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
        if path == missing:
            break
    return missing


def settings_beside(model_path):
    """The resolved training config of the run a model file belongs to, or {}.

    `model_path` is a `.keras` file or a run folder; the config is the "config" of the
    config.json in the same folder.
    """
    folder = model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
    config = RunDirectory(folder).read_config()
    return (config or {}).get("config", {})


def _format(value):
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.7g}"
