"""`resnet-evaluate` and `resnet-predict`: score a model on a dataset, classify image files.

Both take a `.keras` file, a training run folder (its best.keras) or an exported
SavedModel (a version folder, or a base folder: its latest version).

- A Keras model is evaluated on the evaluation pipeline (`data.decode_image` +
  `data.preprocess_for_eval`) and predicts through the same serving function the
  export writes (`export.ServingModule`), built in memory.
- A SavedModel is fed the encoded image bytes through its `serving_default`
  signature, exactly as TF Serving would; it needs no Keras model at all.

Metrics come from `metrics.evaluate_model`, the function the trainer uses.
"""

import argparse
import dataclasses
import json
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

from resnet_tf import data, export
from resnet_tf.files import atomic_write, write_json
from resnet_tf.metrics import evaluate_model

_EVALUATE = "resnet-evaluate"
_PREDICT = "resnet-predict"
# data.decode_image decodes WebP as well; data.IMAGE_EXTENSIONS does not list it (yet).
_PREDICT_EXTENSIONS = (".webp",)


class EvaluationError(ValueError):
    """A user error: a missing file, a folder without images, mismatched classes."""


@dataclasses.dataclass
class Classifier:
    """A loaded model of either kind.

    Attributes:
        serve: callable taking a string tensor `[N]` of encoded images and returning the
            serving outputs (`probabilities`, `classes`, `scores`, `class_names`).
        class_names: list of str.
        image_size: int.
        preset: str.
        keras_model: the `keras.Model`, or None for a SavedModel.
        path: str. What was loaded.
        saved_model: the object `tf.saved_model.load` returned (its signatures only
            work while it is alive), or None.
    """

    serve: object
    class_names: list
    image_size: int
    preset: str
    keras_model: object
    path: str
    saved_model: object = None


