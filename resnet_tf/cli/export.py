"""`resnet-export`: a .keras file or a run folder as a TF Serving SavedModel (and TFLite)."""

import argparse
import os
import sys

from resnet_tf.cli.common import fail
from resnet_tf.cli.numbers import MAX_IMAGE_SIZE, MAX_INT64, MAX_TOP_K, int_in
from resnet_tf.data import PRESETS
from resnet_tf.errors import ExportError
from resnet_tf.export.checkpoint import load_checkpoint, serving_tta
from resnet_tf.export.inference import PRECISIONS
from resnet_tf.export.savedmodel import check_export_dir, export_serving_model
from resnet_tf.export.tflite import (
    QUANTIZATIONS,
    calibration_images,
    export_tflite,
    refuse_existing,
    sidecar_path,
)
from resnet_tf.metrics import TTA, TTA_DESCRIPTIONS
from resnet_tf.runs import hold_out_seed, settings_beside, temperature_beside

_PROG = "resnet-export"


def export_parser():
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Export a .keras checkpoint or a training run folder as a TF Serving "
                    "SavedModel (a new numeric version folder under --export-dir).",
    )
    parser.add_argument("source", help="a .keras file, or a run folder (best.keras, classes.txt, config.json)")
    parser.add_argument("--export-dir", help="model base path (default: <run>/export/<model name>)")
    parser.add_argument("--version", type=int_in(0, MAX_INT64),
                        help="version number (default: the next free one)")
    parser.add_argument("--top-k", type=int_in(1, MAX_TOP_K), default=5,
                        help="classes returned per image (default: 5)")
    parser.add_argument("--classes", help="class names file, one per line (default: classes.txt beside the model)")
    parser.add_argument("--image-size", type=int_in(1, MAX_IMAGE_SIZE),
                        help="input size (default: config.json, else the model's)")
    parser.add_argument("--preset", choices=PRESETS, help="evaluation preprocessing (default: config.json)")
    parser.add_argument("--no-fold-batchnorm", action="store_true",
                        help="keep BatchNorm separate from the convolutions")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="compute type of the served network (default: float32); "
                             "bfloat16 is faster on CPUs with AVX512-BF16 or AMX, float16 on "
                             "GPUs; the classifier and the outputs stay float32")
    parser.add_argument("--tta", choices=TTA,
                        help="test-time augmentation inside the serving graph, as resnet-evaluate "
                             "--tta computes it: none (1 view, lowest latency), flip (2 views) or "
                             "flip-shift (10 views) (default: the run's own --tta, so the export "
                             "serves the figure its run reported; none without a run)")
    parser.add_argument("--tflite", action="append", type=parse_quantizations,
                        metavar="{float32,float16,int8}",
                        help="also write <export dir>/<model name>_<quantization>.tflite (and .json); "
                             "repeatable or a comma list")
    parser.add_argument("--data-dir", help="training images for --tflite int8 calibration "
                        "(default: the run's config.json)")
    return parser


def main(argv=None):
    """`resnet-export SOURCE [--export-dir DIR] [--version N] ...`. Returns the exit status."""
    args = export_parser().parse_args(argv)
    try:
        if args.export_dir is not None:
            check_export_dir(args.export_dir)
        checkpoint = load_checkpoint(args.source, image_size=args.image_size, preset=args.preset,
                                     classes_file=args.classes)
        model, class_names, run_dir = checkpoint.model, checkpoint.class_names, checkpoint.run_dir
        tta = args.tta or serving_tta(args.source)
        temperature = temperature_beside(args.source)
        export_dir = args.export_dir or os.path.join(
            run_dir or os.path.dirname(os.path.abspath(args.source)), "export", model.name)
        check_export_dir(export_dir)
        write_tflite = prepare_tflite_exports(
            args.tflite or [], source=args.source, model=model, export_dir=export_dir,
            class_names=class_names, transform=checkpoint.transform,
            data_dir=args.data_dir, fold_batchnorm=not args.no_fold_batchnorm)
        path = export_serving_model(
            model, export_dir, class_names=class_names, transform=checkpoint.transform,
            version=args.version, top_k=args.top_k, fold_batchnorm=not args.no_fold_batchnorm,
            precision=args.precision, tta=tta, temperature=temperature,
        )
        print(path)
        print(f"{_PROG}: images are preprocessed as {checkpoint.transform.describe()}.",
              file=sys.stderr, flush=True)
        print(f"{_PROG}: serving_default and serving_pixels answer with {TTA_DESCRIPTIONS[tta]} "
              f"(--tta {tta})" + (f", probabilities calibrated by the run's temperature "
                                  f"{temperature:.3f}" if temperature else "") + ".",
              file=sys.stderr, flush=True)
        for written in write_tflite():
            print(written)
    except ValueError as error:  # ExportError, DataError: messages written for the user
        return fail(_PROG, error)
    return 0


def parse_quantizations(text):
    """argparse type of `--tflite`: "int8" or a comma list such as "float16,int8"."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUANTIZATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected one or more of {', '.join(QUANTIZATIONS)} separated by commas; "
            f"received {text!r}")
    return names


def prepare_tflite_exports(quantizations, *, source, model, export_dir, class_names, transform,
                           data_dir=None, fold_batchnorm=True):
    """Checks and calibration data for `resnet-export --tflite`, before anything is written.

    Raises `ExportError` (or `data.DataError`) when a file already exists or int8 has no
    training images: `data_dir`, else the data named by the run's config.json.

    Returns:
        A function that writes `<export_dir>/<model name>_<quantization>.tflite` (and
        `.json`) for each quantization and returns the paths.
    """
    quantizations = list(dict.fromkeys(q for group in quantizations for q in group))
    paths = {q: os.path.join(export_dir, f"{model.name}_{q}.tflite") for q in quantizations}
    for path in paths.values():
        refuse_existing(path, sidecar_path(path), hint="another --export-dir")
    calibration = None
    if "int8" in quantizations:
        calibration = _cli_calibration(source, data_dir, transform)

    def write():
        return [export_tflite(model, path, quantization=q, representative_images=calibration,
                              class_names=class_names, transform=transform,
                              fold_batchnorm=fold_batchnorm)
                for q, path in paths.items()]

    return write


def _cli_calibration(source, data_dir, transform):
    config = settings_beside(source)
    data_dir = data_dir or config.get("data_dir")
    dataset = config.get("dataset") or None
    if not data_dir and (not dataset or dataset == "synthetic"):
        found = (f"its config.json names dataset={dataset!r}" if config
                 else "there is no config.json beside it")
        raise ExportError(
            "--tflite int8 needs training images to calibrate on: pass --data-dir PATH (a folder "
            f"with one sub-folder of images per class); for '{source}' {found}.")
    # Hold out the run's validation images, so they stay fit for measuring accuracy.
    val_split = None if config.get("val_dir") else config.get("val_split")
    return calibration_images(data_dir, dataset=dataset, transform=transform,
                              val_split=val_split, seed=hold_out_seed(config))
