"""resnet_tf: residual networks for Keras 3, with a TensorFlow trainer and exporter.

    from resnet_tf import build_resnet, residual_block, bottleneck_block
"""

from resnet_tf.blocks import bottleneck_block, residual_block
from resnet_tf.layers import BatchNormalization, StochasticDepth, ZeroPadShortcut, freeze_batchnorm
from resnet_tf.resnet import DEPTHS, SPECS, build_resnet, feature_extractor
from resnet_tf.training import WarmupSchedule  # registered, so run checkpoints load compiled
from resnet_tf.weights import WeightsDownloadError

__version__ = "0.1.0"

__all__ = [
    "BatchNormalization",
    "DEPTHS",
    "SPECS",
    "StochasticDepth",
    "WarmupSchedule",
    "WeightsDownloadError",
    "ZeroPadShortcut",
    "bottleneck_block",
    "build_resnet",
    "feature_extractor",
    "freeze_batchnorm",
    "residual_block",
]
