"""The layers in `resnet_tf.layers` behave like the Keras layers users know.

`BatchNormalization` must be a drop-in for `keras.layers.BatchNormalization`: every
test here builds both with identical weights and asserts they agree (outputs,
gradients, moving statistics, dtypes, training loops, saving).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_tf.models.layers import BatchNormalization, StochasticDepth, ZeroPadShortcut

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Configurations the ResNet variants use (momentum 0.9 / epsilon 1e-5 as in torchvision,
# 0.99 / 1e-3 as Keras' defaults), on both channel axes of a 4D tensor.
BN_CONFIGS = [
    pytest.param({"momentum": 0.9, "epsilon": 1e-5}, (2, 3, 3, 4), id="nhwc-m0.9-eps1e-5"),
    pytest.param({"momentum": 0.99, "epsilon": 1e-3}, (3, 4, 5, 6), id="nhwc-m0.99-eps1e-3"),
    pytest.param(
        {"momentum": 0.9, "epsilon": 1e-3, "axis": 1}, (2, 4, 3, 3), id="nchw-m0.9-eps1e-3"
    ),
]


@pytest.fixture(autouse=True)
def _tensorflow_backend():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("these tests compare against the TensorFlow fused kernel")


@pytest.fixture
def dtype_policy(request):
    """Sets the global dtype policy named by the test's parameter, then restores it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def _inputs(shape, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    # Off-centre and wider than unit variance, so normalising is not a no-op.
    return (rng.normal(size=shape) * 3.0 + 1.5).astype(dtype)


def _bn_pair(input_shape, **kwargs):
    """Our layer and keras' with the same non-trivial gamma, beta and moving stats."""
    ours = BatchNormalization(**kwargs)
    theirs = keras.layers.BatchNormalization(**kwargs)
    ours.build(input_shape)
    theirs.build(input_shape)
    channels = input_shape[kwargs.get("axis", -1)]
    rng = np.random.default_rng(42)
    values = {
        "gamma": rng.uniform(0.5, 2.0, channels),
        "beta": rng.normal(size=channels),
        "moving_mean": rng.normal(size=channels),
        "moving_variance": rng.uniform(0.5, 3.0, channels),
    }
    weights = [values[w.name].astype("float32") for w in theirs.weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def _assert_same_weights(ours, theirs, atol):
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=atol, err_msg=a.name)


# BatchNormalization: outputs ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, shape", BN_CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_output_matches_keras(kwargs, shape, training):
    ours, theirs = _bn_pair(shape, **kwargs)
    x = _inputs(shape)
    y_ours = ours(x, training=training)
    y_theirs = theirs(x, training=training)
    assert y_ours.dtype == y_theirs.dtype == tf.float32
    assert y_ours.shape == shape
    np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    if training:
        # Sanity: the batch statistics were used, so the output is standardised.
        axes = tuple(i for i in range(4) if i != kwargs.get("axis", -1) % 4)
        gamma, beta = ours.gamma.numpy(), ours.beta.numpy()
        bshape = [1, 1, 1, 1]
        bshape[kwargs.get("axis", -1)] = -1
        z = (np.asarray(y_ours) - beta.reshape(bshape)) / gamma.reshape(bshape)
        np.testing.assert_allclose(z.mean(axis=axes), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "dtype_policy", ["float32", "mixed_float16", "mixed_bfloat16"], indirect=True
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_uses_fused_kernel_for_4d_inputs(dtype_policy, training):
    """Guards the premise of the other tests: the fused path, not the parent, ran."""
    layer, _ = _bn_pair((2, 3, 3, 4))
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
        tf.TensorSpec((2, 3, 3, 4), layer.compute_dtype)
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in op_types


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_falls_back_for_non_4d_inputs(shape, training):
    ours, theirs = _bn_pair(shape, momentum=0.9, epsilon=1e-5)
    graph = tf.function(lambda x: ours(x, training=training)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)
    ).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    x = _inputs(shape)
    np.testing.assert_allclose(
        ours(x, training=training), theirs(x, training=training), rtol=1e-5, atol=1e-5
    )
    _assert_same_weights(ours, theirs, atol=1e-6)


# BatchNormalization: gradients -------------------------------------------------------


