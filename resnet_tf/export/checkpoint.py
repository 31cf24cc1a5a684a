"""Loading what a run or a `.keras` file holds for serving, and exporting a finished run.

The run folder itself is read through `resnet_tf.runs`, its one reader.
"""

import json
import os

from resnet_tf.data.preprocessing import default_preset
from resnet_tf.errors import ExportError
from resnet_tf.models.saving import load_keras_file
from resnet_tf.runs import (
    RunDirectory,
    default_class_names,
    read_class_names,
    settings_beside,
    temperature_beside,
)

# Inside an exported version folder (TF Serving ignores assets.extra): which run wrote it.
RUN_MARKER = os.path.join("assets.extra", "resnet_tf_run.json")


def load_checkpoint(source, *, image_size=None, preset=None, classes_file=None,
                    model_file="best.keras"):
    """A `.keras` file, or a run folder's `model_file`, with what serving it needs.

    Class names come from `classes_file`, else classes.txt beside the model, else
    "class_0", "class_1", ...; the image size and preset from the arguments, else the
    run's config.json, else the model's input size and `default_preset`.

    Returns:
        `(model, class_names, image_size, preset, run folder or None)`.
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
    config = settings_beside(path)
    image_size = image_size or config.get("image_size") or model.input_shape[1]
    if image_size is None:
        raise ExportError(f"'{path}' accepts any input size and has no config.json beside it; "
                          "pass --image-size.")
    preset = preset or config.get("preset") or default_preset(image_size)
    return model, class_names, int(image_size), preset, run_dir


def serving_tta(source):
    """The test-time augmentation a model's run evaluated with (its `--tta`): what its
    export serves unless told otherwise. "none" without a run, and for runs made before
    `--tta` existed."""
    return settings_beside(os.fspath(source)).get("tta") or "none"


def export_run(run_dir, export_dir=None, **export_args):
    """Exports a finished run's final model (last.keras) once; returns the version folder.

    The export serves the run's own test-time augmentation (`serving_tta`) unless
    `export_args` names another `tta`, so what the run reported is what it serves.

    Idempotent: a version in `export_dir` (default `<run>/export/<model name>`) that this
    run already wrote, recognised by its marker file, is returned instead of adding an
    identical one; unfinished `.tmp-export-*` folders are removed first.
    """
    from resnet_tf.export.savedmodel import export_serving_model, remove_partial_exports

    run = RunDirectory(run_dir)
    model, class_names, image_size, preset, _ = load_checkpoint(run.path, model_file="last.keras")
    export_dir = export_dir or run.file(os.path.join("export", model.name))
    remove_partial_exports(export_dir)
    export_args.setdefault("tta", serving_tta(run.path))
    export_args.setdefault("temperature", temperature_beside(run.path))
    marker = {"run": run.path, "epochs": int((run.read_config() or {}).get("config", {})
                                             .get("epochs", 0))}
    if export_args["tta"] != "none":  # a single-view export of the same run stays its own
        marker["tta"] = export_args["tta"]
    if export_args["temperature"]:
        marker["temperature"] = export_args["temperature"]
    for version in sorted(_versions_with_marker(export_dir), reverse=True):
        with open(os.path.join(export_dir, version, RUN_MARKER)) as f:
            try:
                if json.load(f) == marker:
                    return os.path.join(export_dir, version)
            except ValueError:
                continue
    return export_serving_model(model, export_dir, class_names=class_names,
                                image_size=image_size, preset=preset, marker=marker,
                                **export_args)


def _versions_with_marker(export_dir):
    if not os.path.isdir(export_dir):
        return []
    return [name for name in os.listdir(export_dir)
            if name.isdigit() and os.path.isfile(os.path.join(export_dir, name, RUN_MARKER))]
