"""Pretrained weights on images of any channel count: `build_resnet(input_shape=(H, W, C))`.

The first convolution is adapted as timm's `adapt_input_conv` does; a grayscale image
must then give what the RGB network gives on that image replicated to three channels.
torchvision and timm run in a separate process: importing them after TensorFlow
crashes the process (see test_torch_weights.py).
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet
from resnet_tf.models.resnet import adapt_input_conv
from resnet_tf.models.sources import WeightsSource

# A torchvision ResNet-18 with random weights and BatchNorm statistics saved with
# torch.save, and timm's adapt_input_conv of its first convolution for 5 channels.
_REFERENCE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch, torchvision
    from timm.models._manipulate import adapt_input_conv

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n) * 0.1)
                module.running_var.copy_(torch.rand(n) + 0.5)
    torch.save(net.state_dict(), sys.argv[1])
    kernel = net.conv1.weight.detach()
    np.save(sys.argv[2], adapt_input_conv(5, kernel).permute(2, 3, 1, 0).numpy())  # HWIO
    """
)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """(a torchvision ResNet-18 checkpoint, timm's 5-channel first-conv kernel, HWIO)."""
    # find_spec, not importorskip: importing torchvision here would crash (see above).
    if any(importlib.util.find_spec(name) is None for name in ("torch", "torchvision", "timm")):
        pytest.skip("torch, torchvision and timm make the reference")
    folder = tmp_path_factory.mktemp("input_channels")
    path, kernel = folder / "resnet18.pth", folder / "kernel5.npy"
    result = subprocess.run([sys.executable, "-c", _REFERENCE, str(path), str(kernel)],
                            capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if result.returncode != 0:
        pytest.fail(f"the torch reference process failed: {result.stderr[-3000:]}")
    return str(path), np.load(kernel)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """A `.weights.h5` of this library's own 3-channel ResNet-18 (10 classes)."""
    path = str(tmp_path_factory.mktemp("own_weights") / "resnet18.weights.h5")
    model = build_resnet(18, classes=10, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
    model.save_weights(path)
    return path


def logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("source", ["torchvision", "keras"])
def test_gray_image_gives_the_logits_of_its_rgb_copy(source, request):
    path = request.getfixturevalue(f"{source}_file")
    path = path[0] if source == "torchvision" else path
    kwargs = dict(classes=10, classifier_activation=None, weights=path)
    gray = build_resnet(18, input_shape=(64, 64, 1), **kwargs)
    rgb = build_resnet(18, input_shape=(64, 64, 3), **kwargs)
    image = np.random.default_rng(2).normal(size=(2, 64, 64, 1)).astype("float32")
    theirs = logits(rgb, np.repeat(image, 3, axis=-1))
    np.testing.assert_allclose(logits(gray, image), theirs,
                               atol=1e-4 * np.abs(theirs).max())
    assert gray.get_layer("conv1_conv").kernel.shape == (7, 7, 1, 64)


def test_other_channel_counts_follow_timm(torchvision_file):
    path, timm_kernel = torchvision_file
    model = build_resnet(18, input_shape=(64, 64, 5), classes=10, weights=path)
    kernel = keras.ops.convert_to_numpy(model.get_layer("conv1_conv").kernel)
    np.testing.assert_allclose(kernel, timm_kernel, rtol=1e-6, atol=1e-7)
    rgb = build_resnet(18, input_shape=(64, 64, 3), classes=10, weights=path)
    for name in ("conv1_bn", "conv2_block1_1_conv", "predictions"):  # the rest is copied
        for a, b in zip(model.get_layer(name).get_weights(), rgb.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_adapt_input_conv_repeats_and_rescales():
    kernel = np.arange(2 * 2 * 3 * 4, dtype="float32").reshape(2, 2, 3, 4)
    np.testing.assert_array_equal(adapt_input_conv(kernel, 3), kernel)
    np.testing.assert_allclose(adapt_input_conv(kernel, 1), kernel.sum(2, keepdims=True))
    four = adapt_input_conv(kernel, 4)
    np.testing.assert_allclose(four, np.concatenate([kernel, kernel[:, :, :1]], 2) * 0.75)


def test_no_weights_any_channel_count():
    model = build_resnet(50, include_top=False, input_shape=(None, None, 4), pooling="avg")
    assert tuple(model(np.zeros((1, 64, 64, 4), "float32")).shape) == (1, 2048)


def test_weights_on_another_scale_get_no_rgb_conversion_on_other_channels(keras_file):
    # Weights trained on the "caffe" scale: 3 channels get the converting layer, 1 none.
    source = WeightsSource(keras_file, "file", keras_file, "keras3", None, "caffe")
    names = {c: [layer.name for layer in build_resnet(
        18, input_shape=(64, 64, c), classes=10, weights=source).layers] for c in (1, 3)}
    assert "weights_normalization" in names[3]
    assert "weights_normalization" not in names[1]


@pytest.mark.parametrize("shape", [(64, 64, 0), (64, 64, -1), (64, 64, None), (64, 64, 1.5)])
def test_non_positive_channels_are_one_clear_line(shape):
    with pytest.raises(ValueError) as error:
        build_resnet(18, input_shape=shape)
    message = str(error.value)
    assert message.startswith("input_shape must have a positive number of channels. "
                              f"Received: input_shape={shape}")
    assert "\n" not in message


def test_an_rgb_conversion_on_other_channels_is_refused():
    with pytest.raises(ValueError, match=r"preprocessing converts RGB images and the input "
                                         r"has 1 channels\. Received: preprocessing='caffe'"):
        build_resnet(18, input_shape=(64, 64, 1), preprocessing="caffe")
