"""The evaluation layer: score a model on a dataset, classify files, explain predictions.

Takes a `.keras` file, a run folder or an exported SavedModel alike.
"""

from resnet_tf.errors import EvaluationError, ExplainError
from resnet_tf.evaluation.evaluate import (
    Classifier,
    ConfidentErrors,
    evaluate,
    format_metrics,
    format_predictions,
    load_classifier,
    plot_confusion_matrix,
    predict_files,
    request_error,
)
from resnet_tf.evaluation.explain import error_gallery, feature_grid, grad_cam, overlay, upsample

__all__ = [
    "Classifier",
    "ConfidentErrors",
    "EvaluationError",
    "ExplainError",
    "error_gallery",
    "feature_grid",
    "grad_cam",
    "overlay",
    "upsample",
    "evaluate",
    "format_metrics",
    "format_predictions",
    "load_classifier",
    "plot_confusion_matrix",
    "predict_files",
    "request_error",
]