@pytest.mark.parametrize("kwargs, shape", BN_CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_match_keras(kwargs, shape, training):
    ours, theirs = _bn_pair(shape, **kwargs)
    x = tf.constant(_inputs(shape))
    # A random cotangent: with sum(y) the input gradient is zero in training mode.
    upstream = tf.constant(_inputs(shape, seed=1))

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * upstream)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    for name, g_ours, g_theirs in zip(("inputs", "gamma", "beta"), grads(ours), grads(theirs)):
        assert g_ours is not None, name
        np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-4, err_msg=name)
    # The training-mode input gradient flows through the batch statistics; it must not
    # be the inference-mode gamma / sqrt(var + eps) * upstream.
    assert np.abs(grads(ours)[0].numpy()).max() > 1e-3


# BatchNormalization: moving statistics ---------------------------------------------


def _numpy_moving_stats(batches, mean, var, momentum, axis, ddof):
    for x in batches:
        axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        x = x.astype("float64")
        mean = mean * momentum + x.mean(axis=axes) * (1 - momentum)
        var = var * momentum + x.var(axis=axes, ddof=ddof) * (1 - momentum)
    return mean, var


@pytest.mark.parametrize("momentum, epsilon", [(0.9, 1e-5), (0.99, 1e-3)])
@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 1, 1, 4)], ids=["2x3x3", "1x1x1"])
def test_batch_norm_moving_statistics_match_keras(momentum, epsilon, shape):
    # A batch of 2 x 3 x 3 has 18 values per channel: the unbiased variance is 18/17 of
    # the biased one Keras tracks, well outside the tolerance. 1 x 1 x 1 is the
    # degenerate case (biased variance 0).
    ours, theirs = _bn_pair(shape, momentum=momentum, epsilon=epsilon)
    start_mean, start_var = ours.moving_mean.numpy(), ours.moving_variance.numpy()
    batches = [_inputs(shape, seed=s) for s in range(5)]
    for x in batches:
        ours(x, training=True)
        theirs(x, training=True)
    _assert_same_weights(ours, theirs, atol=1e-5)

    mean, var = _numpy_moving_stats(batches, start_mean, start_var, momentum, -1, ddof=0)
    np.testing.assert_allclose(ours.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)
    if shape[0] * shape[1] * shape[2] > 1:
        _, unbiased = _numpy_moving_stats(batches, start_mean, start_var, momentum, -1, ddof=1)
        assert np.abs(ours.moving_variance.numpy() - unbiased).max() > 1e-3


@pytest.mark.parametrize("training", [True, False, None])
def test_frozen_batch_norm_uses_and_keeps_moving_statistics(training):
    shape = (2, 3, 3, 4)
    ours, theirs = _bn_pair(shape, momentum=0.9, epsilon=1e-3)
    ours.trainable = False
    theirs.trainable = False
    before = [w.numpy() for w in ours.weights]
    x = _inputs(shape)
    y_ours = ours(x, training=training)
    np.testing.assert_allclose(y_ours, theirs(x, training=training), rtol=1e-5, atol=1e-5)
    # Inference with the moving statistics, computed by hand.
    gamma, beta, mean, var = before
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(y_ours, expected, rtol=1e-5, atol=1e-5)
    for w, b in zip(ours.weights, before):
        np.testing.assert_array_equal(w.numpy(), b, err_msg=w.name)


# BatchNormalization: mixed precision -------------------------------------------------


@pytest.mark.parametrize(
    "dtype_policy, compute_dtype, tol",
    [("mixed_float16", "float16", 2e-3), ("mixed_bfloat16", "bfloat16", 2e-2)],
    indirect=["dtype_policy"],
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_mixed_precision_matches_keras(dtype_policy, compute_dtype, tol, training):
    shape = (2, 4, 4, 8)
    ours, theirs = _bn_pair(shape, momentum=0.9, epsilon=1e-3)
    assert ours.compute_dtype == theirs.compute_dtype == compute_dtype
    x = tf.cast(_inputs(shape), compute_dtype)
    y_ours, y_theirs = ours(x, training=training), theirs(x, training=training)
    assert y_ours.dtype == y_theirs.dtype == compute_dtype
    np.testing.assert_allclose(
        tf.cast(y_ours, "float32"), tf.cast(y_theirs, "float32"), rtol=tol, atol=tol
    )
    for layer in (ours, theirs):
        assert [w.dtype for w in layer.weights] == ["float32"] * 4
    _assert_same_weights(ours, theirs, atol=1e-5)

    upstream = tf.cast(_inputs(shape, seed=1), compute_dtype)

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=training) * upstream, "float32"))
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    for name, g_ours, g_theirs in zip(("inputs", "gamma", "beta"), grads(ours), grads(theirs)):
        assert g_ours.dtype == g_theirs.dtype, name
        np.testing.assert_allclose(
            tf.cast(g_ours, "float32"), tf.cast(g_theirs, "float32"),
            rtol=tol, atol=tol * 10, err_msg=name,
        )


