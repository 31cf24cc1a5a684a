"""`ResNetSpec`: what a ResNet is, its defaults filled and checked once.

Depths are data: `SPECS` answers "what is ResNet-101?" in one line. The rules that
fill what a caller leaves out (variant, stem, shortcut) live here and nowhere else;
the builder, the weight loaders and the trainer ask this module.

A leaf of the package: it imports Keras, the standard library and `resnet_tf.errors`
only, so every other module of `resnet_tf.models` may depend on it.
"""

import dataclasses
import math
import numbers
import re

import keras

from resnet_tf.errors import check_choice

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
VARIANTS = ("v1.5", "v1", "v2", "d")
SHORTCUTS = ("A", "B")
# The build_resnet arguments that decide which weights fit a network.
ARCHITECTURE = ("depth", "variant", "stem", "shortcut", "groups", "width_per_group",
                "width_multiplier", "se_ratio")

# Total downsampling of the stem; each stage after the first halves again.
_STEM_STRIDE = {"imagenet": 4, "deep": 4, "cifar": 1}


def default_variant(depth):
    """"v1.5", except "v2" for the CIFAR ResNet-164/1001 the pre-activation paper introduced."""
    block, _, family = SPECS[depth]
    return "v2" if (family == "cifar" and block == "bottleneck") else "v1.5"


def default_stem(depth=None, variant=None, small_images=None):
    """The stem a network gets when none is asked for.

    Args:
        depth: int or None. The network's depth; its family decides when
            `small_images` is None.
        variant: str or None. None means `default_variant(depth)`.
        small_images: bool or None. True for 32x32 data (the cifar preset): the 3x3/1
            "cifar" stem. False for ImageNet-sized inputs and for published ImageNet
            weights, whatever the new data's size: "imagenet", or "deep" for ResNet-D.
            None follows the depth: "cifar" for the CIFAR networks.

    Returns:
        str, one of `STEMS`.
    """
    if small_images is None:
        small_images = depth is not None and SPECS[depth][2] == "cifar"
    if small_images:
        return "cifar"
    if variant is None and depth is not None:
        variant = default_variant(depth)
    return "deep" if variant == "d" else "imagenet"


def default_shortcut(depth):
    """"A" for the CIFAR basic-block networks (the paper's parameter count), else "B"."""
    block, _, family = SPECS[depth]
    return "A" if (family == "cifar" and block == "basic") else "B"