def load_classifier(path, *, image_size=None, preset=None, classes_file=None, top_k=5):
    """Load a `.keras` file, a run folder or a SavedModel (version or base folder)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise EvaluationError(f"Model '{path}' does not exist; expected a .keras file, a run "
                              "folder or a SavedModel folder.")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "best.keras")):
        version_dir = export.latest_version_dir(path)
        loaded = tf.saved_model.load(version_dir)
        if export.SERVING_SIGNATURE not in loaded.signatures:
            raise EvaluationError(f"SavedModel '{version_dir}' has no "
                                  f"'{export.SERVING_SIGNATURE}' signature.")
        serve = loaded.signatures[export.SERVING_SIGNATURE]
        if not hasattr(loaded, "class_names"):
            raise EvaluationError(f"SavedModel '{version_dir}' was not written by resnet-export "
                                  "(it has no class_names).")
        return Classifier(
            serve=lambda image_bytes: serve(**{export.BYTES_INPUT: image_bytes}),
            class_names=[c.decode() for c in loaded.class_names.numpy()],
            image_size=int(loaded.image_size.numpy()),
            preset=loaded.preset.numpy().decode(),
            keras_model=None,
            path=version_dir,
            saved_model=loaded,
        )
    model, class_names, image_size, preset, _ = export.load_checkpoint(
        path, image_size=image_size, preset=preset, classes_file=classes_file)
    module = export.ServingModule(
        export.inference_model(model), class_names=class_names, image_size=image_size,
        preset=preset, top_k=min(top_k, len(class_names)))
    return Classifier(module.serve_bytes, class_names, image_size, preset, model, path)


# ---------------------------------------------------------------------------------------
# evaluate


def evaluate(classifier, *, data_dir=None, dataset=None, split="test", tfds_dir=None,
             batch_size=64):
    """`metrics.evaluate_model` on an image folder or a TFDS split.

    Returns:
        The metrics dict, plus `model`, `data` and `skipped_files` (images that could
        not be decoded and were left out).
    """
    if data_dir is not None:
        files, labels, class_names = data.list_image_folder(data_dir)
        source = tf.data.Dataset.from_tensor_slices((files, labels)).map(
            lambda f, label: (tf.io.read_file(f), label))
        total, described = len(files), f"folder '{data_dir}'"
    else:
        source, class_names = _tfds_split(dataset, split, tfds_dir)
        total = None
        described = f"TFDS '{dataset}' split '{split}'"
    classes = len(classifier.class_names)
    if len(class_names) != classes:
        raise EvaluationError(
            f"The model has {classes} classes but {described} has {len(class_names)}; "
            "expected the same classes.")
    if class_names != classifier.class_names and sorted(class_names) == sorted(classifier.class_names):
        # Same classes in another order (a folder lists them sorted): score against the
        # model's indices.
        to_model = tf.constant([classifier.class_names.index(n) for n in class_names], tf.int32)
        source = source.map(lambda encoded, label: (encoded, tf.gather(to_model, label)))
        class_names = classifier.class_names
    elif class_names != classifier.class_names and classifier.class_names != _default_names(classes):
        warnings.warn(f"The model's classes ({', '.join(classifier.class_names[:5])}, ...) are not "
                      f"{described}'s ({', '.join(class_names[:5])}, ...); comparing label indices.",
                      stacklevel=2)

    size, preset = classifier.image_size, classifier.preset
    if classifier.keras_model is not None:
        def prepare(encoded, label):
            return data.preprocess_for_eval(data.decode_image(encoded), size, preset), label
        model = classifier.keras_model
    else:
        def prepare(encoded, label):
            # Decoding here only drops unreadable files; the SavedModel decodes again.
            tf.debugging.assert_rank(data.decode_image(encoded), 3)
            return encoded, label

        def model(image_bytes, training=False):
            return classifier.serve(image_bytes)["probabilities"]
    batches = (source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    result = evaluate_model(model, batches, class_names)
    result.update(model=classifier.path, data=described,
                  skipped_files=0 if total is None else total - result["examples"])
    return result


def _default_names(classes):
    return [f"class_{i}" for i in range(classes)]


def _tfds_split(name, split, tfds_dir):
    """(encoded images and labels, class names) of a prepared TFDS split."""
    import tensorflow_datasets as tfds

    builder = data._prepared_builder(tfds, name, tfds_dir, None)
    _, label_key = builder.info.supervised_keys
    names = list(builder.info.features[label_key].names)
    try:
        ds = builder.as_dataset(split=split, as_supervised=True)
    except (KeyError, ValueError) as error:
        raise EvaluationError(f"TFDS dataset '{name}' has no split '{split}' ({error}).") from error
    # Lossless re-encoding: both kinds of model then start from the same bytes.
    ds = ds.map(lambda image, label: (tf.io.encode_png(image), tf.cast(label, tf.int32)))
    return ds, names


def format_metrics(metrics, max_matrix_classes=20):
    """The metrics as a plain-text report: accuracy, a per-class table, the confusion matrix."""
    names = metrics["class_names"]
    width = max(9, *(len(n) for n in names))
    lines = [
        f"Model: {metrics['model']}",
        f"Data:  {metrics['data']} ({metrics['examples']} images"
        + (f", {metrics['skipped_files']} unreadable skipped)" if metrics["skipped_files"] else ")"),
        f"top-1 accuracy: {metrics['top1']:.4f}",
        f"top-5 accuracy: {metrics['top5']:.4f}",
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


def evaluate_parser():
    parser = argparse.ArgumentParser(
        prog=_EVALUATE,
        description="Evaluate a .keras model, a run folder or a SavedModel on an image folder "
                    "or a TFDS split: top-1/top-5 accuracy, per-class precision and recall, "
                    "confusion matrix (printed, metrics.json, confusion_matrix.png).",
    )
    parser.add_argument("model", help=".keras file, run folder, or SavedModel (version or base folder)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    source.add_argument("--dataset", help="TFDS dataset name, e.g. cifar10")
    parser.add_argument("--split", default="test", help="TFDS split (default: test)")
    parser.add_argument("--tfds-dir", help="TFDS data directory")
    parser.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    _model_options(parser)
    return parser


def evaluate_main(argv=None):
    """`resnet-evaluate MODEL (--data-dir DIR | --dataset NAME) [--out DIR]`. Returns the exit status."""
    args = evaluate_parser().parse_args(argv)
    from resnet_tf.cli import fail as _fail

    try:
        if args.batch_size < 1:
            raise EvaluationError(f"--batch-size must be a positive integer; received {args.batch_size}.")
        if args.data_dir is not None and not os.path.exists(args.data_dir):
            raise EvaluationError(f"Image folder '{args.data_dir}' does not exist.")
        classifier = _load(args)
        metrics = evaluate(classifier, data_dir=args.data_dir, dataset=args.dataset,
                           split=args.split, tfds_dir=args.tfds_dir, batch_size=args.batch_size)
        if metrics["examples"] == 0:
            raise EvaluationError(f"None of the images in {metrics['data']} could be decoded.")
    except ValueError as error:  # EvaluationError, ExportError, data.DataError
        return _fail(_EVALUATE, error)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "metrics.json"), metrics)
    atomic_write(os.path.join(args.out, "confusion_matrix.png"),
                 lambda tmp: plot_confusion_matrix(metrics, tmp))
    print(format_metrics(metrics))
    print(f"\nWrote metrics.json and confusion_matrix.png to {args.out}")
    return 0


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
        with open(path, "rb") as f:
            encoded = f.read()
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
        message = message.split("assertion failed: [", 1)[1]
        return message.split("]", 1)[0].strip()
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("[[", "Graph execution", "Detected at",
                                                                      "<stack traces"))]
    return useful[0] if useful else lines[0]


def image_files(paths):
    """The given files, plus every image file (recursively) in the given folders, sorted."""
    extensions = tuple(data.IMAGE_EXTENSIONS) + _PREDICT_EXTENSIONS
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(path)
                for name in names
                if name.lower().endswith(extensions) and not name.startswith(".")
            )
            if not found:
                raise EvaluationError(f"Folder '{path}' has no image files; expected files ending in "
                                      f"{', '.join(extensions)}.")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise EvaluationError(f"Image '{path}' does not exist.")
    return files


def format_predictions(results):
    width = max(4, *(len(r["file"]) for r in results))
    class_width = max(5, *(len(p["class"]) for r in results for p in r["predictions"]))
    lines = [f"{'file':<{width}}  rank  {'class':<{class_width}}   score"]
    for result in results:
        for rank, p in enumerate(result["predictions"], 1):
            file = result["file"] if rank == 1 else ""
            lines.append(f"{file:<{width}}  {rank:>4}  {p['class']:<{class_width}}  {p['score']:.4f}")
    return "\n".join(lines)


def predict_parser():
    parser = argparse.ArgumentParser(
        prog=_PREDICT,
        description="Classify image files with a .keras model, a run folder or a SavedModel "
                    "(through its serving_default signature on the raw file bytes).",
    )
    parser.add_argument("model", help=".keras file, run folder, or SavedModel (version or base folder)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default: 5; a "
                        "SavedModel returns at most the k it was exported with)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _model_options(parser)
    return parser


def predict_main(argv=None):
    """`resnet-predict MODEL IMAGE... [--top-k K] [--json]`. Returns the exit status.

    Images that cannot be classified are reported on stderr and skipped; the status is
    then 1 (2 for user errors that stop everything).
    """
    args = predict_parser().parse_args(argv)
    from resnet_tf.cli import fail as _fail

    try:
        if args.top_k < 1:
            raise EvaluationError(f"--top-k must be a positive integer; received {args.top_k}.")
        files = image_files(args.images)
        classifier = _load(args, top_k=args.top_k)
    except ValueError as error:
        return _fail(_PREDICT, error)
    results, failures = predict_files(classifier, files, args.top_k)
    for path, reason in failures:
        print(f"{_PREDICT}: warning: skipped '{path}': {reason}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    elif results:
        print(format_predictions(results))
    return 1 if failures else 0


def _model_options(parser):
    keras_only = parser.add_argument_group("for .keras models (a SavedModel carries its own)")
    keras_only.add_argument("--classes", help="class names file (default: classes.txt beside the model)")
    keras_only.add_argument("--image-size", type=int, help="input size (default: config.json, else the model's)")
    keras_only.add_argument("--preset", choices=data.PRESETS,
                            help="evaluation preprocessing (default: config.json)")


def _load(args, top_k=5):
    return load_classifier(args.model, image_size=args.image_size, preset=args.preset,
                           classes_file=args.classes, top_k=top_k)
