"""What a `weights` argument is, answered once: `resolve_weights(weights, spec)`.

A weights argument may be "imagenet", a registered name ("timm:resnet50.a1_in1k"), a
keras.applications / Keras 2 HDF5 file, a Keras `.weights.h5` or `.keras` file, a
torchvision / timm checkpoint (`.pth`, `.pt`, `.safetensors`) or a run folder (its
best.keras). The `WeightsSource` it resolves to carries the local file, its format,
the architecture it fits and the input scale it was trained on; the loader, the
builder and fine-tuning read those instead of asking the argument again.
"""

import dataclasses
import json
import os
import zipfile

from resnet_tf.models import registry, torch_weights
from resnet_tf.models.spec import ARCHITECTURE, SPECS, ResNetSpec, default_variant
from resnet_tf.models.transform import EvalTransform
from resnet_tf.runs import settings_beside

EXPECTED = "expected None, 'imagenet' or a path to a .h5/.weights.h5/.keras file"
# What a registered name is matched on: the arguments an entry may set.
_REGISTRY_BUILD = ("depth", "variant", "groups", "width_per_group", "width_multiplier",
                   "se_ratio")


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """A weights argument, resolved.

    Attributes:
        weights: the argument as the caller gave it, for messages.
        kind: str. "imagenet", "registry" (a registered name), "keras" (a `.keras`
            file or a run folder) or "file" (any other weights file).
        path: str or None. The local file; None for a registered or "imagenet" file
            resolved with `download=False`.
        format: str. "legacy" (Keras 2 HDF5), "keras3" (`.weights.h5`), "keras"
            (`.keras` archive), "torch" (`torch.save`) or "safetensors".
        architecture: dict or None. The `build_resnet` arguments the weights fit
            (`ARCHITECTURE` keys, "classes" where a checkpoint tells), None if unknown.
        preprocessing: None (resnet_tf's standard input scale), "caffe", a registry
            `Preprocessing` or a dict with `mode`, `mean`, `std`: what the weights were
            trained on, for `normalization.preprocessing_layer`.
        entry: `registry.PretrainedWeights` or None. The registered entry.
        image_size: int or None. The image size the weights were trained at.
        transform: `EvalTransform` or None. How the weights' source evaluates them
            (resize, crop, interpolation, normalisation): a registered entry's, a
            `.keras` file's own, or its run's preset; None where unknown.
    """

    weights: object
    kind: str
    path: str | None
    format: str | None
    architecture: dict | None
    preprocessing: object
    entry: registry.PretrainedWeights | None = None
    image_size: int | None = None
    transform: EvalTransform | None = None


def weights_kind(weights):
    """"imagenet", "registry", "keras" or "file": what kind of argument `weights` is.

    Raises:
        ValueError: `weights` is neither of them, or names a file that does not exist.
    """
    if isinstance(weights, str) and weights == "imagenet":
        return "imagenet"
    if registry.is_name(weights) and not os.path.exists(weights):
        return "registry"
    try:
        path = os.fspath(weights)
    except TypeError:
        raise ValueError(f"Unknown weights. Received: weights={weights!r}; {EXPECTED}.") from None
    if os.path.isdir(path):
        return "keras"  # a run folder
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found. Received: weights='{path}'; {EXPECTED}.")
    return "keras" if file_format(path) == "keras" else "file"


def resolve_weights(weights, spec=None, *, download=True):
    """The `WeightsSource` of a `build_resnet` weights argument, or None for None.

    Args:
        weights: see `build_resnet`. A `WeightsSource` is returned as it is, unless
            its file is still to be downloaded.
        spec: `ResNetSpec`, a dict of the `build_resnet` arguments known so far
            (`{"depth": 50}`), or None. It picks the file of "imagenet" and of a
            registered name without architecture ("torchvision:IMAGENET1K_V2"), and a
            registered entry must fit it.
        download: bool. Whether to fetch a registered or "imagenet" file into the
            Keras cache now; without it `path` stays None for those.

    Raises:
        ValueError: the argument names nothing, a file of no known format, or weights
            that do not fit `spec`.
        WeightsDownloadError: `download` and the file can be neither found nor fetched.
    """
    if isinstance(weights, WeightsSource):
        if weights.path is not None or not download:
            return weights
        weights = weights.weights  # resolved without downloading: fetch it now
    if weights is None:
        return None
    known = _known(spec)
    kind = weights_kind(weights)
    resolve = {"imagenet": _imagenet, "registry": _registered, "keras": _keras_file,
               "file": _file}[kind]
    return resolve(weights, known, download)


