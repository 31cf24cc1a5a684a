"""The network that is served: a copy of the model with BatchNorm folded into the
convolutions, in the serving precision, and the checks every exporter applies.

Used by the SavedModel and the TFLite exporters alike, so both serve the same numbers.
"""

import keras
import numpy as np

from resnet_tf.data.preprocessing import PRESETS, default_preset
from resnet_tf.errors import ExportError, check_choice
from resnet_tf.models.normalization import WeightsNormalization
from resnet_tf.models.sources import recorded_transform
from resnet_tf.models.transform import EvalTransform, transform_of
from resnet_tf.runs import default_class_names, describe_non_finite, non_finite_weights

# Serving precision -> the Keras dtype policy of the network's hidden layers.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_serving_args(model, *, class_names=None, image_size=None, preset=None,
                       transform=None, run=None):
    """The class names and `EvalTransform` an export of `model` will use, checked.

    Defaults: "class_0", "class_1", ...; the transform `serving_transform` resolves.
    Raises `ExportError` for a mismatch with the model, and for non-finite weights
    (a model answering NaN is never served).

    Returns:
        `(class_names, transform)`.
    """
    broken = non_finite_weights(model)
    if broken:
        raise ExportError(
            f"The model cannot be exported: {describe_non_finite(broken, len(model.weights))}. "
            "Received: a diverged model; expected finite weights. Nothing was exported.")
    classes = model.output_shape[-1]
    class_names = ([str(c) for c in class_names] if class_names is not None
                   else default_class_names(classes))
    blank = [n for n in class_names if not n.strip() or not n.isprintable()]
    if blank:
        raise ExportError(
            f"Class names must be printable text on one line. Received: {blank[0]!r}; "
            "expected a name such as 'cat' (rename the class folder).")
    if len(class_names) != classes:
        raise ExportError(
            f"The model has {classes} outputs but {len(class_names)} class names were given. "
            f"Received: {len(class_names)} class names; expected {classes}, one per output.")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ExportError(f"image_size must be a positive integer. Received: "
                          f"image_size={image_size!r}")
    if preset is not None:
        check_choice("preset", preset, PRESETS, error=ExportError)
    transform = serving_transform(model, image_size=image_size, preset=preset,
                                  transform=transform, run=run)
    input_size = tuple(model.input_shape[1:3])
    if None not in input_size and input_size != (transform.crop, transform.crop):
        raise ExportError(
            f"image_size={transform.crop} does not match the model's input size {input_size}. "
            f"Received: image_size={transform.crop}; expected {input_size[0]}.")
    return class_names, transform


def serving_transform(model, *, image_size=None, preset=None, transform=None, run=None):
    """The `EvalTransform` that evaluates and serves `model`: one answer for every command.

    Order: `transform`; else the one the model carries (`transform_of`: its weights' or
    its run's); else its run's record (`run`: the run's config, `runs.settings_beside`);
    else `default_preset` at the model's input size. The flags override what is found:
    `preset` gives that preset's transform (at `image_size`, else the found size),
    `image_size` alone the found transform at that size (its crop fraction and
    interpolation kept, as timm changes a test size).

    Raises:
        ExportError: nothing tells the size (a model of any input size, no run, no flag).
    """
    found = EvalTransform.from_config(transform) if transform is not None else (
        transform_of(model) or recorded_transform(run))
    if found is None:
        size = image_size or model.input_shape[1]
        if size is None:
            raise ExportError("The model accepts any input size and carries no transform. "
                              "Received: image_size=None; expected the size to serve, e.g. "
                              "image_size=224 (--image-size 224).")
        found = EvalTransform.for_preset(preset or default_preset(size), size)
    if preset is not None:
        return EvalTransform.for_preset(preset, image_size or found.crop)
    return found if image_size is None else found.at_size(image_size)


def has_linear_head(model):
    """True when the model ends in logits (a linear layer), so exporters add a softmax."""
    return getattr(model.layers[-1], "activation", None) is keras.activations.linear


def check_precision(precision):
    check_choice("precision", precision, tuple(PRECISIONS), error=ExportError)


def inference_model(model, fold_batchnorm=True, precision="float32"):
    """A copy of `model` for inference, each conv->BatchNorm pair folded into one conv.

    Layers are rebuilt from their configs with the dtype policy of `precision`
    ("float32", "bfloat16" or "float16"), whatever policy the model was trained
    under; Dense layers (the classifier) always compute in float32. Weights (always
    stored in float32) are copied. A BatchNorm is folded when its input comes from a
    linear Conv2D whose output feeds nothing else: the conv gets kernel `W * g` and
    bias `(b - mean) * g + beta` with `g = gamma / sqrt(var + eps)`, computed in
    float64, and the BatchNorm becomes an identity. The original model is not modified.
    """
    check_precision(precision)
    policy = PRECISIONS[precision]
    pairs = _conv_bn_pairs(model) if fold_batchnorm else {}
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in folded_bns:
            # Lambda accepts the `training`/`mask` arguments the graph passes to a BN.
            return keras.layers.Lambda(lambda x: x, name=layer.name, dtype=policy)
        # The classifier, and the input-scale conversion of pretrained weights (values up
        # to +-150), compute in float32 whatever the serving precision.
        dtype = "float32" if isinstance(layer, (keras.layers.Dense, WeightsNormalization)) else policy
        config = {**layer.get_config(), "dtype": dtype}
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bns or not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(_fold(layer, pairs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return copy


def _conv_bn_pairs(model):
    """{conv layer name: BatchNormalization layer} for every foldable pair."""
    consumers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers[id(producer)] = consumers.get(id(producer), 0) + 1
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if getattr(layer, "renorm", False) or getattr(layer, "synchronized", False):
            continue
        producer = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        conv_axis = -1 if getattr(producer, "data_format", None) == "channels_last" else 1
        if (
            type(producer) is keras.layers.Conv2D
            and consumers[id(producer)] == 1
            and producer.activation is keras.activations.linear
            and layer.axis % 4 == conv_axis % 4
        ):
            pairs[producer.name] = layer
    return pairs


def _fold(conv, bn):
    kernel = conv.kernel.numpy().astype(np.float64)
    bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else 0.0
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else 1.0
    beta = bn.beta.numpy().astype(np.float64) if bn.center else 0.0
    mean = bn.moving_mean.numpy().astype(np.float64)
    scale = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    # The kernel's last axis is the output channel, whatever the data format.
    return [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