# BatchNormalization: options -----------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"scale": False}, {"center": False}, {"scale": False, "center": False}]
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_without_scale_or_center_matches_keras(options, training):
    shape = (2, 3, 3, 4)
    ours, theirs = _bn_pair(shape, momentum=0.9, epsilon=1e-5, **options)
    expected_names = [n for n, on in (("gamma", options.get("scale", True)),
                                      ("beta", options.get("center", True))) if on]
    assert [w.name for w in ours.trainable_weights] == expected_names
    x = _inputs(shape)
    np.testing.assert_allclose(
        ours(x, training=training), theirs(x, training=training), rtol=1e-5, atol=1e-5
    )
    _assert_same_weights(ours, theirs, atol=1e-6)


# BatchNormalization: inside compiled training ----------------------------------------


def test_batch_norm_in_tf_function_training_steps_matches_keras():
    shape = (3, 3, 3, 4)
    ours, theirs = _bn_pair(shape, momentum=0.9, epsilon=1e-5)
    upstream = tf.constant(_inputs(shape, seed=9))

    def make_step(layer):
        # An unknown batch size: the fused path must count values per channel at run time.
        @tf.function(input_signature=[tf.TensorSpec((None, 3, 3, 4), tf.float32)])
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x, training=True) * upstream[: tf.shape(x)[0]])
            grads = tape.gradient(loss, layer.trainable_weights)
            for w, g in zip(layer.trainable_weights, grads):
                w.assign_sub(0.01 * g)
            return loss

        return step

    step_ours, step_theirs = make_step(ours), make_step(theirs)
    for seed, batch in enumerate((2, 3, 1, 2)):
        x = tf.constant(_inputs((batch,) + shape[1:], seed=seed))
        np.testing.assert_allclose(step_ours(x), step_theirs(x), rtol=1e-5, atol=1e-4)
    _assert_same_weights(ours, theirs, atol=1e-5)


def _tiny_model(bn_class):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = bn_class(momentum=0.9, epsilon=1e-5, name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_batch_norm_in_model_fit_matches_keras():
    keras.utils.set_random_seed(0)
    theirs = _tiny_model(keras.layers.BatchNormalization)
    ours = _tiny_model(BatchNormalization)
    initial = theirs.get_weights()
    ours.set_weights(initial)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, size=16)
    losses = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        losses[name] = history.history["loss"]
    np.testing.assert_allclose(losses["ours"], losses["theirs"], rtol=1e-4)
    # Training moved the weights, so the comparison is not between initial weights.
    assert _max_diff(ours.get_layer("conv").kernel, initial[0]) > 1e-3
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4, err_msg=a.path)
    assert not np.allclose(ours.get_layer("bn").moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)


# Serialization -------------------------------------------------------------------------


def test_batch_norm_config_round_trip():
    layer = BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False, name="bn")
    config = layer.get_config()
    parent = keras.layers.BatchNormalization(
        axis=1, momentum=0.9, epsilon=1e-5, center=False, name="bn"
    )
    assert config == parent.get_config()
    clone = BatchNormalization.from_config(config)
    assert type(clone) is BatchNormalization
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == "resnet_tf>BatchNormalization"
    assert type(keras.saving.deserialize_keras_object(serialized)) is BatchNormalization


@pytest.mark.parametrize(
    "layer",
    [StochasticDepth(0.25, seed=3, name="sd"), ZeroPadShortcut(8, stride=2, name="zp")],
    ids=["StochasticDepth", "ZeroPadShortcut"],
)
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"resnet_tf>{type(layer).__name__}"


