"""`build_resnet`: every standard ResNet as a plain `keras.Model`.

Depths are data: `SPECS` answers "what is ResNet-101?" in one line, and one
`_stage` builder turns a row of it into layers.
"""

import math
import numbers
import re

import keras

from resnet_tf.errors import check_choice
from resnet_tf.models import blocks
from resnet_tf.models.blocks import batch_norm, bottleneck_block, conv, residual_block
from resnet_tf.models.layers import PaddedMaxPooling2D
from resnet_tf.models.normalization import preprocessing_layer, weights_preprocessing

# depth: (block, repeats per stage, family). ImageNet networks have four stages of
# 64/128/256/512 base filters; the CIFAR networks (He et al. 2015, section 4.2, and
# the pre-activation paper's 164/1001) have three of 16/32/64.
SPECS = {
    18: ("basic", (2, 2, 2, 2), "imagenet"),
    34: ("basic", (3, 4, 6, 3), "imagenet"),
    50: ("bottleneck", (3, 4, 6, 3), "imagenet"),
    101: ("bottleneck", (3, 4, 23, 3), "imagenet"),
    152: ("bottleneck", (3, 8, 36, 3), "imagenet"),
    200: ("bottleneck", (3, 24, 36, 3), "imagenet"),
    20: ("basic", (3, 3, 3), "cifar"),
    32: ("basic", (5, 5, 5), "cifar"),
    44: ("basic", (7, 7, 7), "cifar"),
    56: ("basic", (9, 9, 9), "cifar"),
    110: ("basic", (18, 18, 18), "cifar"),
    164: ("bottleneck", (18, 18, 18), "cifar"),
    1001: ("bottleneck", (111, 111, 111), "cifar"),
}
DEPTHS = tuple(SPECS)
STAGE_FILTERS = {"imagenet": (64, 128, 256, 512), "cifar": (16, 32, 64)}
STEMS = ("imagenet", "cifar", "deep")
POOLINGS = (None, "avg", "max")

# Total downsampling of the stem; each stage after the first halves again.
_STEM_STRIDE = {"imagenet": 4, "deep": 4, "cifar": 1}


def default_variant(depth):
    """"v1.5", except "v2" for the CIFAR ResNet-164/1001 the pre-activation paper introduced."""
    block, _, family = SPECS[depth]
    return "v2" if (family == "cifar" and block == "bottleneck") else "v1.5"


def _defaults(depth, variant, stem, shortcut):
    block, _, family = SPECS[depth]
    if variant is None:
        variant = default_variant(depth)
    blocks.check_choice("variant", variant, blocks.VARIANTS)
    if stem is None:
        stem = "cifar" if family == "cifar" else ("deep" if variant == "d" else "imagenet")
    check_choice("stem", stem, STEMS)
    if shortcut is None:
        # Option A keeps the CIFAR basic-block networks at the paper's parameter count.
        shortcut = "A" if (family == "cifar" and block == "basic") else "B"
    check_choice("shortcut", shortcut, blocks.SHORTCUTS)
    return variant, stem, shortcut


