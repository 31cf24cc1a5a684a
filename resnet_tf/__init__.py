"""resnet_tf: residual networks for Keras 3, with a TensorFlow trainer and exporter.

    from resnet_tf import build_resnet, residual_block, bottleneck_block

Importing the package loads only the model layer (`resnet_tf.models`) and what `.keras`
checkpoints need to deserialize (`resnet_tf.schedules`); the data, training, export,
evaluation and command-line layers load when they are imported.
"""

from resnet_tf.errors import WeightsDownloadError
from resnet_tf.models import (
    DEPTHS,
    SPECS,
    BatchNormalization,
    StochasticDepth,
    ZeroPadShortcut,
    bottleneck_block,
    build_resnet,
    feature_extractor,
    freeze_batchnorm,
    residual_block,
)
from resnet_tf.models.normalization import WeightsNormalization
from resnet_tf.models.registry import list_weights
from resnet_tf.schedules import WarmupSchedule  # registered, so run checkpoints load compiled

__version__ = "0.2.0"

__all__ = [
    "BatchNormalization",
    "DEPTHS",
    "SPECS",
    "StochasticDepth",
    "WarmupSchedule",
    "WeightsDownloadError",
    "WeightsNormalization",
    "ZeroPadShortcut",
    "bottleneck_block",
    "build_resnet",
    "feature_extractor",
    "freeze_batchnorm",
    "list_weights",
    "residual_block",
]
