"""`resnet-evaluate` and `resnet-predict`: score a model on a dataset, classify image files.

Both take a `.keras` file, a training run folder (its best.keras) or an exported
SavedModel (a version folder, or a base folder: its latest version).

- A Keras model is evaluated on the evaluation pipeline (`decode_image` +
  `preprocess_for_eval`) and predicts through the same serving function the
  export writes (`ServingModule`), built in memory.
- A SavedModel is fed the encoded image bytes through its `serving_default`
  signature, exactly as TF Serving would; it needs no Keras model at all.

Metrics come from `metrics.evaluate_model`, the function the trainer uses.
"""

import dataclasses
import json
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from resnet_tf.data import (
    MEAN,
    STD,
    decode_image,
    list_image_folder,
    load_data,
    preprocess_for_eval,
)
from resnet_tf.data.records import is_records_folder, record_splits
from resnet_tf.data.tfds import tfds_eval_split
from resnet_tf.errors import EvaluationError, WeightsDownloadError
from resnet_tf.export.checkpoint import load_checkpoint
from resnet_tf.export.inference import inference_model, serving_transform
from resnet_tf.export.savedmodel import (
    BYTES_INPUT,
    SERVING_SIGNATURE,
    ServingModule,
    latest_version_dir,
)
from resnet_tf.metrics import evaluate_model
from resnet_tf.models import registry
from resnet_tf.models.registry import imagenet_classes
from resnet_tf.models.resnet import build_resnet
from resnet_tf.models.sources import resolve_weights
from resnet_tf.models.transform import EvalTransform, transform_of
from resnet_tf.runs import (
    default_class_names,
    hold_out_seed,
    read_class_names,
    settings_beside,
    temperature_beside,
)


@dataclasses.dataclass
class Classifier:
    """A loaded model of either kind.

    Attributes:
        serve: callable taking a string tensor `[N]` of encoded images and returning the
            serving outputs (`probabilities`, `classes`, `scores`, `class_names`).
        class_names: list of str.
        transform: `EvalTransform`. How images are resized and cropped for the model.
        keras_model: the `keras.Model`, or None for a SavedModel.
        path: str. What was loaded.
        saved_model: the object `tf.saved_model.load` returned (its signatures only
            work while it is alive), or None.
        class_ids: list of str or None. What a data folder names the classes when that
            is not `class_names`: the WordNet ids of the ImageNet classes.
    """

    serve: object
    class_names: list
    transform: EvalTransform
    keras_model: object
    path: str
    saved_model: object = None
    class_ids: list | None = None  # folder names of the classes where they differ (WordNet ids)

    @property
    def image_size(self):
        return self.transform.crop

    @property
    def preset(self):
        return self.transform.preset


def load_classifier(path, *, image_size=None, preset=None, classes_file=None, top_k=5):
    """Load a `.keras` file, a run folder, a SavedModel (version or base folder), a
    registered weights name or a weights file (torchvision / timm / keras.applications).

    A registered name ("torchvision:resnet50.IMAGENET1K_V2") is built with its weights
    (downloaded once into the Keras cache) and evaluated with its entry's transform and
    the 1000 ImageNet classes (`registry.imagenet_classes`), so `--data-dir` can be an
    ImageNet-layout folder (one folder per WordNet id, all 1000 or some of them).
    """
    path = os.fspath(path)
    if not os.path.exists(path) and registry.is_name(path) or (
            os.path.isfile(path) and not path.endswith(".keras")):
        return _load_weights(path, image_size, preset, classes_file, top_k)
    if not os.path.exists(path):
        raise EvaluationError(f"Model '{path}' does not exist; expected a .keras file, a run "
                              "folder, a SavedModel folder, a weights file or a registered "
                              "name (python -m resnet_tf list-weights).")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "best.keras")):
        return _load_saved_model(latest_version_dir(path))
    checkpoint = load_checkpoint(path, image_size=image_size, preset=preset,
                                 classes_file=classes_file)
    return _keras_classifier(checkpoint.model, checkpoint.class_names, checkpoint.transform,
                             path, top_k, temperature_beside(path))


def _keras_classifier(model, class_names, transform, path, top_k, temperature=None):
    module = ServingModule(
        inference_model(model), class_names=class_names, transform=transform,
        top_k=min(top_k, len(class_names)),  # single view: --tta decides
        temperature=temperature)  # the run's calibration, as its export has
    return Classifier(module.serve_bytes, class_names, transform, model, path)