def test_model_saves_and_loads_in_safe_mode_without_custom_objects(tmp_path):
    inputs = keras.Input((8, 8, 4))
    x = BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")(inputs)
    shortcut = ZeroPadShortcut(8, stride=2, name="shortcut")(x)
    branch = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(x)
    branch = StochasticDepth(0.5, seed=1, name="drop")(branch)
    outputs = keras.layers.Add()([shortcut, branch])
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 4).astype("float32"), rng.normal(size=4).astype("float32"),
                    rng.normal(size=4).astype("float32"), rng.uniform(0.5, 2, 4).astype("float32")])
    path = str(tmp_path / "model.keras")
    model.save(path)

    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is BatchNormalization
    assert type(loaded.get_layer("shortcut")) is ZeroPadShortcut
    assert type(loaded.get_layer("drop")) is StochasticDepth
    assert loaded.get_layer("drop").rate == 0.5
    x = _inputs((2, 8, 8, 4))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# StochasticDepth -------------------------------------------------------------------------


def test_stochastic_depth_is_identity_at_inference():
    layer = StochasticDepth(0.5, seed=0)
    x = _inputs((8, 2, 2, 3))
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_stochastic_depth_drops_or_rescales_whole_examples(rate):
    layer = StochasticDepth(rate, seed=0)
    x = np.abs(_inputs((256, 2, 2, 3))) + 0.1  # no zeros in the input
    y = np.asarray(layer(x, training=True))
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = np.all(np.isclose(y, x / (1 - rate), rtol=1e-6), axis=(1, 2, 3))
    assert np.all(dropped ^ kept), "each example must be all-zero or all-scaled"
    # Survival frequency close to 1 - rate (256 draws: 4 standard deviations < 0.13).
    assert abs(kept.mean() - (1 - rate)) < 0.13
    # A later call draws new noise.
    y2 = np.asarray(layer(x, training=True))
    assert not np.array_equal(y, y2)


def test_stochastic_depth_with_unknown_batch_in_tf_function():
    layer = StochasticDepth(0.5, seed=0)
    fn = tf.function(lambda x: layer(x, training=True),
                     input_signature=[tf.TensorSpec((None, 2, 3), tf.float32)])
    y = fn(tf.ones((64, 2, 3))).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0 < (y == 0).all(axis=(1, 2)).sum() < 64


def test_stochastic_depth_rate_zero_is_identity_in_training():
    x = _inputs((4, 3))
    np.testing.assert_array_equal(StochasticDepth(0.0)(x, training=True), x)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_stochastic_depth_rejects_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=rf"rate.*Received: rate={rate}"):
        StochasticDepth(rate)


# ZeroPadShortcut -------------------------------------------------------------------------


def _zero_pad_reference(x, filters, stride, channels_last):
    if not channels_last:
        x = x.transpose(0, 2, 3, 1)
    x = x[:, ::stride, ::stride, :]
    extra = filters - x.shape[-1]
    out = np.zeros(x.shape[:3] + (filters,), x.dtype)
    out[..., extra // 2 : extra // 2 + x.shape[-1]] = x
    return out if channels_last else out.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "hw, channels, filters, stride",
    [(8, 4, 8, 2), (7, 3, 8, 2), (6, 4, 4, 1), (6, 16, 32, 2)],
)
def test_zero_pad_shortcut_matches_numpy(data_format, hw, channels, filters, stride):
    channels_last = data_format == "channels_last"
    shape = (2, hw, hw, channels) if channels_last else (2, channels, hw, hw)
    x = _inputs(shape)
    layer = ZeroPadShortcut(filters, stride=stride, data_format=data_format)
    y = np.asarray(layer(x))
    expected = _zero_pad_reference(x, filters, stride, channels_last)
    np.testing.assert_array_equal(y, expected)
    assert y.shape == layer.compute_output_shape(shape)
    # Symbolically, with an unknown batch size, too.
    symbolic = layer(keras.Input(shape[1:]))
    assert tuple(symbolic.shape) == (None,) + expected.shape[1:]


