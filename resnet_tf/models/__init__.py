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
from resnet_tf.models.resnet import ResNet, build_resnet, feature_extractor
from resnet_tf.models.sources import WeightsSource, resolve_weights
from resnet_tf.models.spec import DEPTHS, SPECS, ResNetSpec, spec_of

__all__ = [
    "BatchNormalization",
    "DEPTHS",
    "ResNet",
    "ResNetSpec",
    "SPECS",
    "StochasticDepth",
    "WeightsSource",
    "ZeroPadShortcut",
    "bottleneck_block",
    "build_resnet",
    "feature_extractor",
    "freeze_batchnorm",
    "resolve_weights",
    "residual_block",
    "spec_of",
]
