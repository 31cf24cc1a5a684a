"""Weight files for `build_resnet`: keras.applications' HDF5 files and this library's own.

keras.applications' files (Keras 2's HDF5 layout, also what `weights="imagenet"`
fetches) load by layer name, which is why variant "v1" keeps keras.applications'
names. Every file is checked against the whole model before one weight is assigned,
so a load that fails leaves the model as it was.
"""

import contextlib
import os
import re
import shutil
import tempfile
import warnings

import keras
import numpy as np

from resnet_tf.models import registry, torch_weights

# IMAGENET_*, imagenet_file, WeightsSource and file_format lived here before `registry`
# and `sources` owned them; kept importable from here.
from resnet_tf.models.registry import IMAGENET_HASHES, IMAGENET_URL, imagenet_file  # noqa: F401
from resnet_tf.models.sources import (  # noqa: F401
    EXPECTED,
    WeightsSource,
    file_format,
    legacy_root,
    resolve_weights,
)
from resnet_tf.models.spec import spec_of

_SAME_ARCHITECTURE = {
    "legacy": "a file saved from the same architecture "
    "(keras.applications files need variant='v1')",
    "keras3": "a file saved from a model built with the same build_resnet arguments",
}
_SAME_ARCHITECTURE["keras"] = _SAME_ARCHITECTURE["keras3"]
_WEIGHT_NAMES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
_CLASSIFIER = "predictions"


def load_weights(model, weights, *, depth=None, variant=None, include_top=True, classes=1000):
    """Load `weights` into a model built by `build_resnet`, all or nothing.

    Args:
        model: `keras.Model` built by `build_resnet` with the other arguments.
        weights: None (nothing to load), a `sources.WeightsSource`, "imagenet"
            (keras.applications' published ResNet50/101/152 file: variant "v1" only,
            from the Keras cache or downloaded), a registered name such as
            "torchvision:resnet50.IMAGENET1K_V2" or "torchvision:IMAGENET1K_V2"
            (`registry`; from the Keras cache or downloaded), or a path to a
            keras.applications / Keras 2 HDF5 file (loaded by layer name), a Keras 3
            `.weights.h5` file, a `.keras` file, a run folder (its best.keras), or a
            torchvision / timm checkpoint (`.pth`, `.pt`, `.safetensors`; see
            `torch_weights`). The format is read from the file's content, not its suffix.
        depth: int. The model's depth, for "imagenet" and error messages; read from
            the model's `ResNetSpec` where it has one.
        variant: str. The model's variant, likewise.
        include_top: bool. Whether the model has the "predictions" classifier; a
            file with one loads into a model without it.
        classes: int. The model's number of classes.

    Returns:
        `model`.

    Raises:
        ValueError: the file is missing, unreadable or does not match the model;
            nothing was loaded.
        WeightsDownloadError: "imagenet" is neither cached nor downloadable.
    """
    if weights is None:
        return model
    spec = spec_of(model)
    if spec is not None:
        variant, include_top, classes = spec.variant, spec.include_top, spec.classes
        known = spec
    else:  # a model saved before models carried their spec: its layers tell the rest
        known = dict(depth=depth, variant=variant, include_top=include_top, classes=classes)
        if model is not None and depth is not None:
            known.update(registry.architecture_of(model, depth))
    source = resolve_weights(weights, known)
    if source.format in ("torch", "safetensors"):  # torchvision and timm files
        return torch_weights.load_torch_weights(model, source.path, include_top=include_top,
                                                classes=classes)
    _Loader(model, source.weights, variant, classes).load(source.path, source.format)
    return model


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _short_name(name):
    """'conv1_bn/moving_mean:0' -> 'moving_mean': what the weight is, not where."""
    base = name.split("/")[-1].split(":")[0]
    if base in _WEIGHT_NAMES:
        return base
    return next((known for known in _WEIGHT_NAMES if base.endswith(known)), base)


def _list_attr(group, name):
    # Keras 2 splits attributes over 64 KB into name0, name1, ... (deep models).
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy(path):
    """{layer name: {weight name: array}} of a Keras 2 HDF5 file, layers with weights only."""
    import h5py

    layers = {}
    with h5py.File(path, "r") as f:
        root = legacy_root(f)
        for layer_name in _list_attr(root, "layer_names"):
            group = root[layer_name]
            names = _list_attr(group, "weight_names")
            if names:
                layers[layer_name] = {_short_name(n): np.asarray(group[n]) for n in names}
    return layers


@contextlib.contextmanager
def _with_suffix(path, suffix):
    """`path`, or a link to it ending in `suffix`: Keras picks its reader by suffix."""
    if path.endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "weights" + suffix)
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:
            shutil.copyfile(path, link)
        yield link


def _read_keras_archive(path):
    """{layer name: {weight name: array}} of the model saved in a `.keras` file."""
    with _with_suffix(path, ".keras") as readable:
        try:
            saved = keras.saving.load_model(readable, compile=False)
        except Exception as problem:  # JSON, unsafe or unknown objects: all the user's file
            first = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
            raise ValueError(f"weights file '{path}' cannot be loaded as a .keras model "
                             f"({type(problem).__name__}: {first}); expected a file saved by "
                             "model.save or train.py.") from None
    return {
        layer.name: {_short_name(w.name): keras.ops.convert_to_numpy(w) for w in layer.weights}
        for layer in saved.layers
        if layer.weights
    }