def check_number(name, value, low, high, low_open=False):
    """Raises ValueError unless `value` is a real number in [low, high) ((low, ...) if open)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"({low}, {high if high is not None else 'inf'})" if low_open else f"[{low}, {high})"
        raise ValueError(f"{name} must be a number in {bound}. Received: {name}={value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """How a ResNet is built: `build_resnet`'s architecture arguments, filled and checked.

    Arguments mean what they mean for `build_resnet`; None for `variant`, `stem` and
    `shortcut` is replaced by the depth's default (`default_variant`, `default_stem`,
    `default_shortcut`). What does not shape the network (weights, input shape,
    preprocessing, name) is not part of it.

    Args:
        depth: int. One of `DEPTHS`.
        variant: str or None. One of `VARIANTS`.
        stem: str or None. One of `STEMS`.
        shortcut: str or None. One of `SHORTCUTS`.
        groups: int. ResNeXt cardinality (bottleneck only).
        width_per_group: int. ResNeXt width per group (bottleneck only).
        width_multiplier: number > 0. Wide ResNet factor.
        se_ratio: float in [0, 1). Squeeze-and-excitation ratio; 0 disables it.
        stochastic_depth_rate: float in [0, 1). Drop rate of the last block.
        zero_init_residual: bool. Zero-initialise each branch's last BatchNorm gamma.
        dropout: float in [0, 1). Dropout before the classifier.
        include_top: bool. Whether the network ends in the "predictions" classifier.
        pooling: None, "avg" or "max". Global pooling without the classifier.
        classes: int. Classes of the classifier.
        classifier_activation: str, registered callable or None. The classifier's
            activation; None gives logits.

    Raises:
        ValueError: an argument is out of range, in one sentence naming it.
    """

    depth: int
    variant: str | None = None
    stem: str | None = None
    shortcut: str | None = None
    groups: int = 1
    width_per_group: int = 64
    width_multiplier: float = 1
    se_ratio: float = 0.0
    stochastic_depth_rate: float = 0.0
    zero_init_residual: bool = False
    dropout: float = 0.0
    include_top: bool = True
    pooling: str | None = None
    classes: int = 1000
    classifier_activation: object = "softmax"

    def __post_init__(self):
        check_choice("depth", self.depth, DEPTHS)
        # Frozen: the defaults are filled once, here.
        if self.variant is None:
            object.__setattr__(self, "variant", default_variant(self.depth))
        check_choice("variant", self.variant, VARIANTS)
        if self.stem is None:
            object.__setattr__(self, "stem", default_stem(self.depth, self.variant))
        check_choice("stem", self.stem, STEMS)
        if self.shortcut is None:
            object.__setattr__(self, "shortcut", default_shortcut(self.depth))
        check_choice("shortcut", self.shortcut, SHORTCUTS)
        check_choice("pooling", self.pooling, POOLINGS)
        check_number("dropout", self.dropout, 0, 1)
        check_number("se_ratio", self.se_ratio, 0, 1)
        check_number("stochastic_depth_rate", self.stochastic_depth_rate, 0, 1)
        check_number("width_multiplier", self.width_multiplier, 0, None, low_open=True)
        for name in ("classes", "groups", "width_per_group"):
            _check_positive_int(name, getattr(self, name))
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError(
                f"ResNet-{self.depth} uses basic blocks, which support only groups=1 and "
                f"width_per_group=64. Received: groups={self.groups}, "
                f"width_per_group={self.width_per_group}"
            )

    @property
    def block(self):
        """"basic" or "bottleneck"."""
        return SPECS[self.depth][0]

    @property
    def repeats(self):
        """Blocks per stage."""
        return SPECS[self.depth][1]

    @property
    def stage_filters(self):
        """Base filters of each stage."""
        return STAGE_FILTERS[SPECS[self.depth][2]]

    @property
    def min_input_size(self):
        """The smallest height and width the network takes."""
        return _STEM_STRIDE[self.stem] * 2 ** (len(self.repeats) - 1)

    def default_input_shape(self, channels_last=True):
        """(224, 224, 3) or (32, 32, 3) (CIFAR stem) with the classifier, else (None, None, 3)."""
        shape = (None, None, 3)
        if self.include_top:
            shape = (32, 32, 3) if self.stem == "cifar" else (224, 224, 3)
        return shape if channels_last else (shape[2], *shape[:2])

    @property
    def default_name(self):
        """"resnet50", "resnext50_32x4d", "wide_resnet50_2", "resnet50d", ..."""
        if self.groups > 1:
            base = f"resnext{self.depth}_{self.groups}x{self.width_per_group}d"
        elif self.width_multiplier != 1:
            base = f"wide_resnet{self.depth}_{self.width_multiplier}"
        else:
            base = f"resnet{self.depth}"
        return base + {"v1.5": "", "v1": "", "v2": "v2", "d": "d"}[self.variant]

    def architecture(self):
        """{argument: value} of the `ARCHITECTURE` arguments: what decides which weights fit."""
        return {name: getattr(self, name) for name in ARCHITECTURE}

    def get_config(self):
        """JSON-serialisable arguments; `from_config` makes the same spec from them."""
        config = dataclasses.asdict(self)
        activation = config["classifier_activation"]
        if activation is not None and not isinstance(activation, str):
            config["classifier_activation"] = keras.saving.serialize_keras_object(activation)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("classifier_activation"), dict):
            config["classifier_activation"] = keras.saving.deserialize_keras_object(
                config["classifier_activation"])
        # Keys a newer version adds mean nothing to this one: the network is the same.
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


# The last layer of every residual block, as keras.applications names it too.
STAGE_END = re.compile(r"^conv(\d+)_block(\d+)_out$")


def _is_resnet(model):
    if isinstance(getattr(model, "spec", None), ResNetSpec):
        return True
    return any(STAGE_END.match(layer.name) for layer in getattr(model, "layers", ()))


def find_resnet(model):
    """The ResNet in `model`: `model` itself, or the first model nested in it.

    The standard transfer-learning shapes call the backbone as one layer of the user's
    model (`keras.Sequential([Rescaling(...), base, Dense(3)])`,
    `keras.Model(inp, Dense(...)(base(inp)))`); every helper that needs the ResNet's own
    layers asks here. A model counts as a ResNet when it carries a `ResNetSpec` or has
    ResNet stage layers (`conv<stage>_block<n>_out`, as keras.applications' ResNets).

    Returns:
        The `keras.Model`, or None when there is none.
    """
    if _is_resnet(model):
        return model
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            found = find_resnet(layer)
            if found is not None:
                return found
    return None


def spec_of(model):
    """The `ResNetSpec` a model was built from, or None (a model saved before specs were
    stored, or not built by `build_resnet`). A model holding a ResNet as one of its
    layers answers with that ResNet's (`find_resnet`)."""
    spec = getattr(find_resnet(model), "spec", None)
    return spec if isinstance(spec, ResNetSpec) else None