def _load_weights(weights, image_size, preset, classes_file, top_k):
    """A registered name or a weights file as a Keras `Classifier` of its architecture."""
    try:
        source = resolve_weights(weights, download=False)
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    if not source.architecture or "depth" not in source.architecture:
        raise EvaluationError(
            f"The architecture of '{weights}' cannot be read from the file. Received: a "
            f"{source.format} weights file; expected a registered name, a torchvision or timm "
            "checkpoint, or a .keras file (which knows its architecture).")
    architecture = dict(source.architecture)
    classes = architecture.pop("classes", 1000)
    try:
        model = build_resnet(**architecture, classes=classes, weights=resolve_weights(source),
                             input_shape=(None, None, 3))
    except WeightsDownloadError as error:  # offline: what to download, and where to put it
        raise EvaluationError(str(error)) from None
    ids, names = imagenet_classes()
    if classes_file:
        names = read_class_names(classes_file)
        if names is None:
            raise EvaluationError(f"Class names file '{classes_file}' does not exist.")
    elif classes != 1000:
        ids, names = None, default_class_names(classes)
    transform = serving_transform(model, image_size=image_size or (
        None if transform_of(model) else 224), preset=preset)
    classifier = _keras_classifier(model, names, transform, str(weights), top_k)
    return dataclasses.replace(classifier, class_ids=ids)


def _load_saved_model(version_dir):
    """A SavedModel version folder as a `Classifier`; any failure is one `EvaluationError`."""
    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as error:  # a damaged file fails in protobuf, TF or Python code alike
        raise EvaluationError(
            f"SavedModel '{version_dir}' cannot be loaded ({_first_line(error)}); expected a "
            "complete version folder written by resnet-export.") from error
    if SERVING_SIGNATURE not in loaded.signatures:
        raise EvaluationError(f"SavedModel '{version_dir}' has no "
                              f"'{SERVING_SIGNATURE}' signature; expected one written by "
                              "resnet-export.")
    try:
        class_names = [c.decode() for c in loaded.class_names.numpy()]
        transform = (EvalTransform.from_config(json.loads(loaded.transform.numpy().decode()))
                     if hasattr(loaded, "transform") else  # exports of earlier versions
                     EvalTransform.for_preset(loaded.preset.numpy().decode(),
                                              int(loaded.image_size.numpy())))
    except AttributeError:
        raise EvaluationError(f"SavedModel '{version_dir}' was not written by resnet-export "
                              "(it has no class_names, image_size or preset).") from None
    serve = loaded.signatures[SERVING_SIGNATURE]
    return Classifier(
        serve=lambda image_bytes: serve(**{BYTES_INPUT: image_bytes}),
        class_names=class_names,
        transform=transform,
        keras_model=None,
        path=version_dir,
        saved_model=loaded,
    )


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------------------------------
# evaluate


