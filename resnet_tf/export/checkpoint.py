"""Loading what a run or a `.keras` file holds for serving, and exporting a finished run.

The run folder itself is read through `resnet_tf.runs`, its one reader.
"""

import collections
import hashlib
import json
import os

from resnet_tf.errors import ExportError
from resnet_tf.export.inference import serving_transform
from resnet_tf.models.saving import load_keras_file
from resnet_tf.runs import (
    EXPORT_MARKER,
    RunDirectory,
    default_class_names,
    read_class_names,
    settings_beside,
    temperature_beside,
)

RUN_MARKER = EXPORT_MARKER


class Checkpoint(collections.namedtuple("Checkpoint", "model class_names image_size preset run_dir")):
    """What `load_checkpoint` returns: `(model, class_names, image_size, preset, run_dir)`,
    as earlier versions did, plus `transform`, the `EvalTransform` it is served with
    (`image_size` is its crop and `preset` its nearest preset)."""

    def __new__(cls, model, class_names, transform, run_dir):
        self = super().__new__(cls, model, class_names, transform.crop, transform.preset,
                               run_dir)
        self.transform = transform
        return self


def load_checkpoint(source, *, image_size=None, preset=None, classes_file=None,
                    model_file="best.keras"):
    """A `.keras` file, or a run folder's `model_file`, with what serving it needs.

    Class names come from `classes_file`, else classes.txt beside the model, else
    "class_0", "class_1", ...; the evaluation transform from `serving_transform`: the
    one the model carries, else the run's config.json, else the model's input size and
    `default_preset`, with `image_size` and `preset` (the flags) overriding.

    Returns:
        A `Checkpoint`: `(model, class_names, image_size, preset, run folder or None)`
        with `.transform`.
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise ExportError(f"'{source}' does not exist; expected a .keras file or a run folder.")
    run_dir = source if os.path.isdir(source) else None
    path = os.path.join(source, model_file) if run_dir else source
    if run_dir and not os.path.isfile(path):
        raise ExportError(f"Run folder '{source}' has no {model_file}; expected a run that "
                          "finished at least one epoch.")
    if not path.endswith(".keras"):
        raise ExportError(f"'{source}' is not a .keras file or a run folder.")
    model = load_keras_file(path, error=ExportError)
    folder = os.path.dirname(os.path.abspath(path))
    class_names = read_class_names(classes_file or os.path.join(folder, "classes.txt"))
    if class_names is None and classes_file:
        raise ExportError(f"Class names file '{classes_file}' does not exist.")
    if class_names is None:
        class_names = default_class_names(model.output_shape[-1])
    transform = serving_transform(model, image_size=image_size, preset=preset,
                                  run=settings_beside(path))
    return Checkpoint(model, class_names, transform, run_dir)


def serving_tta(source):
    """The test-time augmentation a model's run evaluated with (its `--tta`): what its
    export serves unless told otherwise. "none" without a run, and for runs made before
    `--tta` existed."""
    return settings_beside(os.fspath(source)).get("tta") or "none"


def export_run(run_dir, export_dir=None, **export_args):
    """Exports a finished run's final model (last.keras) once; returns the version folder.

    An export is identified by what it serves: its marker file holds the run folder and
    `weights_digest` of the model. A version in `export_dir` (default
    `<run>/export/<model name>`) with the same marker is returned instead of adding an
    identical one; any other model, such as the run trained again with `--overwrite`,
    gets the next version. Unfinished `.tmp-export-*` folders are removed first.

    The export serves the run's own test-time augmentation (`serving_tta`) and
    calibration temperature unless `export_args` names others, so what the run reported
    is what it serves; they are part of the marker, so another choice is another export.
    """
    from resnet_tf.export.savedmodel import export_serving_model, remove_partial_exports

    run = RunDirectory(run_dir)
    checkpoint = load_checkpoint(run.path, model_file="last.keras")
    model = checkpoint.model
    export_dir = export_dir or run.file(os.path.join("export", model.name))
    remove_partial_exports(export_dir)
    export_args.setdefault("tta", serving_tta(run.path))
    export_args.setdefault("temperature", temperature_beside(run.path))
    marker = {"run": run.path, "weights_sha256": weights_digest(model)}
    if export_args["tta"] != "none":  # a single-view export of the same run stays its own
        marker["tta"] = export_args["tta"]
    if export_args["temperature"]:
        marker["temperature"] = export_args["temperature"]
    for version in sorted(_versions_with_marker(export_dir), reverse=True):
        if _same_export(os.path.join(export_dir, version), marker, run):
            return os.path.join(export_dir, version)
    export_args.setdefault("transform", checkpoint.transform)
    return export_serving_model(model, export_dir, class_names=checkpoint.class_names,
                                marker=marker, **export_args)


def weights_digest(model):
    """SHA-256 (hex) of every weight of `model`, names and values: equal for equal models."""
    digest = hashlib.sha256()
    for weight, value in zip(model.weights, model.get_weights()):
        digest.update(f"{getattr(weight, 'path', weight.name)}:{value.dtype}:{value.shape}"
                      .encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _same_export(version_dir, marker, run):
    try:
        with open(os.path.join(version_dir, RUN_MARKER)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict) or found.get("run") != marker["run"]:
        return False
    if "weights_sha256" in found:  # the same weights, served the same way
        return found == marker
    if "tta" in marker or "temperature" in marker:
        return False  # earlier exports served one view, uncalibrated
    # A marker of an earlier version ({"run", "epochs"}) names no weights: it is this
    # model when it was written after last.keras was (last.keras changes only by training).
    try:
        return os.path.getmtime(version_dir) >= os.path.getmtime(run.file("last.keras"))
    except OSError:
        return False


def _versions_with_marker(export_dir):
    if not os.path.isdir(export_dir):
        return []
    return [name for name in os.listdir(export_dir)
            if name.isdigit() and os.path.isfile(os.path.join(export_dir, name, RUN_MARKER))]
