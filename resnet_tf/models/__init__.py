"""The model layer: Keras 3 layers, blocks, `build_resnet` and weight loading, on any backend.

Nothing here imports TensorFlow directly; the fused BatchNorm uses it only behind a
backend check.
"""

from resnet_tf.models.blocks import bottleneck_block, residual_block
from resnet_tf.models.layers import (
    BatchNormalization,
    StochasticDepth,
    ZeroPadShortcut,
    freeze_batchnorm,
)
from resnet_tf.models.resnet import DEPTHS, SPECS, build_resnet, feature_extractor

__all__ = [
    "BatchNormalization",
    "DEPTHS",
    "SPECS",
    "StochasticDepth",
    "ZeroPadShortcut",
    "bottleneck_block",
    "build_resnet",
    "feature_extractor",
    "freeze_batchnorm",
    "residual_block",
]