def _stem(x, stem, filters, variant):
    if stem == "cifar":
        x = conv(x, filters, 3, variant=variant, name="conv1_conv")
        if variant == "v2":
            return x  # the first block pre-activates
        return keras.layers.Activation("relu", name="conv1_relu")(
            batch_norm(x, variant, "conv1_bn")
        )
    if stem == "deep":
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
            kernel_initializer=blocks.kernel_initializer(), name="conv1_conv",
        )(x)
        if variant != "v2":
            x = batch_norm(x, variant, "conv1_bn")
            x = keras.layers.Activation("relu", name="conv1_relu")(x)
    if variant == "v2":
        # The raw convolution output is pooled: pad with -inf as torch does, not zeros.
        return PaddedMaxPooling2D(3, strides=2, pad=1, name="pool1_pool")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _input(input_tensor, input_shape, default_shape, min_size, channels_last):
    if input_shape is None:
        input_shape = default_shape
    if len(input_shape) != 3:
        raise ValueError(
            "input_shape must have 3 dimensions (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    spatial = input_shape[:2] if channels_last else input_shape[1:]
    if any(d is not None and d < min_size for d in spatial):
        raise ValueError(
            f"Input size must be at least {min_size}x{min_size} for this network. "
            f"Received: input_shape={input_shape}"
        )
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="input_layer"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, keras.utils.get_source_inputs(input_tensor)
    x = keras.Input(tensor=input_tensor, shape=input_shape)
    return x, None


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
        weights: None, a weights file saved by this library (`.weights.h5` or
            `.keras`), a keras.applications ResNet50/101/152 HDF5 file (variant
            "v1"), or "imagenet" to fetch keras.applications' published file.
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
        A `keras.Model`.
    """
    check_choice("depth", depth, DEPTHS)
    variant, stem, shortcut = _defaults(depth, variant, stem, shortcut)
    check_choice("pooling", pooling, POOLINGS)
    _check_number("dropout", dropout, 0, 1)
    _check_number("se_ratio", se_ratio, 0, 1)
    _check_number("stochastic_depth_rate", stochastic_depth_rate, 0, 1)
    _check_number("width_multiplier", width_multiplier, 0, None, low_open=True)
    for argument, value in (("classes", classes), ("groups", groups),
                            ("width_per_group", width_per_group)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{argument} must be a positive integer. "
                             f"Received: {argument}={value!r}")
    if input_shape is not None and not isinstance(input_shape, (tuple, list)):
        raise ValueError("input_shape must be a tuple (height, width, channels). Received: "
                         f"input_shape={input_shape!r}")
    block, repeats, family = SPECS[depth]
    if block == "basic" and (groups != 1 or width_per_group != 64):
        raise ValueError(
            f"ResNet-{depth} uses basic blocks, which support only groups=1 and "
            f"width_per_group=64. Received: groups={groups}, width_per_group={width_per_group}"
        )

    channels_last = keras.config.image_data_format() == "channels_last"
    min_size = _STEM_STRIDE[stem] * 2 ** (len(repeats) - 1)
    default_shape = (None, None, 3)
    if include_top:
        default_shape = (32, 32, 3) if stem == "cifar" else (224, 224, 3)
    if not channels_last:
        default_shape = (default_shape[2], *default_shape[:2])
    img_input, source_inputs = _input(input_tensor, input_shape, default_shape, min_size,
                                      channels_last)
    if isinstance(preprocessing, str) and preprocessing == "auto":
        preprocessing = weights_preprocessing(weights, depth, variant)
    model_input = img_input
    adapter = preprocessing_layer(preprocessing)
    if adapter is not None:
        img_input = adapter(img_input)

    stage_filters = STAGE_FILTERS[family]
    if stem == "cifar" and family == "imagenet":
        stem_filters = 64
    else:
        stem_filters = stage_filters[0]
    x = _stem(img_input, stem, stem_filters, variant)

    total_blocks = sum(repeats)
    index = 0
    for stage, (filters, count) in enumerate(zip(stage_filters, repeats)):
        for b in range(count):
            index += 1
            stride = 2 if (b == 0 and stage > 0) else 1
            common = dict(
                variant=variant,
                shortcut=shortcut,
                se_ratio=se_ratio,
                stochastic_depth_rate=stochastic_depth_rate * index / total_blocks,
                zero_init_residual=zero_init_residual,
                name=f"conv{stage + 2}_block{b + 1}",
            )
            if block == "basic":
                x = residual_block(x, int(round(filters * width_multiplier)), stride, **common)
            else:
                x = bottleneck_block(
                    x, filters, stride, groups=groups,
                    width_per_group=int(round(width_per_group * width_multiplier)), **common,
                )
    if variant == "v2":
        x = batch_norm(x, variant, "post_bn")
        x = keras.layers.Activation("relu", name="post_relu")(x)

    head_dtype = None
    if keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16"):
        head_dtype = "float32"  # probabilities and logits stay float32 under mixed precision
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Dense(
            classes, activation=classifier_activation, dtype=head_dtype, name="predictions"
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = source_inputs if source_inputs is not None else model_input
    model = keras.Model(inputs, x, name=name or _default_name(depth, variant, groups,
                                                               width_per_group, width_multiplier))
    if weights is not None:
        from resnet_tf.models.weights import load_weights

        load_weights(model, weights, depth=depth, variant=variant, include_top=include_top,
                     classes=classes)
    return model


def _check_number(name, value, low, high, low_open=False):
    """Raises ValueError unless `value` is a real number in [low, high) ((low, ...) if open)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"({low}, {high if high is not None else 'inf'})" if low_open else f"[{low}, {high})"
        raise ValueError(f"{name} must be a number in {bound}. Received: {name}={value!r}")


def _default_name(depth, variant, groups, width_per_group, width_multiplier):
    if groups > 1:
        base = f"resnext{depth}_{groups}x{width_per_group}d"
    elif width_multiplier != 1:
        base = f"wide_resnet{depth}_{width_multiplier}"
    else:
        base = f"resnet{depth}"
    return base + {"v1.5": "", "v1": "", "v2": "v2", "d": "d"}[variant]


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