class ConfidentErrors:
    """Keeps the `count` wrong predictions given the highest probability, as
    `evaluate(..., errors=...)` goes through the data."""

    def __init__(self, count=16):
        self.count = count
        self.kept = []  # (wrong-class score, image, true, predicted, scores)

    def __call__(self, images, labels, scores):
        predicted = scores.argmax(axis=1)
        for i in np.flatnonzero(predicted != labels):
            self.kept.append((float(scores[i, predicted[i]]), np.asarray(images[i]),
                              int(labels[i]), int(predicted[i]), scores[i]))
        self.kept = sorted(self.kept, key=lambda k: -k[0])[:self.count]

    def arrays(self, transform):
        """`(uint8 images as the model saw them, true, predicted, scores)`."""
        if not self.kept:
            size = transform.crop
            return np.zeros((0, size, size, 3), np.uint8), [], [], np.zeros((0, 1))
        images = []
        for _, image, *_ in self.kept:
            if image.dtype == object or image.ndim == 0:  # encoded bytes (a SavedModel's input)
                image = preprocess_for_eval(decode_image(image.item() if image.ndim == 0
                                                         else image), transform=transform)
            pixels = (np.asarray(image) * np.asarray(STD) + np.asarray(MEAN)) * 255.0
            images.append(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
        return (np.stack(images), [k[2] for k in self.kept], [k[3] for k in self.kept],
                np.stack([k[4] for k in self.kept]))


def evaluate(classifier, *, data_dir=None, dataset=None, split="test", tfds_dir=None,
             batch_size=64, tta="none", errors=None, hold_out=False):
    """`metrics.evaluate_model` on an image folder, a TFDS split or a run's hold-out.

    `hold_out=True` evaluates on the validation images of the run the model belongs to
    (a run folder, or a .keras file in one): the data, `--val-split`/`--val-dir` and split
    seed its config.json names, through the trainer's pipeline, so a run's own final
    model reproduces its metrics.json.

    `tta="flip"` averages each image's scores with its mirror image's, `"flip-shift"`
    also with both moved one pixel along each diagonal (Keras models only: a SavedModel
    takes encoded bytes). `errors`: an optional `ConfidentErrors` to fill.

    Returns:
        The metrics dict, plus `model`, `data` and `skipped_files` (images that could
        not be decoded and were left out).
    """
    if tta != "none" and classifier.keras_model is None:
        raise EvaluationError(f"Test-time augmentation needs the Keras model. Received: "
                              f"tta={tta!r} with the SavedModel '{classifier.path}'; expected a "
                              ".keras file or a run folder.")
    if hold_out:
        return _evaluate_hold_out(classifier, tfds_dir, batch_size, tta, errors)
    if is_records_folder(data_dir):  # `python -m resnet_tf prepare` shards: every record
        records, _, class_names = record_splits(data_dir, None, 0)
        source, total = records.source, records.count
        described = f"shards '{data_dir}'"
    elif data_dir is not None:
        files, labels, class_names = list_image_folder(data_dir)
        source = tf.data.Dataset.from_tensor_slices((files, labels)).map(
            lambda f, label: (tf.io.read_file(f), label))
        total, described = len(files), f"folder '{data_dir}'"
    else:
        source, class_names = tfds_eval_split(dataset, split, tfds_dir)
        total = None
        described = f"TFDS '{dataset}' split '{split}'"
    classes = len(classifier.class_names)
    known = classifier.class_ids or classifier.class_names
    if len(class_names) < classes and set(class_names) <= set(known):
        # Some of the model's classes (a subset of ImageNet's WordNet ids, say): each
        # label becomes the model's index of its class.
        pass
    elif len(class_names) != classes:
        raise EvaluationError(
            f"The model has {classes} classes but {described} has {len(class_names)}; "
            "expected the same classes, or some of the model's (named as it names them: "
            f"{', '.join(known[:3])}, ...).")
    if class_names != known and set(class_names) <= set(known):
        # The model's classes in another order (a folder lists them sorted), or some of
        # them: score against the model's indices.
        to_model = tf.constant([known.index(n) for n in class_names], tf.int32)
        source = source.map(lambda encoded, label: (encoded, tf.gather(to_model, label)))
        class_names = classifier.class_names
    elif class_names == known:
        class_names = classifier.class_names
    elif class_names != classifier.class_names and classifier.class_names != default_class_names(classes):
        warnings.warn(f"The model's classes ({', '.join(classifier.class_names[:5])}, ...) are not "
                      f"{described}'s ({', '.join(class_names[:5])}, ...); comparing label indices.",
                      stacklevel=2)

    transform = classifier.transform
    if classifier.keras_model is not None:
        def prepare(encoded, label):
            return preprocess_for_eval(decode_image(encoded), transform=transform), label
        model = classifier.keras_model
    else:
        def prepare(encoded, label):
            # Decoding here only drops unreadable files; the SavedModel decodes again.
            tf.debugging.assert_rank(decode_image(encoded), 3)
            return encoded, label

        def model(image_bytes, training=False):
            return classifier.serve(image_bytes)["probabilities"]
    batches = (source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    result = evaluate_model(model, batches, class_names, tta=tta, on_batch=errors,
                            temperature=_temperature(classifier))
    result.update(model=classifier.path, data=described, transform=transform.get_config(),
                  skipped_files=0 if total is None else total - result["examples"])
    return result


def _evaluate_hold_out(classifier, tfds_dir, batch_size, tta, errors):
    if classifier.keras_model is None:
        raise EvaluationError(f"--hold-out needs the Keras model of a training run. Received: "
                              f"the SavedModel '{classifier.path}'; expected a run folder or a "
                              ".keras file in one.")
    stored = settings_beside(classifier.path)
    if "val_split" not in stored:
        raise EvaluationError(
            f"--hold-out needs the training run's config.json, which names its data and "
            f"hold-out. Received: '{classifier.path}' with none beside it; expected a "
            "train.py --out folder or a .keras file in one.")
    data = load_data(stored["dataset"], data_dir=stored["data_dir"], val_dir=stored["val_dir"],
                     val_split=stored["val_split"], image_size=classifier.image_size,
                     preset=stored["preset"], eval_transform=classifier.transform,
                     split_seed=hold_out_seed(stored),
                     batch_size=1, augment=False, tfds_dir=tfds_dir)
    source = stored["val_dir"] or stored["data_dir"] or f"dataset '{stored['dataset']}'"
    if data.val is None:
        raise EvaluationError(f"The run of '{classifier.path}' held out no validation images "
                              f"(--val-split 0 on {source}); expected a run with a hold-out.")
    batches = data.val.unbatch().batch(batch_size)
    result = evaluate_model(classifier.keras_model, batches, data.class_names, tta=tta,
                            temperature=_temperature(classifier),
                            on_batch=errors)
    result.update(model=classifier.path, skipped_files=0,
                  data=f"the hold-out of {source} (split seed {hold_out_seed(stored)})")
    return result


def _temperature(classifier):
    """The run's calibration for a Keras model (a SavedModel applies its own inside)."""
    return None if classifier.keras_model is None else temperature_beside(classifier.path)


def format_metrics(metrics, max_matrix_classes=20):
    """The metrics as a plain-text report: accuracy, a per-class table, the confusion matrix."""
    names = metrics["class_names"]
    width = max(9, *(len(n) for n in names))
    lines = [
        f"Model: {metrics['model']}",
        *([f"Preprocessing: {EvalTransform.from_config(metrics['transform']).describe()}"]
          if metrics.get("transform") else []),
        f"Data:  {metrics['data']} ({metrics['examples']} images"
        + (f", {metrics['skipped_files']} unreadable skipped)" if metrics["skipped_files"] else ")"),
        f"top-1 accuracy: {metrics['top1']:.4f}",
        f"top-5 accuracy: {metrics['top5']:.4f}",
        *([f"calibration error (ECE, {metrics['reliability']['bins']} bins): "
           f"{metrics['ece']:.4f}"] if "ece" in metrics else []),
        "",
        f"{'class':<{width}}  precision  recall  support",
    ]
    for name in names:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['support']:7d}")
    matrix = metrics["confusion_matrix"]
    if len(names) <= max_matrix_classes:
        cell = max(5, len(str(max(max(r) for r in matrix))) + 1)
        lines += ["", "Confusion matrix (rows: true class, columns: predicted class index)",
                  " " * (width + 4) + "".join(f"{j:>{cell}}" for j in range(len(names)))]
        for i, (name, row) in enumerate(zip(names, matrix)):
            lines.append(f"{i:>2}  {name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    else:
        lines += ["", f"Confusion matrix: {len(names)} classes, see metrics.json."]
    return "\n".join(lines)


def plot_confusion_matrix(metrics, path):
    """Save the row-normalised confusion matrix as a PNG (matplotlib's Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = metrics["class_names"]
    counts = np.asarray(metrics["confusion_matrix"], np.float64)
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(names)
    side = min(4 + 0.45 * n, 30)
    figure = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if recall[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"top-1 {metrics['top1']:.4f} on {metrics['examples']} images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------
# predict


def predict_files(classifier, files, top_k=5):
    """Top-k predictions per file, one request per file so a bad image fails alone.

    Returns:
        `(results, failures)`: a list of `{"file", "predictions": [{"class", "index",
        "score"}, ...]}` and a list of `(file, reason)`.
    """
    results, failures = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                encoded = f.read()
        except OSError as error:  # gone since it was listed, unreadable, a folder
            failures.append((path, error.strerror or str(error)))
            continue
        try:
            out = classifier.serve(tf.constant([encoded]))
        except tf.errors.InvalidArgumentError as error:
            failures.append((path, request_error(error)))
            continue
        predictions = [
            {"class": name.decode(), "index": int(index), "score": float(score)}
            for name, index, score in zip(out["class_names"][0].numpy(), out["classes"][0].numpy(),
                                          out["scores"][0].numpy())
        ]
        results.append({"file": path, "predictions": predictions[:top_k]})
    return results, failures


def request_error(error):
    """The user-facing part of a failed request's InvalidArgumentError message."""
    message = error.message
    if "assertion failed: [" in message:
        # "assertion failed: [text] [value] ..." on its first line: the text and its values.
        first = message.split("assertion failed: ", 1)[1].splitlines()[0]
        return " ".join(part.strip() for part in re.findall(r"\[([^\]]*)\]", first))
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("[[", "Graph execution", "Detected at",
                                                                      "<stack traces"))]
    return useful[0] if useful else lines[0]


def format_predictions(results):
    width = max(4, *(len(r["file"]) for r in results))
    class_width = max(5, *(len(p["class"]) for r in results for p in r["predictions"]))
    lines = [f"{'file':<{width}}  rank  {'class':<{class_width}}   score"]
    for result in results:
        for rank, p in enumerate(result["predictions"], 1):
            file = result["file"] if rank == 1 else ""
            lines.append(f"{file:<{width}}  {rank:>4}  {p['class']:<{class_width}}  {p['score']:.4f}")
    return "\n".join(lines)
