"""Functional builders for residual blocks: take a Keras tensor, return one.

`residual_block` is the two-3x3 "basic" block of ResNet-18/34 and the CIFAR
ResNets; `bottleneck_block` is the 1x1-3x3-1x1 block of ResNet-50 and deeper.
Both build every variant the library knows:

- "v1.5": post-activation, bias-free convolutions, stride on the 3x3 conv of the
  bottleneck (torchvision's and NVIDIA's "ResNet v1.5").
- "v1": the keras.applications layout: stride on the first 1x1 conv, conv biases,
  BatchNorm epsilon 1.001e-5 and momentum 0.99. Layer names match keras.applications.
- "v2": pre-activation (He et al., "Identity Mappings in Deep Residual Networks").
- "d": ResNet-D (He et al., "Bag of Tricks"): like v1.5, with an average-pool
  downsampling shortcut.

Layer names follow keras.applications (`conv2_block1_1_conv`, `..._add`, `..._out`)
when a `name` prefix is given, so weight files stay portable.
"""

import re

import keras

from resnet_tf.errors import check_choice
from resnet_tf.models.layers import BatchNormalization, StochasticDepth, ZeroPadShortcut
from resnet_tf.models.spec import SHORTCUTS, VARIANTS


def kernel_initializer():
    """He et al. 2015 ("Delving Deep into Rectifiers"), fan_out as torchvision uses it."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def channel_axis():
    return -1 if keras.config.image_data_format() == "channels_last" else 1


def batch_norm(x, variant, name, zero_gamma=False):
    """BatchNorm with the epsilon and momentum each variant was published with."""
    v1 = variant == "v1"
    return BatchNormalization(
        axis=channel_axis(),
        epsilon=1.001e-5 if v1 else 1e-5,
        momentum=0.99 if v1 else 0.9,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def conv(x, filters, kernel_size, stride=1, *, variant, name, groups=1, zero_init=False,
         dilation=1):
    """Conv2D with the variant's bias convention and the paper's initialisation.

    Strided convolutions pad explicitly, `kernel_size // 2` on every side as
    torchvision does: Keras' "same" would pad only the bottom and right of an even
    input, shifting every window by one pixel, so torchvision and timm weights
    would compute something else. Dilated convolutions have stride 1, where "same"
    pads `dilation` on every side, as torchvision's `padding=dilation`.
    """
    padding = "valid" if kernel_size == 1 else "same"
    if stride > 1 and kernel_size > 1:
        pad_name = None if name is None else re.sub(r"(_conv)?$", "_pad", name, count=1)
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=pad_name)(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        groups=groups,
        dilation_rate=dilation,
        use_bias=variant == "v1",
        kernel_initializer="zeros" if zero_init else kernel_initializer(),
        name=name,
    )(x)


def _name(prefix, suffix):
    return None if prefix is None else f"{prefix}_{suffix}"


def _relu(x, name):
    return keras.layers.Activation("relu", name=name)(x)


def squeeze_excite(x, ratio, name=None):
    """Squeeze-and-excitation (Hu et al.): re-weight channels by a gate from global context."""
    channels = x.shape[channel_axis()]
    hidden = max(1, int(channels * ratio))
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=_name(name, "se_squeeze"))(x)
    s = keras.layers.Conv2D(hidden, 1, activation="relu", name=_name(name, "se_reduce"))(s)
    s = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=_name(name, "se_expand"))(s)
    return keras.layers.Multiply(name=_name(name, "se_excite"))([x, s])


def _shortcut(x, out_filters, stride, *, variant, shortcut, name, dilation=1):
    """Identity when shapes agree, otherwise option A (zero-pad) or a projection."""
    in_filters = x.shape[channel_axis()]
    if stride == 1 and in_filters == out_filters:
        return x
    if shortcut == "A":
        return ZeroPadShortcut(out_filters, stride, name=_name(name, "0_pad"))(x)
    if variant == "d" and stride > 1:
        # ResNet-D: average-pool first, so the 1x1 projection sees every pixel.
        x = keras.layers.AveragePooling2D(
            stride, strides=stride, padding="same", name=_name(name, "0_pool")
        )(x)
        stride = 1
    elif variant == "d" and dilation > 1:
        # A dilated stage keeps a 2x2 pool at stride 1, as timm's AvgPool2dSame: zeros
        # padded after the last row and column count in the average.
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=_name(name, "0_pool_pad"))(x)
        x = keras.layers.AveragePooling2D(2, strides=1, name=_name(name, "0_pool"))(x)
    x = conv(x, out_filters, 1, stride, variant=variant, name=_name(name, "0_conv"))
    if variant == "v2":
        return x  # pre-activation: the shortcut sees an already normalised input
    return batch_norm(x, variant, _name(name, "0_bn"))


def _merge(shortcut, residual, *, variant, se_ratio, stochastic_depth_rate, name):
    if se_ratio:
        residual = squeeze_excite(residual, se_ratio, name=name)
    if stochastic_depth_rate:
        residual = StochasticDepth(stochastic_depth_rate, name=_name(name, "drop"))(residual)
    if variant == "v2":
        return keras.layers.Add(name=_name(name, "out"))([shortcut, residual])
    x = keras.layers.Add(name=_name(name, "add"))([shortcut, residual])
    return _relu(x, _name(name, "out"))


def _preactivate(x, variant, name):
    x = batch_norm(x, variant, _name(name, "preact_bn"))
    return _relu(x, _name(name, "preact_relu"))


def _preact_shortcut(x, preact, out_filters, stride, *, shortcut, name):
    """v2 projects the pre-activated input, as the paper does; identities keep x."""
    source = preact if shortcut == "B" else x
    short = _shortcut(source, out_filters, stride, variant="v2", shortcut=shortcut,
                      name=name)
    return x if short is source else short


def _check_block_args(variant, shortcut, stride, se_ratio, stochastic_depth_rate,
                      dilation=1, first_dilation=1):
    check_choice("variant", variant, VARIANTS)
    if shortcut is not None:
        check_choice("shortcut", shortcut, SHORTCUTS)
    if stride not in (1, 2):
        raise ValueError(f"Unsupported stride. Received: stride={stride}; expected 1 or 2.")
    for arg, value in (("dilation", dilation), ("first_dilation", first_dilation)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
    if stride > 1 and max(dilation, first_dilation) > 1:
        raise ValueError(
            "A dilated block replaces its stride: stride must be 1 when dilation > 1. "
            f"Received: stride={stride}, dilation={dilation}, first_dilation={first_dilation}"
        )
    if not 0 <= se_ratio <= 1:
        raise ValueError(f"se_ratio must be in [0, 1]. Received: se_ratio={se_ratio}")
    if not 0 <= stochastic_depth_rate < 1:
        raise ValueError(
            "stochastic_depth_rate must be in [0, 1). "
            f"Received: stochastic_depth_rate={stochastic_depth_rate}"
        )


def residual_block(
    x,
    filters,
    stride=1,
    *,
    variant="v1.5",
    shortcut="B",
    se_ratio=0.0,
    stochastic_depth_rate=0.0,
    zero_init_residual=False,
    dilation=1,
    first_dilation=None,
    name=None,
):
    """Basic residual block: two 3x3 convolutions and a shortcut.

    Args:
        x: Keras tensor, `(batch, height, width, channels)`.
        filters: int. Output channels of both convolutions (and of the block).
        stride: int, 1 or 2. Stride of the first 3x3 convolution.
        variant: str. One of "v1.5", "v1", "v2", "d" (see the module docstring).
        shortcut: str. When the shape changes: "B" projects with a 1x1 conv + BN,
            "A" subsamples and zero-pads channels (the CIFAR paper's option A).
        se_ratio: float. Squeeze-and-excitation bottleneck ratio; 0 disables it.
        stochastic_depth_rate: float. Probability of dropping the residual branch
            of an example while training; 0 disables it.
        zero_init_residual: bool. Start the branch's last BatchNorm gamma at zero
            so the block begins as an identity (Goyal et al., 2017).
        dilation: int. Dilation of the second 3x3 convolution (a dilated stage,
            whose stride is 1).
        first_dilation: int or None. Dilation of the first 3x3 convolution; None
            means `dilation`. The first block of a dilated stage keeps the previous
            stage's, as torchvision and timm do.
        name: str or None. Prefix of the block's layer names.

    Returns:
        Keras tensor with `filters` channels, spatially downsampled by `stride`.
    """
    first_dilation = dilation if first_dilation is None else first_dilation
    _check_block_args(variant, shortcut, stride, se_ratio, stochastic_depth_rate,
                      dilation, first_dilation)
    if variant == "v2":
        preact = _preactivate(x, variant, name)
        short = _preact_shortcut(x, preact, filters, stride, shortcut=shortcut, name=name)
        y = conv(preact, filters, 3, stride, variant=variant, name=_name(name, "1_conv"),
                 dilation=first_dilation)
        y = _relu(batch_norm(y, variant, _name(name, "1_bn")), _name(name, "1_relu"))
        y = conv(y, filters, 3, variant=variant, name=_name(name, "2_conv"),
                 zero_init=zero_init_residual, dilation=dilation)
    else:
        short = _shortcut(x, filters, stride, variant=variant, shortcut=shortcut, name=name,
                          dilation=dilation)
        y = conv(x, filters, 3, stride, variant=variant, name=_name(name, "1_conv"),
                 dilation=first_dilation)
        y = _relu(batch_norm(y, variant, _name(name, "1_bn")), _name(name, "1_relu"))
        y = conv(y, filters, 3, variant=variant, name=_name(name, "2_conv"),
                 dilation=dilation)
        y = batch_norm(y, variant, _name(name, "2_bn"), zero_gamma=zero_init_residual)
    return _merge(short, y, variant=variant, se_ratio=se_ratio,
                  stochastic_depth_rate=stochastic_depth_rate, name=name)


def bottleneck_block(
    x,
    filters,
    stride=1,
    *,
    variant="v1.5",
    groups=1,
    width_per_group=64,
    expansion=4,
    shortcut="B",
    se_ratio=0.0,
    stochastic_depth_rate=0.0,
    zero_init_residual=False,
    dilation=1,
    first_dilation=None,
    name=None,
):
    """Bottleneck block: 1x1 reduce, 3x3, 1x1 expand to `expansion * filters`.

    Args:
        x: Keras tensor, `(batch, height, width, channels)`.
        filters: int. Base width; the block outputs `expansion * filters` channels.
        stride: int, 1 or 2. On the 3x3 conv ("v1.5", "v2", "d") or the first 1x1
            conv ("v1", as keras.applications does it).
        variant: str. One of "v1.5", "v1", "v2", "d" (see the module docstring).
        groups: int. Groups of the 3x3 convolution (ResNeXt cardinality).
        width_per_group: int. Channels per group; the 3x3 conv has
            `int(filters * width_per_group / 64) * groups` channels, so 64 with
            groups=1 is ResNet, 128 is Wide ResNet-50-2, and groups=32 with 4 is
            ResNeXt-50 32x4d.
        expansion: int. Output channels per base channel.
        shortcut: str. "B" (projection) or "A" (zero-padded identity).
        se_ratio: float. Squeeze-and-excitation ratio; 0 disables it.
        stochastic_depth_rate: float. Drop probability of the residual branch.
        zero_init_residual: bool. Zero-initialise the branch's last BatchNorm gamma.
        dilation: int. The dilation of a dilated stage (stride 1); only the
            ResNet-D shortcut's pooling depends on it here.
        first_dilation: int or None. Dilation of the 3x3 convolution; None means
            `dilation`. The first block of a dilated stage keeps the previous
            stage's, as torchvision and timm do.
        name: str or None. Prefix of the block's layer names.

    Returns:
        Keras tensor with `expansion * filters` channels.
    """
    first_dilation = dilation if first_dilation is None else first_dilation
    _check_block_args(variant, shortcut, stride, se_ratio, stochastic_depth_rate,
                      dilation, first_dilation)
    if groups < 1 or width_per_group < 1:
        raise ValueError(
            "groups and width_per_group must be positive. "
            f"Received: groups={groups}, width_per_group={width_per_group}"
        )
    width = int(filters * (width_per_group / 64.0)) * groups
    out_filters = expansion * filters
    stride_1x1, stride_3x3 = (stride, 1) if variant == "v1" else (1, stride)

    if variant == "v2":
        preact = _preactivate(x, variant, name)
        short = _preact_shortcut(x, preact, out_filters, stride, shortcut=shortcut, name=name)
        y = preact
    else:
        short = _shortcut(x, out_filters, stride, variant=variant, shortcut=shortcut, name=name,
                          dilation=dilation)
        y = x
    y = conv(y, width, 1, stride_1x1, variant=variant, name=_name(name, "1_conv"))
    y = _relu(batch_norm(y, variant, _name(name, "1_bn")), _name(name, "1_relu"))
    y = conv(y, width, 3, stride_3x3, variant=variant, groups=groups, name=_name(name, "2_conv"),
             dilation=first_dilation)
    y = _relu(batch_norm(y, variant, _name(name, "2_bn")), _name(name, "2_relu"))
    if variant == "v2":
        y = conv(y, out_filters, 1, variant=variant, name=_name(name, "3_conv"),
                 zero_init=zero_init_residual)
    else:
        y = conv(y, out_filters, 1, variant=variant, name=_name(name, "3_conv"))
        y = batch_norm(y, variant, _name(name, "3_bn"), zero_gamma=zero_init_residual)
    return _merge(short, y, variant=variant, se_ratio=se_ratio,
                  stochastic_depth_rate=stochastic_depth_rate, name=name)