class _Loader:
    """Checks a file against one model and assigns it; all errors name the arguments."""

    def __init__(self, model, weights, variant, classes):
        self.model = model
        self.weights = weights
        self.variant = variant
        self.classes = classes
        self.file_format = "legacy"

    def load(self, path, kind):
        self.file_format = kind
        if kind == "keras3":
            self._load_keras_weights(path)
            return
        if kind == "legacy":
            stored = _read_legacy(path)
        elif kind == "keras":
            stored = _read_keras_archive(path)
        else:
            raise ValueError(
                f"weights file '{path}' is neither a keras.applications HDF5 file nor "
                f"a Keras .weights.h5 or .keras file. Received: weights='{self.weights}'; "
                f"{EXPECTED}."
            )
        for variable, value in self._plan(stored):
            variable.assign(value)

    def _plan(self, stored):
        """(variable, value) for every model weight, or the first mismatch raised."""
        layers = {layer.name: layer for layer in self.model.layers if layer.weights}
        problems, plan = [], []  # problems: (layer name, what is wrong)
        for name, layer in layers.items():
            if name not in stored:
                hint = " (a notop file: use include_top=False)" if name == _CLASSIFIER else ""
                problems.append((name, f"layer '{name}' is not in the file{hint}"))
                continue
            in_file = stored[name]
            in_model = {_short_name(w.name): w for w in layer.weights}
            problems += [
                (name, f"layer '{name}' has no '{w}' in the model")
                for w in in_file
                if w not in in_model
            ]
            for weight_name, variable in in_model.items():
                if weight_name not in in_file:
                    problems.append((name, f"layer '{name}' has no '{weight_name}' in the file"))
                elif tuple(in_file[weight_name].shape) != tuple(variable.shape):
                    problems.append((name, (
                        f"layer '{name}' {weight_name} has shape "
                        f"{tuple(in_file[weight_name].shape)} in the file and "
                        f"{tuple(variable.shape)} in the model"
                    )))
                else:
                    plan.append((variable, in_file[weight_name]))
        # A file with the classifier loads into a model without one; nothing else is extra.
        extra = [n for n in stored if n not in layers and n != _CLASSIFIER]
        if extra:
            problems.append((extra[0], (
                f"the file has {len(extra)} layer(s) with weights that the model lacks, "
                f"first '{extra[0]}'"
            )))
        file_classes = self._other_classes(layers, stored)
        if file_classes and all(name == _CLASSIFIER for name, _ in problems):
            raise self._classes_error(file_classes)  # say which argument to change
        if problems:
            more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
            raise self._mismatch(problems[0][1] + more)
        return plan

    @staticmethod
    def _other_classes(layers, stored):
        """The file's number of classes where only that differs from the model's, else None."""
        model_kernel = getattr(layers.get(_CLASSIFIER), "kernel", None)
        file_kernel = stored.get(_CLASSIFIER, {}).get("kernel")
        if model_kernel is None or file_kernel is None or file_kernel.ndim != 2:
            return None
        if file_kernel.shape[0] != model_kernel.shape[0]:
            return None
        return file_kernel.shape[1] if file_kernel.shape[1] != model_kernel.shape[1] else None

    def _load_keras_weights(self, path):
        # Keras 3 matches a .weights.h5 file by layer position, assigns as it goes and
        # reports shape mismatches only at the end: keep the old values to restore.
        variables = self.model.variables
        before = [keras.ops.convert_to_numpy(v) for v in variables]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with _with_suffix(path, ".weights.h5") as readable:
                    self.model.load_weights(readable)
            except Exception as error:
                for variable, value in zip(variables, before):
                    variable.assign(value)
                if isinstance(error, ValueError):
                    raise self._keras_error(error) from None
                raise
        for w in caught:  # nothing went wrong: pass Keras' warnings on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _keras_error(self, error):
        """Our mismatch error from Keras' "A total of N objects could not be loaded"."""
        text = str(error)
        layer = re.search(r"object <\w+ name=([^,>]+)", text)
        total = re.search(r"A total of (\d+) objects", text)
        shapes = re.search(
            r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text
        )
        counts = re.search(r"expected (\d+) variables, but received (\d+) variables", text)
        if not layer or not (shapes or counts):
            return self._mismatch(_first_line(error))
        name = layer.group(1)
        if shapes:
            model_shape, file_shape = shapes.groups()
            only_one = not total or int(total.group(1)) == 1
            if name == _CLASSIFIER and model_shape.count(",") == 1 and only_one:
                file_classes = int(file_shape.strip("()").split(",")[-1])
                return self._classes_error(file_classes)
            detail = (
                f"layer '{name}' has a weight of shape {file_shape} in the file and "
                f"{model_shape} in the model"
            )
        else:
            model_count, file_count = counts.groups()
            detail = (
                f"layer '{name}' has {file_count} weights in the file and {model_count} "
                "in the model"
            )
            if name == _CLASSIFIER and file_count == "0":
                detail += " (a file without classifier: use include_top=False)"
        if total and int(total.group(1)) > 1:
            detail += f" (and {int(total.group(1)) - 1} more layers do not match)"
        return self._mismatch(detail)

    def _describe(self):
        return f"{self.model.name} (variant={self.variant!r})"

    def _file_label(self):
        if isinstance(self.weights, str) and self.weights == "imagenet":
            return "'imagenet'"
        return f"'{os.path.basename(os.fspath(self.weights))}'"

    def _mismatch(self, detail):
        return ValueError(
            f"weights file {self._file_label()} does not match {self._describe()}: {detail}. "
            f"Received: weights='{self.weights}'; "
            f"expected {_SAME_ARCHITECTURE[self.file_format]}."
        )

    def _classes_error(self, file_classes):
        return ValueError(
            f"weights file {self._file_label()} has a {file_classes}-class classifier but "
            f"{self._describe()} was built with classes={self.classes}. "
            f"Received: classes={self.classes}, weights='{self.weights}'; expected "
            f"classes={file_classes}, or include_top=False to load only the backbone."
        )
