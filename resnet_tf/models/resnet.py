"""`build_resnet`: every standard ResNet as a functional `keras.Model` that knows its spec.

`ResNetSpec` (spec.py) says what the network is; the short builders here turn it into
layers, and `ResNet` keeps it in the model's config so a saved model knows how it was
built.
"""

import re

import keras

from resnet_tf.models.blocks import (
    batch_norm,
    bottleneck_block,
    conv,
    kernel_initializer,
    residual_block,
)
from resnet_tf.models.layers import PaddedMaxPooling2D
from resnet_tf.models.normalization import preprocessing_layer
from resnet_tf.models.sources import resolve_weights

# Where these names were before spec.py owned them; kept importable from here.
from resnet_tf.models.spec import (  # noqa: F401
    DEPTHS,
    POOLINGS,
    SPECS,
    STAGE_FILTERS,
    STEMS,
    ResNetSpec,
    default_variant,
    spec_of,
)
from resnet_tf.models.weights import load_weights


@keras.saving.register_keras_serializable(package="resnet_tf")
class ResNet(keras.Model):
    """A functional `keras.Model` that carries the `ResNetSpec` it was built from.

    Built like any functional model, `ResNet(inputs, outputs, spec=spec)`, and used
    like one. Its config is the functional config plus "spec", so a `.keras` file
    rebuilds the exact graph (per-layer dtype policies included) and the spec with it.

    Args:
        *args: `keras.Model`'s functional arguments (`inputs`, `outputs`).
        spec: `ResNetSpec`, its config dict, or None.
        **kwargs: `keras.Model`'s keyword arguments (`name`, `trainable`).
    """

    def __init__(self, *args, spec=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = ResNetSpec.from_config(spec) if isinstance(spec, dict) else spec

    def get_config(self):
        config = super().get_config()
        if self.spec is not None:
            config["spec"] = self.spec.get_config()
        return config


def build_resnet(
    depth,
    *,
    variant=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    stem=None,
    shortcut=None,
    groups=1,
    width_per_group=64,
    width_multiplier=1,
    se_ratio=0.0,
    stochastic_depth_rate=0.0,
    zero_init_residual=False,
    dropout=0.0,
    preprocessing="auto",
    name=None,
):
    """Build a ResNet as a `keras.Model`.

    Arguments shared with `keras.applications.ResNet50` mean the same thing there.

    Args:
        depth: int. 18, 34, 50, 101, 152 or 200 (ImageNet networks), or 20, 32, 44,
            56, 110, 164, 1001 (the CIFAR networks: 16/32/64 filters, 3x3 stem).
        variant: str or None. "v1.5" (bias-free, stride on the 3x3 conv),
            "v1" (keras.applications layout; its weight files load), "v2"
            (pre-activation) or "d" (ResNet-D). None means "v1.5", except for the
            CIFAR ResNet-164/1001, which the pre-activation paper defines ("v2").
        include_top: bool. Add global average pooling and the `classes`-way
            `Dense` classifier named "predictions".
        weights: None, "imagenet" (keras.applications' published file, variant
            "v1"), a registered name (`registry.list_weights()`), a weights file
            saved by this library (`.weights.h5` or `.keras`) or a run folder, a
            keras.applications HDF5 file (variant "v1"), or a torchvision / timm
            checkpoint; see `sources.resolve_weights`.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: tuple. `(height, width, channels)`; None dimensions allowed.
            Defaults to (224, 224, 3) (ImageNet stems) or (32, 32, 3) (CIFAR stem)
            with `include_top=True`, and (None, None, 3) without it.
        pooling: None, "avg" or "max". Global pooling of the last feature map
            when `include_top=False`.
        classes: int. Number of classes of the classifier.
        classifier_activation: str, callable or None. Activation of the
            classifier; None returns logits. Computed in float32 under mixed
            precision so probabilities are float32.
        stem: str or None. "imagenet" (7x7/2 conv + 3x3/2 max-pool), "deep"
            (three 3x3 convs + max-pool; the default of variant "d") or "cifar"
            (3x3/1 conv, no pooling: what ResNet-18/34 need on 32x32 images).
        shortcut: str or None. Projection shortcut where shapes change: "B"
            (1x1 conv + BN) or "A" (zero-padded identity). None: "A" for the CIFAR
            basic-block networks (as in the paper), "B" otherwise.
        groups: int. ResNeXt cardinality of the 3x3 convolutions (bottleneck only).
        width_per_group: int. ResNeXt width per group (bottleneck only); 64 is
            ResNet, `groups=32, width_per_group=4` is ResNeXt-50 32x4d.
        width_multiplier: number. Wide ResNet factor: multiplies the inner width of
            bottleneck blocks (2 gives Wide ResNet-50-2) and the filters of basic
            blocks (the WRN paper's k).
        se_ratio: float. Squeeze-and-excitation ratio in every block (1/16 is
            SE-ResNet); 0 disables it.
        stochastic_depth_rate: float. Drop probability of the last block's
            residual branch; earlier blocks get linearly smaller rates.
        zero_init_residual: bool. Zero-initialise the last BatchNorm gamma of each
            residual branch (each block starts as an identity).
        dropout: float in [0, 1). Dropout on the pooled features before the classifier
            (`include_top=True` only), as timm's `drop_rate`.
        preprocessing: "auto", None, "caffe" or a dict with `mode`, `mean`, `std`. The
            model always takes `(pixel / 255 - MEAN) / STD` RGB images (resnet_tf's
            standard scale); weights trained on another scale get a
            `WeightsNormalization` layer after the input that converts to theirs. "auto"
            follows `weights`: "caffe" for keras.applications' files, a registered
            name's own preprocessing, the standard scale otherwise.
        name: str. Model name; defaults to e.g. "resnet50".

    Returns:
        A functional `keras.Model` (a `ResNet`) whose `spec` is the `ResNetSpec` it
        was built from; its `.keras` file keeps it.
    """
    spec = ResNetSpec(
        depth, variant=variant, stem=stem, shortcut=shortcut, groups=groups,
        width_per_group=width_per_group, width_multiplier=width_multiplier,
        se_ratio=se_ratio, stochastic_depth_rate=stochastic_depth_rate,
        zero_init_residual=zero_init_residual, dropout=dropout, include_top=include_top,
        pooling=pooling, classes=classes, classifier_activation=classifier_activation,
    )
    inputs, x = _input(spec, input_tensor, input_shape)
    source = resolve_weights(weights, spec)
    if isinstance(preprocessing, str) and preprocessing == "auto":
        preprocessing = None if source is None else source.preprocessing
    adapter = preprocessing_layer(preprocessing)
    if adapter is not None:
        x = adapter(x)
    x = _head(_stages(_stem(x, spec), spec), spec)
    model = ResNet(inputs, x, spec=spec, name=name or spec.default_name)
    if source is not None:
        load_weights(model, source)
    return model


def _input(spec, input_tensor, input_shape):
    """(the model's inputs, the tensor the network starts from)."""
    channels_last = keras.config.image_data_format() == "channels_last"
    if input_shape is None:
        input_shape = spec.default_input_shape(channels_last)
    if not isinstance(input_shape, (tuple, list)):
        raise ValueError("input_shape must be a tuple (height, width, channels). Received: "
                         f"input_shape={input_shape!r}")
    if len(input_shape) != 3:
        raise ValueError(
            "input_shape must have 3 dimensions (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    min_size = spec.min_input_size
    spatial = input_shape[:2] if channels_last else input_shape[1:]
    if any(d is not None and d < min_size for d in spatial):
        raise ValueError(
            f"Input size must be at least {min_size}x{min_size} for this network. "
            f"Received: input_shape={input_shape}"
        )
    if input_tensor is None:
        x = keras.Input(shape=input_shape, name="input_layer")
        return x, x
    if keras.backend.is_keras_tensor(input_tensor):
        return keras.utils.get_source_inputs(input_tensor), input_tensor
    x = keras.Input(tensor=input_tensor, shape=input_shape)
    return x, x


def _stem(x, spec):
    variant, filters = spec.variant, spec.stage_filters[0]
    if spec.stem == "cifar":
        x = conv(x, filters, 3, variant=variant, name="conv1_conv")
        if variant == "v2":
            return x  # the first block pre-activates
        return keras.layers.Activation("relu", name="conv1_relu")(
            batch_norm(x, variant, "conv1_bn")
        )
    if spec.stem == "deep":
        # ResNet-D: three 3x3 convolutions replace the 7x7.
        for i, (f, s) in enumerate(((filters // 2, 2), (filters // 2, 1), (filters, 1)), 1):
            x = conv(x, f, 3, s, variant=variant, name=f"conv1_{i}_conv")
            x = batch_norm(x, variant, f"conv1_{i}_bn")
            x = keras.layers.Activation("relu", name=f"conv1_{i}_relu")(x)
    else:
        # Explicit padding, as keras.applications and torchvision pad (3 each side).
        x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = keras.layers.Conv2D(
            filters, 7, strides=2, use_bias=variant == "v1",
            kernel_initializer=kernel_initializer(), name="conv1_conv",
        )(x)
        if variant != "v2":
            x = batch_norm(x, variant, "conv1_bn")
            x = keras.layers.Activation("relu", name="conv1_relu")(x)
    if variant == "v2":
        # The raw convolution output is pooled: pad with -inf as torch does, not zeros.
        return PaddedMaxPooling2D(3, strides=2, pad=1, name="pool1_pool")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _stages(x, spec):
    """The residual stages, each a row of `SPECS`; the first block of a later stage
    halves the resolution."""
    total, index = sum(spec.repeats), 0
    for stage, (filters, count) in enumerate(zip(spec.stage_filters, spec.repeats)):
        for b in range(count):
            index += 1
            common = dict(
                variant=spec.variant,
                shortcut=spec.shortcut,
                se_ratio=spec.se_ratio,
                stochastic_depth_rate=spec.stochastic_depth_rate * index / total,
                zero_init_residual=spec.zero_init_residual,
                name=f"conv{stage + 2}_block{b + 1}",
            )
            stride = 2 if (b == 0 and stage > 0) else 1
            if spec.block == "basic":
                x = residual_block(x, int(round(filters * spec.width_multiplier)), stride,
                                   **common)
            else:
                width = int(round(spec.width_per_group * spec.width_multiplier))
                x = bottleneck_block(x, filters, stride, groups=spec.groups,
                                     width_per_group=width, **common)
    if spec.variant == "v2":
        x = batch_norm(x, spec.variant, "post_bn")
        x = keras.layers.Activation("relu", name="post_relu")(x)
    return x


def _head(x, spec):
    """The classifier, or the global pooling `spec.pooling` asks for."""
    if spec.include_top:
        head_dtype = None
        if keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16"):
            head_dtype = "float32"  # probabilities and logits stay float32 under mixed precision
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name="head_dropout")(x)
        return keras.layers.Dense(spec.classes, activation=spec.classifier_activation,
                                  dtype=head_dtype, name="predictions")(x)
    if spec.pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if spec.pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


_STAGE_END = re.compile(r"^conv(\d+)_block(\d+)_out$")


def stage_layers(model):
    """`{"C2": layer name, ...}`: the last `conv<stage>_block<n>_out` of each stage, or
    "post_relu" for the last stage of a pre-activation (v2) network; `{}` for models
    without ResNet stage names (keras.applications' ResNets have them too)."""
    last = {}
    for layer in model.layers:
        match = _STAGE_END.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block >= last.get(stage, (0, None))[0]:
                last[stage] = (block, layer.name)
    stages = {f"C{s}": name for s, (_, name) in sorted(last.items())}
    if stages and any(layer.name == "post_relu" for layer in model.layers):
        stages[f"C{max(last)}"] = "post_relu"
    return stages


def feature_extractor(model):
    """A model with the same inputs returning the stage outputs C2..C5 as a dict.

    Keys are "C2", "C3", "C4" and "C5" (strides 4, 8, 16 and 32 with an ImageNet
    stem); CIFAR networks have three stages, "C2".."C4" (strides 1, 2, 4), and
    ImageNet depths with the CIFAR stem have strides 1, 2, 4, 8. For variant "v2"
    the last stage's map is taken after the final BatchNorm and ReLU. The new
    model shares weights with `model`, so training one trains the other.
    """
    stages = stage_layers(model)
    if not stages:
        raise ValueError(
            f"Model '{model.name}' has no ResNet stage outputs (layers named "
            "'conv<stage>_block<n>_out'); pass a model built by build_resnet."
        )
    outputs = {key: model.get_layer(name).output for key, name in stages.items()}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_features")