@pytest.mark.parametrize("symbolic", [True, False])
def test_zero_pad_shortcut_rejects_fewer_filters_than_input_channels(symbolic):
    # Dropping channels silently would leave the real output at 8 channels while
    # `compute_output_shape` (and so every symbolic shape) says 4.
    layer = ZeroPadShortcut(4, stride=2, data_format="channels_last")
    x = keras.Input((4, 4, 8)) if symbolic else np.ones((1, 4, 4, 8), "float32")
    with pytest.raises(ValueError, match=r"input channels \(8\)\. Received: filters=4"):
        layer(x)


def test_zero_pad_shortcut_output_shape_for_cifar_stage_transition():
    # ResNet-20: stage 1 -> 2 halves 32x32 and goes from 16 to 32 channels, padding 8 each side.
    layer = ZeroPadShortcut(32, stride=2, data_format="channels_last")
    x = np.ones((1, 32, 32, 16), "float32")
    y = np.asarray(layer(x))
    assert y.shape == (1, 16, 16, 32)
    per_channel = y.sum(axis=(0, 1, 2))
    np.testing.assert_array_equal(per_channel[:8], 0)
    np.testing.assert_array_equal(per_channel[8:24], 256)
    np.testing.assert_array_equal(per_channel[24:], 0)


# PyTorch backend -------------------------------------------------------------------------

_TORCH_SCRIPT = textwrap.dedent(
    """
    import json
    import keras
    import numpy as np
    import resnet_tf
    from resnet_tf.models.layers import BatchNormalization

    assert keras.backend.backend() == "torch", keras.backend.backend()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = resnet_tf.build_resnet(20, input_shape=(32, 32, 3), classes=10)
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    y = np.arange(4) % 10
    out = keras.ops.convert_to_numpy(model(x, training=False))
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss="sparse_categorical_crossentropy")
    loss = float(model.train_on_batch(x, y))

    result = {"shape": list(out.shape), "loss": loss, "bn": {}}
    for momentum, epsilon in ((0.9, 1e-5), (0.99, 1e-3)):
        ours = BatchNormalization(momentum=momentum, epsilon=epsilon)
        theirs = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
        ours.build((2, 3, 3, 4))
        theirs.build((2, 3, 3, 4))
        weights = [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                   rng.uniform(0.5, 2, 4)]
        weights = [w.astype("float32") for w in weights]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        diffs = []
        for training in (True, True, False):
            xb = (rng.normal(size=(2, 3, 3, 4)) * 3 + 1).astype("float32")
            a = keras.ops.convert_to_numpy(ours(xb, training=training))
            b = keras.ops.convert_to_numpy(theirs(xb, training=training))
            diffs.append(float(np.abs(a - b).max()))
        diffs.append(max(float(np.abs(u - v).max())
                         for u, v in zip(ours.get_weights(), theirs.get_weights())))
        moved = float(np.abs(ours.get_weights()[2] - weights[2]).max())
        result["bn"][str(momentum)] = {"max_diff": max(diffs), "moved": moved}
    print("RESULT " + json.dumps(result))
    """
)


@pytest.mark.slow  # a PyTorch-backend subprocess; test_networks checks that backend's outputs
def test_build_resnet_trains_on_torch_backend():
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    env = {
        **os.environ,
        "KERAS_BACKEND": "torch",
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_SCRIPT], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result["shape"] == [4, 10]
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    for momentum, bn in result["bn"].items():
        assert bn["max_diff"] < 1e-5, (momentum, bn)
        assert bn["moved"] > 1e-3, (momentum, bn)  # training updated the moving mean


def test_freeze_batchnorm_keeps_moving_statistics_while_fine_tuning():
    import resnet_tf

    base = resnet_tf.build_resnet(20, include_top=False, pooling="avg", input_shape=(8, 8, 3))
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(base(inputs, training=False)))
    assert resnet_tf.freeze_batchnorm(base) == 19
    conv = base.get_layer("conv2_block1_1_conv")
    before = [w.numpy().copy() for w in base.get_layer("conv1_bn").weights]
    kernel = conv.kernel.numpy().copy()
    model.compile("sgd", "mse")
    model.fit(np.random.rand(8, 8, 8, 3) * 5, np.random.rand(8, 2), epochs=1, verbose=0)
    for old, new in zip(before, base.get_layer("conv1_bn").weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert not np.array_equal(kernel, conv.kernel.numpy())  # the rest still trains
