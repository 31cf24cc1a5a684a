"""Fine-tuning from pretrained weights: `train.py --weights NAME|PATH [--freeze-epochs N]`.

The backbone comes from the weights, the classifier is new (sized for the data's
classes), and the architecture, input size and input preprocessing follow the weights
unless flags say otherwise. With `--freeze-epochs N` the first N epochs train the new
classifier alone; then everything but BatchNorm trains at `--finetune-lr`.
"""

import keras

from resnet_tf.errors import ConfigError
from resnet_tf.models import sources
from resnet_tf.models.resnet import build_resnet
from resnet_tf.models.spec import ARCHITECTURE, ResNetSpec, default_stem

CLASSIFIER = "predictions"


def weights_kind(weights):
    """"keras" for a `.keras` file or a run folder, "registry" for a registered name,
    "file" for any other weights file (torchvision, timm, keras.applications)."""
    if isinstance(weights, sources.WeightsSource):
        return weights.kind
    try:
        kind = sources.weights_kind(weights)
    except ValueError:
        kind = None
    if kind not in ("keras", "registry", "file"):
        raise ConfigError(f"--weights names nothing that exists. Received: --weights {weights}; "
                          "expected a registered name (resnet_tf.models.registry.list_weights()), "
                          "a weights file, a .keras file or a run folder.")
    return kind


def resolve(weights, known=None, download=False):
    """The `sources.WeightsSource` of `--weights` given the architecture arguments known so
    far; `ConfigError` if it names nothing."""
    weights_kind(weights)
    return sources.resolve_weights(weights, {k: v for k, v in (known or {}).items()
                                             if k in ARCHITECTURE}, download=download)


def weights_defaults(weights, depth=None):
    """What the weights decide unless flags say otherwise: architecture and image size.

    A value equal to `build_resnet`'s default for the depth is left out: a run's config
    spells that default None, so a resumed run compares equal.
    """
    source = resolve(weights, {"depth": depth})
    found = {k: v for k, v in (source.architecture or {}).items() if k in ARCHITECTURE}
    if "depth" in found:
        defaults = ResNetSpec(found["depth"]).architecture()
        found = {k: v for k, v in found.items()
                 if k in ("depth", "stem") or v != defaults[k]}
    if source.image_size:
        found["image_size"] = source.image_size
    if source.kind != "keras":
        # Published ImageNet weights have the ImageNet stem (the deep one for ResNet-D),
        # whatever size the new data has.
        found.setdefault("stem", default_stem(found.get("depth"), found.get("variant"),
                                              small_images=False))
    return found


def build_from_weights(weights, *, depth, input_shape, classes, classifier_activation,
                       **kwargs):
    """A new `build_resnet` model whose every layer but the classifier comes from `weights`
    (a registered name, a torchvision / timm / keras.applications file, or its
    `sources.WeightsSource`).

    Raises `ConfigError` when the weights do not fit the architecture, naming the first
    layer that differs; the preprocessing the weights were trained with goes into the model.
    """
    label = getattr(weights, "weights", weights)
    try:
        source = resolve(weights, dict(depth=depth, **kwargs), download=True)
        backbone = build_resnet(depth, include_top=False, weights=source, input_shape=input_shape,
                                preprocessing=source.preprocessing, **kwargs)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"--weights {label} does not fit the network: {error}") from None
    model = build_resnet(depth, input_shape=input_shape, classes=classes,
                         classifier_activation=classifier_activation,
                         preprocessing=source.preprocessing, **kwargs)
    copy_backbone(backbone, model, label)
    return model


def build_from_model(source, weights, *, depth, input_shape, classes, classifier_activation,
                     **kwargs):
    """Like `build_from_weights` from a loaded `.keras` model (a file or a run's best.keras);
    `weights` is the argument it was loaded from (or its `sources.WeightsSource`), whose
    input conversion the new model keeps."""
    preprocessing = resolve(weights).preprocessing
    model = build_resnet(depth, input_shape=input_shape, classes=classes,
                         classifier_activation=classifier_activation,
                         preprocessing=preprocessing, **kwargs)
    copy_backbone(source, model, getattr(weights, "weights", weights))
    return model


def copy_backbone(source, model, weights):
    """Copies every weighted layer of `model` but the classifier from the same-named
    layer of `source`; checks them all before assigning any."""
    plan = []
    names = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        if not layer.weights or layer.name == CLASSIFIER:
            continue
        other = names.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        theirs = None if other is None else [tuple(w.shape) for w in other.weights]
        if theirs != shapes:
            found = "no such layer" if other is None else f"shapes {theirs}"
            raise ConfigError(
                f"--weights {weights} does not fit the network at layer '{layer.name}'. "
                f"Received: {found}; expected shapes {shapes}. Pass the architecture flags "
                "the weights were trained with (--depth, --variant, --stem, ...).")
        plan.append((layer, other))
    for layer, other in plan:
        layer.set_weights(other.get_weights())


def set_backbone_trainable(model, trainable, train_batchnorm=False):
    """Freezes or unfreezes everything but the classifier; BatchNorm stays frozen (its
    statistics and parameters, in inference mode) unless `train_batchnorm`."""
    for layer in model.layers:
        if layer.name == CLASSIFIER or not layer.weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = bool(train_batchnorm and trainable)
        else:
            layer.trainable = trainable
