"""`resnet-evaluate` and `resnet-predict`: score a model on a dataset, classify image files."""

import argparse
import json
import os
import sys

import numpy as np

from resnet_tf.cli.common import fail
from resnet_tf.cli.numbers import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, MAX_TOP_K, int_in
from resnet_tf.data import PRESETS, image_files
from resnet_tf.errors import EvaluationError
from resnet_tf.evaluation import (
    ConfidentErrors,
    error_gallery,
    evaluate,
    format_metrics,
    format_predictions,
    load_classifier,
    plot_confusion_matrix,
    predict_files,
)
from resnet_tf.export.savedmodel import check_output_folder
from resnet_tf.files import atomic_write, write_json
from resnet_tf.metrics import TTA, plot_reliability

_EVALUATE = "resnet-evaluate"
_PREDICT = "resnet-predict"


def evaluate_parser():
    parser = argparse.ArgumentParser(
        prog=_EVALUATE,
        description="Evaluate a .keras model, a run folder, a SavedModel, a registered weights "
                    "name or a weights file on an image folder (an ImageNet-layout folder for "
                    "ImageNet weights), shards or a TFDS split, with the model's own transform: "
                    "top-1/top-5 accuracy, per-class precision and recall, "
                    "confusion matrix (printed, metrics.json, confusion_matrix.png) and the most "
                    "confidently wrong images (errors.png).",
    )
    parser.add_argument("model", help=".keras file, run folder, SavedModel (version or base "
                        "folder), registered weights name (python -m resnet_tf list-weights) or "
                        "weights file (.pth, .safetensors, keras.applications .h5)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    source.add_argument("--dataset", help="TFDS dataset name, e.g. cifar10")
    source.add_argument("--hold-out", action="store_true",
                        help="the validation images the model's training run held out (a run "
                             "folder or a .keras file in one; its config.json names them)")
    parser.add_argument("--split", default="test", help="TFDS split (default: test)")
    parser.add_argument("--tfds-dir", help="TFDS data directory")
    parser.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    parser.add_argument("--batch-size", type=int_in(1, MAX_BATCH_SIZE), default=64,
                        help="images per batch (default: 64)")
    parser.add_argument("--explain", action="store_true",
                        help="show each image of errors.png with its Grad-CAM heat map for "
                             "the predicted class (.keras models and run folders)")
    parser.add_argument("--tta", choices=TTA, default="none",
                        help="flip: average each image's scores with its mirror image's; "
                             "flip-shift: also with both moved 1 pixel along each diagonal "
                             "(10 views; .keras models and run folders; default: none)")
    _model_options(parser)
    return parser


def evaluate_main(argv=None):
    """`resnet-evaluate MODEL (--data-dir DIR | --dataset NAME | --hold-out) [--out DIR]`.

    Returns the exit status."""
    args = evaluate_parser().parse_args(argv)
    try:
        if args.data_dir is not None and not os.path.exists(args.data_dir):
            raise EvaluationError(f"Image folder '{args.data_dir}' does not exist.")
        check_output_folder(args.out, "--out", EvaluationError)  # before, not after, the work
        classifier = _load(args)
        if args.explain and classifier.keras_model is None:
            raise EvaluationError(f"--explain needs the Keras model for Grad-CAM. Received: the "
                                  f"SavedModel '{classifier.path}'; expected a .keras file or a "
                                  "run folder.")
        errors = ConfidentErrors(count=16)
        metrics = evaluate(classifier, data_dir=args.data_dir, dataset=args.dataset,
                           split=args.split, tfds_dir=args.tfds_dir, batch_size=args.batch_size,
                           tta=args.tta, errors=errors, hold_out=args.hold_out)
        if metrics["examples"] == 0:
            raise EvaluationError(f"None of the images in {metrics['data']} could be decoded.")
    except ValueError as error:  # EvaluationError, ExportError, data.DataError
        return fail(_EVALUATE, error)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "metrics.json"), metrics)
    atomic_write(os.path.join(args.out, "confusion_matrix.png"),
                 lambda tmp: plot_confusion_matrix(metrics, tmp))
    plot_reliability(metrics, os.path.join(args.out, "reliability.png"))
    _write_errors(errors, classifier, metrics["class_names"], args)
    print(format_metrics(metrics))
    print(f"\nWrote metrics.json, confusion_matrix.png, reliability.png and errors.png to "
          f"{args.out}")
    return 0




def _write_errors(errors, classifier, class_names, args):
    """errors.png: the most confidently wrong images (with their Grad-CAM on --explain)."""
    images, true, pred, scores = errors.arrays(classifier.transform)
    heatmaps = None
    if args.explain and len(images):
        from resnet_tf.data import normalize
        from resnet_tf.evaluation.explain import grad_cam

        heatmaps = grad_cam(classifier.keras_model, np.asarray(normalize(images)),
                            class_index=[int(p) for p in pred])
    error_gallery(images, true, pred, scores, class_names, os.path.join(args.out, "errors.png"),
                  heatmaps=heatmaps)


def predict_parser():
    parser = argparse.ArgumentParser(
        prog=_PREDICT,
        description="Classify image files with a .keras model, a run folder or a SavedModel "
                    "(through its serving_default signature on the raw file bytes).",
    )
    parser.add_argument("model", help=".keras file, run folder, or SavedModel (version or base folder)")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int_in(1, MAX_TOP_K), default=5,
                        help="classes per image (default: 5; a "
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
    try:
        files = image_files(args.images)
        classifier = _load(args, top_k=args.top_k)
    except ValueError as error:
        return fail(_PREDICT, error)
    results, failures = predict_files(classifier, files, args.top_k)
    for path, reason in failures:
        print(f"{_PREDICT}: warning: skipped '{path}': {reason}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    elif results:
        print(format_predictions(results))
    return 1 if failures else 0


def _model_options(parser):
    keras_only = parser.add_argument_group(
        "for Keras models and weights (a SavedModel carries its own)")
    keras_only.add_argument("--classes", help="class names file (default: classes.txt beside the model)")
    keras_only.add_argument("--image-size", type=int_in(1, MAX_IMAGE_SIZE),
                            help="input size: the model's transform at this size, its crop "
                                 "fraction kept (default: the transform the model or its "
                                 "weights carry, else config.json, else the model's size)")
    keras_only.add_argument("--preset", choices=PRESETS,
                            help="evaluate with this preset's transform instead of the "
                                 "model's own")


def _load(args, top_k=5):
    return load_classifier(args.model, image_size=args.image_size, preset=args.preset,
                           classes_file=args.classes, top_k=top_k)