def _known(spec):
    if spec is None:
        return {}
    if isinstance(spec, ResNetSpec):
        return dataclasses.asdict(spec)
    return {k: v for k, v in dict(spec).items() if v is not None}


def _imagenet(weights, known, download):
    depth = known.get("depth")
    variant = known.get("variant") or (default_variant(depth) if depth in SPECS
                                       else None)
    classes = known.get("classes", 1000)
    if known.get("include_top", True) and classes != 1000:
        raise ValueError(
            "weights='imagenet' with include_top=True loads a 1000-class classifier. "
            f"Received: classes={classes}; expected classes=1000, or include_top=False "
            "to load only the backbone."
        )
    registry.check_imagenet(depth, variant)
    path = (registry.imagenet_file(depth, variant, known.get("include_top", True))
            if download else None)
    entry = registry.WEIGHTS[f"keras:resnet{depth}.imagenet"]
    return WeightsSource(weights, "imagenet", path, "legacy", dict(entry.build), "caffe", entry,
                         entry.preprocessing.crop, entry.preprocessing)


def _registered(weights, known, download):
    entry = registry.get_weights(weights, **{k: known[k] for k in _REGISTRY_BUILD if k in known})
    path = registry.download_weights(entry.name)[0] if download else None
    return WeightsSource(weights, "registry", path, entry.format,
                         dict(entry.build), entry.preprocessing, entry,
                         entry.preprocessing.crop, entry.preprocessing)


def _keras_file(weights, known, download):
    path = os.fspath(weights)
    if os.path.isdir(path):
        path = os.path.join(path, "best.keras")
        if not os.path.isfile(path):
            raise ValueError(f"The run folder has no best.keras. Received: weights='{weights}'; "
                             "expected a folder written by train.py.")
    config = _archive_config(path)
    run = settings_beside(path)
    return WeightsSource(weights, "keras", path, "keras", saved_architecture(path, config),
                         _archive_preprocessing(config), image_size=run.get("image_size"),
                         transform=_archived_transform(config) or recorded_transform(run))


def _file(weights, known, download):
    path = os.fspath(weights)
    kind = file_format(path)
    architecture, preprocessing = None, None
    if kind in ("torch", "safetensors"):
        architecture = torch_weights.infer_architecture(torch_weights.read_state_dict(path))
    elif kind == "legacy":
        preprocessing = _legacy_file_preprocessing(path)
    elif kind is None:
        raise ValueError(
            f"weights file '{path}' is neither a keras.applications HDF5 file nor "
            f"a Keras .weights.h5 or .keras file. Received: weights='{weights}'; {EXPECTED}."
        )
    published = registry.entry_of_file(path)  # a registered file downloaded by hand
    if published is None:
        return WeightsSource(weights, "file", path, kind, architecture, preprocessing)
    return WeightsSource(weights, "file", path, kind, architecture, published.preprocessing,
                         image_size=published.preprocessing.crop,
                         transform=published.preprocessing)


def saved_architecture(path, config=None):
    """The architecture of the model in a `.keras` file: its stored `ResNetSpec`, or for
    files saved before models carried one, what the run's config.json beside it says.

    Returns a dict of `ARCHITECTURE` arguments, or None when neither tells.
    """
    config = _archive_config(path) if config is None else config
    spec = (config.get("config") or {}).get("spec") if isinstance(config, dict) else None
    if spec is not None:
        return ResNetSpec.from_config(spec).architecture()
    run = settings_beside(path)
    found = {k: run[k] for k in ARCHITECTURE if run.get(k) is not None}
    return found or None


def recorded_transform(run):
    """The `EvalTransform` a run recorded (`run`: its config, `settings_beside`), or None.

    Runs record "eval_transform"; runs of earlier versions (None there, or no key) their
    image size and preset, whose transform it then is.

    Raises:
        ValueError: a recorded "eval_transform" that is not a transform's config.
    """
    run = run or {}
    if run.get("eval_transform") is not None:
        try:
            return EvalTransform.from_config(run["eval_transform"])
        except (TypeError, ValueError) as error:  # a hand-edited config.json: say so
            raise ValueError(
                f"The run's config.json records a damaged eval_transform: {error} Restore "
                "it, or delete the key to use the run's preset at its image size.") from None
    if run.get("image_size") and run.get("preset"):
        return EvalTransform.for_preset(run["preset"], run["image_size"])
    return None


