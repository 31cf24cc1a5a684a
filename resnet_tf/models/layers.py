"""Layers the ResNet blocks need beyond what Keras ships.

All of them are registered Keras serializables, so a `.keras` file written by this
library loads after `import resnet_tf` without `custom_objects`, in safe mode.
"""

import keras
from keras import ops

_PACKAGE = "resnet_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused kernel on TensorFlow.

    Keras 3 normalises with several separate ops (cast, moments, a handful of
    elementwise ops). On the TensorFlow backend this layer calls the fused kernel
    (`FusedBatchNormV3`) instead: a profiled ResNet-50 mixed_bfloat16 step took 3.0 s
    against keras.applications' 4.6 s on a 2-core CPU (benchmarks/results/speed_*.json).
    Everything else is the parent:
    same weights, same `momentum` semantics for the moving statistics (updated with
    the biased batch variance, as Keras does), same inference behaviour for frozen
    layers (`trainable=False` always uses the moving statistics), same config.

    Inputs the fused kernel cannot take (a mask, renorm, synchronized BN, an axis
    that is not the channel axis of a 4D tensor) go through the parent's code, as
    does every other backend.
    """

    def _can_fuse(self, inputs, mask):
        if keras.backend.backend() != "tensorflow":
            return False
        if mask is not None or self.renorm or self.synchronized:
            return False
        if len(inputs.shape) != 4 or self.axis % 4 not in (1, 3):
            return False
        return inputs.dtype in ("float32", "float16", "bfloat16")

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_call(inputs, training=bool(training and self.trainable))

    def _fused_call(self, inputs, training):
        import tensorflow as tf  # only reached on the TensorFlow backend

        channels = inputs.shape[self.axis]
        gamma = self.gamma if self.scale else tf.ones([channels], "float32")
        beta = self.beta if self.center else tf.zeros([channels], "float32")
        axis = self.axis % 4
        data_format = "NHWC" if axis == 3 else "NCHW"
        # The kernel normalises float16/bfloat16 inputs with float32 statistics, which
        # is what the parent achieves by up-casting the inputs first.
        if training:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                tf.cast(gamma, "float32"),
                tf.cast(beta, "float32"),
                epsilon=self.epsilon,
                data_format=data_format,
                is_training=True,
            )
            # The kernel returns the unbiased (Bessel-corrected) batch variance;
            # Keras tracks the biased one.
            # int64: activations of large batches overflow an int32 element count.
            count = tf.cast(tf.size(inputs, out_type=tf.int64), "float32") / tf.cast(
                tf.shape(inputs)[axis], "float32"
            )
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance * self.momentum
                + variance * (1.0 - self.momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                tf.cast(gamma, "float32"),
                tf.cast(beta, "float32"),
                mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon,
                data_format=data_format,
                is_training=False,
            )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Drops a whole residual branch per example while training (Huang et al., 2016).

    Surviving branches are scaled by `1 / (1 - rate)` so inference needs no rescaling.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"StochasticDepth rate must be in [0, 1). Received: rate={rate}"
            )
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        mask = ops.cast(noise < keep, inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroPadShortcut(keras.layers.Layer):
    """Option A shortcut of the CIFAR ResNets: subsample, then zero-pad channels.

    The paper's ResNet-20/32/44/56/110 use it so the shortcut adds no parameters.
    """

    def __init__(self, filters, stride=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.data_format = data_format or keras.config.image_data_format()

    def build(self, input_shape):
        # Option A only adds channels; fewer filters would make the output's real shape
        # disagree with `compute_output_shape` and fail later, at the residual add.
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        if channels is not None and channels > self.filters:
            raise ValueError(
                "ZeroPadShortcut can only add channels: filters must be at least the "
                f"input channels ({channels}). Received: filters={self.filters}"
            )

    def call(self, inputs):
        channels_last = self.data_format == "channels_last"
        s = self.stride
        x = inputs[:, ::s, ::s, :] if channels_last else inputs[:, :, ::s, ::s]
        extra = self.filters - inputs.shape[-1 if channels_last else 1]
        if extra <= 0:
            return x
        before = extra // 2
        pad = [[0, 0], [0, 0], [0, 0], [before, extra - before]]
        if not channels_last:
            pad = [pad[0], pad[3], pad[1], pad[2]]
        return ops.pad(x, pad)

    def compute_output_shape(self, input_shape):
        channels_last = self.data_format == "channels_last"
        spatial = input_shape[1:3] if channels_last else input_shape[2:4]
        spatial = [None if d is None else (d + self.stride - 1) // self.stride for d in spatial]
        if channels_last:
            return (input_shape[0], *spatial, self.filters)
        return (input_shape[0], self.filters, *spatial)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "stride": self.stride,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PaddedMaxPooling2D(keras.layers.MaxPooling2D):
    """Max pooling of the input padded by `pad` on every side with -inf: PyTorch's `padding`.

    `ZeroPadding2D` before the pooling is the same only for non-negative inputs; the
    pre-activation ResNet's stem pools the raw convolution output, where a zero in
    the padding would win over negative borders.
    """

    def __init__(self, pool_size=3, strides=2, pad=1, **kwargs):
        kwargs.pop("padding", None)  # always "valid" around the explicit padding
        super().__init__(pool_size=pool_size, strides=strides, padding="valid", **kwargs)
        self.pad = pad

    def _pad_width(self):
        spatial = [[self.pad, self.pad]] * 2
        if self.data_format == "channels_last":
            return [[0, 0], *spatial, [0, 0]]
        return [[0, 0], [0, 0], *spatial]

    def call(self, inputs):
        padded = ops.pad(inputs, self._pad_width(), constant_values=float("-inf"))
        return super().call(padded)

    def compute_output_shape(self, input_shape):
        padded = [d if d is None else d + before + after
                  for d, (before, after) in zip(input_shape, self._pad_width())]
        return super().compute_output_shape(tuple(padded))

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def freeze_batchnorm(model):
    """Put every BatchNormalization layer of `model` in inference mode for good.

    For fine-tuning: after `base.trainable = True`, Keras 3's `fit` calls the layers
    with `training=True` even when the base was called with `training=False`, so the
    moving statistics would drift on small fine-tuning batches. Frozen BatchNorm
    layers always use (and keep) their moving statistics. Nested models are searched
    too, so a ResNet used as one layer of the user's model (after preprocessing layers,
    before a head) is frozen the same way. Returns how many were frozen.
    """
    frozen = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen
