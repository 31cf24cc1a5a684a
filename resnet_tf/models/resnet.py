"""`build_resnet`: every standard ResNet as a functional `keras.Model` that knows its spec.

`ResNetSpec` (spec.py) says what the network is; the short builders here turn it into
layers, and `ResNet` keeps it in the model's config so a saved model knows how it was
built.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np

from resnet_tf.models.blocks import (
    batch_norm,
    bottleneck_block,
    channel_axis,
    conv,
    kernel_initializer,
    residual_block,
)
from resnet_tf.models.layers import PaddedMaxPooling2D
from resnet_tf.models.normalization import WeightsNormalization, preprocessing_layer
from resnet_tf.models.sources import resolve_preprocessing, resolve_weights

# Where these names were before spec.py owned them; kept importable from here.
from resnet_tf.models.spec import (  # noqa: F401
    DEPTHS,
    POOLINGS,
    SPECS,
    STAGE_END,
    STAGE_FILTERS,
    STEMS,
    ResNetSpec,
    default_variant,
    find_resnet,
    spec_of,
)
from resnet_tf.models.transform import EvalTransform
from resnet_tf.models.weights import load_weights


@keras.saving.register_keras_serializable(package="resnet_tf")
class ResNet(keras.Model):
    """A functional `keras.Model` that carries the `ResNetSpec` it was built from.

    Built like any functional model, `ResNet(inputs, outputs, spec=spec)`, and used
    like one. Its config is the functional config plus "spec" and "transform", so a
    `.keras` file rebuilds the exact graph (per-layer dtype policies included), the spec
    and the evaluation transform with it.

    Args:
        *args: `keras.Model`'s functional arguments (`inputs`, `outputs`).
        spec: `ResNetSpec`, its config dict, or None.
        transform: `EvalTransform`, its config dict, or None: how images are resized,
            cropped and normalised for this model at evaluation (its weights' or its run's).
        **kwargs: `keras.Model`'s keyword arguments (`name`, `trainable`).
    """

    def __init__(self, *args, spec=None, transform=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = ResNetSpec.from_config(spec) if isinstance(spec, dict) else spec
        self.transform = None if transform is None else EvalTransform.from_config(transform)

    def get_config(self):
        config = super().get_config()
        if self.spec is not None:
            config["spec"] = self.spec.get_config()
        if self.transform is not None:
            config["transform"] = self.transform.get_config()
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
            checkpoint; see `sources.resolve_weights`. With `channels != 3` in
            `input_shape` the first convolution of the 3-channel weights is adapted
            as timm's `adapt_input_conv` does (`adapt_input_conv`).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: tuple. `(height, width, channels)`; None dimensions allowed.
            Defaults to (224, 224, 3) (ImageNet stems) or (32, 32, 3) (CIFAR stem)
            with `include_top=True`, and (None, None, 3) without it. Any positive
            number of channels: 1 for grayscale, 4 or more for multispectral images.
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
        preprocessing: "auto", None, "caffe", a dict with `mode`, `mean`, `std`, a
            registered weights name or an `EvalTransform`. The model always takes
            `(pixel / 255 - MEAN) / STD` RGB images (resnet_tf's standard scale); weights
            trained on another scale get a `WeightsNormalization` layer after the input
            that converts to theirs. "auto" follows `weights`: "caffe" for
            keras.applications' files, a registered name's own preprocessing, the
            standard scale otherwise. A registered name (or an `EvalTransform`) means
            that entry's normalisation *and* its evaluation transform (resize, crop,
            interpolation), so a file downloaded by hand gets its source's transform.
            The model carries the transform (`transform_of`), scaled to its input size,
            and evaluation, prediction and the export apply it. The conversion is
            defined for RGB only: with channels != 3 "auto" adds no layer and the
            model takes its input as given, so normalise it as the weights' training
            data was (for the standard scale, timm's rule is the mean of the RGB
            statistics: `(pixel / 255 - 0.449) / 0.226`); another value is an error.
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
    channels = x.shape[channel_axis()]
    side = x.shape[1] if channel_axis() == -1 else x.shape[2]
    source = resolve_weights(weights, spec)
    auto = isinstance(preprocessing, str) and preprocessing == "auto"
    normalization, transform = resolve_preprocessing(preprocessing, source, spec)
    if channels != 3:  # images are decoded to RGB: other channels are fed as they are
        normalization = None if auto else normalization
        transform = None
    adapter = preprocessing_layer(normalization)
    if adapter is not None:
        if channels != 3:
            raise ValueError(
                "preprocessing converts RGB images and the input has "
                f"{channels} channels. Received: preprocessing={preprocessing!r}, "
                f"input channels={channels}; expected preprocessing='auto' or None, with "
                "the input normalised as the weights expect."
            )
        x = adapter(x)
    x = _head(_stages(_stem(x, spec), spec), spec)
    if transform is not None and side is not None:
        transform = transform.at_size(side)  # the crop the network takes, same fraction
    model = ResNet(inputs, x, spec=spec, transform=transform, name=name or spec.default_name)
    if source is not None and channels != 3:
        _load_adapted(model, source, spec)
    elif source is not None:
        load_weights(model, source)
    return model


def adapt_input_conv(kernel, channels):
    """A first-convolution kernel trained on RGB, for `channels` input channels.

    timm's `adapt_input_conv`: one channel sums the RGB kernels (a gray image replicated
    to RGB gives the same response); other counts repeat the RGB kernel
    `ceil(channels / 3)` times, keep the first `channels` and scale by `3 / channels`
    so the response keeps its magnitude.

    Args:
        kernel: array `(height, width, in_channels, filters)` (Keras' layout).
        channels: int. The new number of input channels.

    Returns:
        numpy array `(height, width, channels, filters)` of the kernel's dtype.
    """
    kernel = np.asarray(kernel)
    before = kernel.shape[2]
    if channels == before:
        return kernel
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True, dtype="float32").astype(kernel.dtype)
    repeat = math.ceil(channels / before)
    tiled = np.tile(kernel.astype("float32"), (1, 1, repeat, 1))[:, :, :channels]
    return (tiled * (before / channels)).astype(kernel.dtype)


def _load_adapted(model, source, spec):
    """Loads 3-channel weights into `model`, whose input has another channel count.

    The weights go into the RGB network first, with every loader's checks, so any
    weights argument works; the layers are then copied by name, the first convolution
    through `adapt_input_conv`.
    """
    shape = list(model.inputs[0].shape[1:])
    shape[-1 if channel_axis() == -1 else 0] = 3
    arguments = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    rgb = build_resnet(**arguments, input_shape=tuple(shape), weights=source)
    channels = model.inputs[0].shape[channel_axis()]
    for layer in rgb.layers:
        values = layer.get_weights()
        if not values:
            continue
        target = model.get_layer(layer.name)
        if values[0].shape != tuple(target.weights[0].shape):  # only the first conv's
            values[0] = adapt_input_conv(values[0], channels)
        target.set_weights(values)


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
    channels = input_shape[2] if channels_last else input_shape[0]
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(
            "input_shape must have a positive number of channels. Received: "
            f"input_shape={tuple(input_shape)}; expected e.g. (224, 224, 3), or "
            "(224, 224, 1) for grayscale images."
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


def _stem_stride(spec):
    """Downsampling of the stem: 4 (7x7/2 conv and max-pool, or the deep stem) or 1."""
    return spec.min_input_size // 2 ** (len(spec.repeats) - 1)


def _dilations(spec, output_stride):
    """(stride, first block's dilation, dilation) of each stage, timm's rule: once the
    network reaches `output_stride`, a later stage trades its stride 2 for dilation."""
    reached, dilation, plan = _stem_stride(spec), 1, []
    for stage in range(len(spec.repeats)):
        stride, previous = (1 if stage == 0 else 2), dilation
        if reached >= output_stride:
            dilation, stride = dilation * stride, 1
        else:
            reached *= stride
        plan.append((stride, previous, dilation))
    return plan


def _stages(x, spec, output_stride=None):
    """The residual stages, each a row of `SPECS`; the first block of a later stage
    halves the resolution, or dilates the stage once `output_stride` is reached."""
    total, index = sum(spec.repeats), 0
    plan = _dilations(spec, output_stride or spec.min_input_size)
    for stage, (filters, count) in enumerate(zip(spec.stage_filters, spec.repeats)):
        stage_stride, first_dilation, dilation = plan[stage]
        for b in range(count):
            index += 1
            common = dict(
                variant=spec.variant,
                shortcut=spec.shortcut,
                se_ratio=spec.se_ratio,
                stochastic_depth_rate=spec.stochastic_depth_rate * index / total,
                zero_init_residual=spec.zero_init_residual,
                dilation=dilation,
                first_dilation=first_dilation if b == 0 else dilation,
                name=f"conv{stage + 2}_block{b + 1}",
            )
            stride = stage_stride if b == 0 else 1
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


# The stem's last map before its pooling (index 0 of `out_indices`, timm's "act1").
_STEM_OUTPUTS = ("conv1_3_relu", "conv1_relu", "conv1_conv")


def stage_layers(model):
    """`{"C2": layer name, ...}`: the last `conv<stage>_block<n>_out` of each stage, or
    "post_relu" for the last stage of a pre-activation (v2) network; `{}` for models
    without ResNet stage names (keras.applications' ResNets have them too).

    For a model holding the ResNet as a layer, the names are those of the nested
    ResNet's layers (`find_resnet(model).get_layer(name)`).
    """
    model = find_resnet(model) or model
    last = {}
    for layer in model.layers:
        match = STAGE_END.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block >= last.get(stage, (0, None))[0]:
                last[stage] = (block, layer.name)
    stages = {f"C{s}": name for s, (_, name) in sorted(last.items())}
    if stages and any(layer.name == "post_relu" for layer in model.layers):
        stages[f"C{max(last)}"] = "post_relu"
    return stages


def feature_extractor(model, out_indices=None, output_stride=None):
    """A model with the same inputs returning feature maps of the ResNet as a dict.

    Without arguments the keys are "C2", "C3", "C4" and "C5" (strides 4, 8, 16 and 32
    with an ImageNet stem); CIFAR networks have three stages, "C2".."C4" (strides 1,
    2, 4), and ImageNet depths with the CIFAR stem have strides 1, 2, 4, 8. For
    variant "v2" the last stage's map is taken after the final BatchNorm and ReLU.
    The returned model's `feature_info` lists, in `out_indices` order,
    `{"name", "index", "layer", "channels", "stride"}` of each map (as timm's
    `feature_info`; strides relative to the ResNet's own input).

    `model` may also hold the ResNet as a layer (after preprocessing layers, before a
    head): the feature model then starts from `model`'s inputs through the layers in
    front of the ResNet.

    Args:
        model: `keras.Model` built by `build_resnet` (or a keras.applications ResNet),
            or a model holding one as a layer.
        out_indices: tuple of ints or None. Which maps, timm's numbering: 0 is the stem
            ("C1", before its max-pool), 1..4 the stages ("C2".."C5"; 1..3 for the
            CIFAR networks). None means every stage, `(1, 2, 3, 4)` or `(1, 2, 3)`.
        output_stride: int or None. The stride of the last map: the network's own (32
            with an ImageNet stem; None means that), or half or a quarter of it (16,
            8), for which the last stages trade their stride for dilated 3x3
            convolutions (dilation 2, then 4) as torchvision's
            `replace_stride_with_dilation` and timm's `output_stride` do.

    Returns:
        A `keras.Model`. With the network's own stride it shares its weights with
        `model`, so training one trains the other; a dilated one is rebuilt from the
        model's `ResNetSpec` with copies of its weights.

    Raises:
        ValueError: no ResNet in `model`, an index out of range, an output stride the
            network cannot reach, or dilation asked of a model without a spec.
    """
    resnet = find_resnet(model)
    if resnet is None:
        raise ValueError(
            f"Model '{model.name}' has no ResNet stage outputs (layers named "
            "'conv<stage>_block<n>_out'); pass a model built by build_resnet."
        )
    if resnet is not model:
        return _nested_features(model, resnet, out_indices, output_stride)
    spec = spec_of(model)
    stages = stage_layers(model)
    out_indices = _check_out_indices(model, out_indices, len(stages))
    stem_stride = _stem_stride(spec) if spec is not None else (
        4 if any(layer.name == "pool1_pool" for layer in model.layers) else 1)
    natural = stem_stride * 2 ** (len(stages) - 1)
    output_stride = _check_output_stride(model, output_stride, natural, spec)
    source = model if output_stride == natural else _dilated(model, spec, output_stride)
    names = {**stages}
    stem = next((n for n in _STEM_OUTPUTS if any(lay.name == n for lay in source.layers)), None)
    if stem is not None:
        names["C1"] = stem
    info, outputs = [], {}
    for index in out_indices:
        key = f"C{index + 1}"
        if key not in names:
            raise ValueError(f"Model '{model.name}' has no stem layer for out_indices=0 "
                             f"(one of {', '.join(_STEM_OUTPUTS)}). Received: "
                             f"out_indices={out_indices}; expected indices from 1.")
        output = source.get_layer(names[key]).output
        outputs[key] = output
        stride = (stem_stride // 2 or 1) if index == 0 else min(
            stem_stride * 2 ** (index - 1), output_stride)
        info.append({"name": key, "index": index, "layer": names[key],
                     "channels": output.shape[channel_axis()], "stride": stride})
    inputs = source.inputs[0] if len(source.inputs) == 1 else source.inputs
    features = keras.Model(inputs, outputs, name=f"{model.name}_features")
    features.feature_info = info
    return features


def _check_out_indices(model, out_indices, stages):
    if out_indices is None:
        return tuple(range(1, stages + 1))
    if isinstance(out_indices, numbers.Integral) and not isinstance(out_indices, bool):
        out_indices = (out_indices,)
    valid = isinstance(out_indices, (tuple, list)) and out_indices and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i <= stages
        for i in out_indices) and len(set(out_indices)) == len(out_indices)
    if not valid:
        raise ValueError(
            f"out_indices must be distinct stage indices of '{model.name}', 0 (stem) to "
            f"{stages}. Received: out_indices={out_indices!r}; expected e.g. "
            f"{tuple(range(1, stages + 1))}."
        )
    return tuple(int(i) for i in out_indices)


def _check_output_stride(model, output_stride, natural, spec):
    if output_stride is None:
        return natural
    # Dilating more than the last two stages costs too much memory to be useful
    # (DeepLab, timm and Model Garden stop at 8 for ImageNet networks).
    reachable = tuple(s for s in (natural, natural // 2, natural // 4) if s >= 1)
    if output_stride not in reachable or isinstance(output_stride, bool):
        raise ValueError(
            f"'{model.name}' cannot reach output_stride={output_stride!r}: its own stride "
            f"is {natural} and only its last two stages can be dilated. Received: "
            f"output_stride={output_stride!r}; expected one of {reachable}."
        )
    if output_stride != natural and spec is None:
        raise ValueError(
            f"A dilated network is rebuilt from the model's ResNetSpec and '{model.name}' "
            f"has none (saved before specs were stored, or not built by build_resnet). "
            f"Received: output_stride={output_stride}; expected output_stride={natural}, "
            "or a model built by build_resnet."
        )
    return int(output_stride)


def _dilated(model, spec, output_stride):
    """`model`'s stages rebuilt with dilation, holding copies of its weights (the
    layers keep their names and shapes; only strides and dilations change)."""
    inputs = keras.Input(shape=model.inputs[0].shape[1:], name="input_layer")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, WeightsNormalization):  # no weights: the same layer serves
            x = layer(x)
    x = _stages(_stem(x, spec), spec, output_stride)
    network = keras.Model(inputs, x, name=model.name)
    for layer in network.layers:
        values = layer.get_weights() and model.get_layer(layer.name).get_weights()
        if values:
            layer.set_weights(values)
    return network


def _nested_features(model, resnet, out_indices, output_stride):
    """`feature_extractor` of a model holding `resnet` as a (possibly nested) layer:
    the ResNet's feature model, called where `model` calls the layer holding it."""
    child = next(layer for layer in model.layers
                 if layer is resnet or (isinstance(layer, keras.Model)
                                        and find_resnet(layer) is resnet))
    inner = feature_extractor(child, out_indices=out_indices, output_stride=output_stride)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model '{model.name}' has no inputs yet. Received: an unbuilt model; expected "
            "a model with an Input (keras.Input or `model.build(input_shape)`)."
        )
    inputs = inputs[0] if len(inputs) == 1 else inputs
    features = keras.Model(inputs, inner(_call_input(model, child)),
                           name=f"{model.name}_features")
    features.feature_info = inner.feature_info
    return features


def _call_input(model, layer):
    """The tensor of `model`'s graph that `layer` is called on."""
    stack, seen = list(keras.tree.flatten(model.outputs)), set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if operation is layer:
            inputs = node.input_tensors
            return inputs[0] if len(inputs) == 1 else inputs
        stack.extend(node.input_tensors)
    raise ValueError(f"Layer '{layer.name}' is not called in model '{model.name}'.")