def _archived_transform(config):
    """The transform in a `.keras` file's model config (`_archive_config`): the model's
    own, else that of a model nested in it (a ResNet inside the user's model); or None."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        return None
    if inner.get("transform") is not None:
        try:
            return EvalTransform.from_config(inner["transform"])
        except (TypeError, ValueError):
            return None
    return next(filter(None, map(_archived_transform, inner.get("layers") or [])), None)


def resolve_preprocessing(preprocessing, source, spec=None):
    """`build_resnet`'s `preprocessing` argument as `(normalisation, transform)`.

    The normalisation is what `normalization.preprocessing_layer` takes; the transform
    the `EvalTransform` the model will carry (None where unknown).

    Args:
        preprocessing: "auto" (the weights' own: `source.preprocessing` and
            `source.transform`), None, "imagenet" or "caffe" (a scale, no transform), a
            dict with `mode`, `mean`, `std`, a registered weights name (that entry's
            normalisation and transform) or an `EvalTransform`.
        source: the `WeightsSource` of the weights, or None.
        spec: what picks a registered name without architecture ("torchvision:IMAGENET1K_V2").
    """
    if isinstance(preprocessing, str) and preprocessing == "auto":
        if source is None:
            return None, None
        return source.preprocessing, source.transform
    if isinstance(preprocessing, str) and registry.is_name(preprocessing):
        # A full name is that entry's transform, for any architecture; a short one
        # ("torchvision:IMAGENET1K_V2") is picked by the architecture being built.
        known = {} if preprocessing in registry.WEIGHTS else _known(spec)
        entry = registry.get_weights(preprocessing, **{k: known[k] for k in _REGISTRY_BUILD
                                                       if k in known})
        preprocessing = entry.preprocessing
    if isinstance(preprocessing, EvalTransform):
        return preprocessing.normalization, preprocessing
    return preprocessing, None


def _archive_config(path):
    """The model config of a `.keras` file (its config.json), or {} if unreadable: the
    loader reports a broken file with the context of the load."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def _archive_preprocessing(config):
    """The `WeightsNormalization` a saved model converts its input with, as a dict."""
    layers = (config.get("config") or {}).get("layers") or []
    for layer in layers:
        if layer.get("class_name") == "WeightsNormalization":
            found = layer.get("config", {})
            return {"mode": found.get("mode"), "mean": found.get("mean"), "std": found.get("std")}
    return None


def file_format(path):
    """The weights format of a file, read from its content, not its suffix.

    "torch" (`torch.save`), "safetensors", "keras" (`.keras` archive), "legacy" (Keras 2
    HDF5, keras.applications' format), "keras3" (`.weights.h5`) or None.
    """
    checkpoint = torch_weights.checkpoint_format(path)
    if checkpoint:
        return checkpoint
    if zipfile.is_zipfile(path):
        return "keras"
    import h5py  # optional until an HDF5 file is read

    if not h5py.is_hdf5(path):
        return None
    with h5py.File(path, "r") as f:
        if legacy_root(f) is not None:
            return "legacy"
        if "layers" in f or "vars" in f:
            return "keras3"
    return None


def legacy_root(f):
    """The group of an open Keras 2 HDF5 file holding `layer_names`: the root, or
    `model_weights` in a whole model; None for other files."""
    for group in (f, f.get("model_weights")):
        if group is not None and ("layer_names" in group.attrs
                                  or "layer_names0" in group.attrs):
            return group
    return None


def _legacy_file_preprocessing(path):
    """Keras 2 weights-only HDF5 files are how keras.applications publishes its ResNets:
    "caffe". A whole model saved as HDF5 says in its config whether it converts."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except OSError:
        return None  # the loader reports the unreadable file
    if config is None:
        return "caffe"
    config = config.decode() if isinstance(config, bytes) else str(config)
    return "caffe" if "WeightsNormalization" in config and '"caffe"' in config else None
