"""The export layer: the served network (BatchNorm folded, checked), the TF Serving
SavedModel, TFLite files and the helpers that run them.

    from resnet_tf.export import export_serving_model, export_tflite
"""

from resnet_tf.errors import ExportError
from resnet_tf.export.checkpoint import export_run, load_checkpoint
from resnet_tf.export.inference import PRECISIONS, check_serving_args, inference_model
from resnet_tf.export.savedmodel import (
    BYTES_INPUT,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_SIGNATURE,
    ServingModule,
    export_serving_model,
    header_shape,
    latest_version_dir,
    next_version,
)
from resnet_tf.export.tflite import (
    QUANTIZATIONS,
    calibration_images,
    evaluate_tflite,
    export_tflite,
    latency_ms,
    load_interpreter,
    predict_tflite,
)

__all__ = [
    "BYTES_INPUT",
    "ExportError",
    "PIXELS_INPUT",
    "PIXELS_SIGNATURE",
    "PRECISIONS",
    "QUANTIZATIONS",
    "SERVING_SIGNATURE",
    "ServingModule",
    "calibration_images",
    "check_serving_args",
    "evaluate_tflite",
    "export_run",
    "export_serving_model",
    "export_tflite",
    "header_shape",
    "inference_model",
    "latency_ms",
    "latest_version_dir",
    "load_checkpoint",
    "load_interpreter",
    "next_version",
    "predict_tflite",
]
