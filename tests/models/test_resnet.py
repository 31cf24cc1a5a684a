"""build_resnet and the block builders: counts, shapes, names, errors, serialisation."""

import keras
import numpy as np
import pytest

import resnet_tf
from resnet_tf import bottleneck_block, build_resnet, feature_extractor, residual_block


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# torchvision's published parameter counts (torchvision.models.resnet*, 1000 classes).
@pytest.mark.parametrize(
    "depth, expected",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160),
     (152, 60_192_808)],
)
def test_v15_trainable_parameters_equal_torchvision(depth, expected):
    assert trainable_count(build_resnet(depth, input_shape=(224, 224, 3))) == expected


@pytest.mark.parametrize(
    "depth, expected", [(50, 25_636_712), (101, 44_707_176), (152, 60_419_944)]
)
def test_v1_parameters_equal_keras_applications(depth, expected):
    assert build_resnet(depth, variant="v1").count_params() == expected


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(groups=32, width_per_group=4), 25_028_904),  # torchvision resnext50_32x4d
        (dict(width_multiplier=2), 68_883_240),  # torchvision wide_resnet50_2
        (dict(variant="d"), 25_576_264),  # timm resnet50d
    ],
)
def test_resnext_wide_and_d_counts(kwargs, expected):
    assert trainable_count(build_resnet(50, **kwargs)) == expected


@pytest.mark.parametrize("depth, paper", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_resnets_match_the_paper(depth, paper):
    model = build_resnet(depth, input_shape=(32, 32, 3), classes=10)
    assert abs(trainable_count(model) - paper) / paper < 0.02
    # Three stages of 16/32/64 filters on a 3x3 stem, no max-pool.
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, 3, 16)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    assert model.get_layer("conv4_block1_2_conv").kernel.shape[-1] == 64
    assert model.output_shape == (None, 10)


def test_cifar_164_is_preactivation_bottleneck():
    model = build_resnet(164, input_shape=(32, 32, 3), classes=10)
    assert abs(trainable_count(model) - 1.7e6) / 1.7e6 < 0.02
    names = {layer.name for layer in model.layers}
    assert {"conv2_block1_preact_bn", "post_bn", "post_relu"} <= names
    assert model.get_layer("conv4_block18_3_conv").kernel.shape[-1] == 256


def test_v1_layer_names_equal_keras_applications():
    ours = build_resnet(50, variant="v1")
    theirs = keras.applications.ResNet50(weights=None)
    weighted = lambda m: [(layer.name, [tuple(w.shape) for w in layer.weights])
                          for layer in m.layers if layer.weights]
    assert weighted(ours) == weighted(theirs)


def test_imagenet_depth_with_cifar_stem():
    model = build_resnet(18, stem="cifar", input_shape=(32, 32, 3), classes=10)
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, 3, 64)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    features = feature_extractor(build_resnet(18, stem="cifar", include_top=False))
    out = features(np.zeros((1, 32, 32, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (1, 32, 32, 64), "C3": (1, 16, 16, 128), "C4": (1, 8, 8, 256),
        "C5": (1, 4, 4, 512)}


@pytest.mark.parametrize("variant", ["v1.5", "v1", "v2", "d"])
@pytest.mark.parametrize("size", [64, 97, 128])
def test_feature_maps_have_strides_4_to_32(variant, size):
    model = build_resnet(50, variant=variant, include_top=False)
    features = feature_extractor(model)(np.zeros((2, size, size, 3), "float32"))
    channels = {"C2": 256, "C3": 512, "C4": 1024, "C5": 2048}
    for key, stride in {"C2": 4, "C3": 8, "C4": 16, "C5": 32}.items():
        expected = -(-size // stride)
        assert tuple(features[key].shape) == (2, expected, expected, channels[key]), key


@pytest.mark.parametrize("pooling, shape", [(None, (1, 3, 5, 512)), ("avg", (1, 512)),
                                            ("max", (1, 512))])
def test_include_top_false_pooling_any_size(pooling, shape):
    model = build_resnet(18, include_top=False, pooling=pooling)
    assert model.input_shape == (None, None, None, 3)
    assert tuple(model(np.zeros((1, 96, 160, 3), "float32")).shape) == shape


def test_default_input_shapes_follow_keras_applications():
    assert build_resnet(18).input_shape == (None, 224, 224, 3)
    assert build_resnet(20, classes=10).input_shape == (None, 32, 32, 3)


def test_input_tensor_is_used():
    inputs = keras.Input((64, 64, 3))
    model = build_resnet(18, input_tensor=inputs, classes=7)
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 7)


def test_options_change_the_architecture():
    se = build_resnet(20, input_shape=(32, 32, 3), classes=10, se_ratio=0.25)
    assert "conv2_block1_se_excite" in {layer.name for layer in se.layers}
    sd = build_resnet(20, input_shape=(32, 32, 3), classes=10, stochastic_depth_rate=0.2)
    rates = [layer.rate for layer in sd.layers if isinstance(layer, resnet_tf.StochasticDepth)]
    assert len(rates) == 9 and rates[-1] == pytest.approx(0.2) and rates[0] == pytest.approx(0.2 / 9)
    zero = build_resnet(18, zero_init_residual=True)
    np.testing.assert_array_equal(zero.get_layer("conv3_block2_2_bn").gamma.numpy(), 0.0)
    np.testing.assert_array_equal(zero.get_layer("conv3_block2_1_bn").gamma.numpy(), 1.0)
    d = build_resnet(50, variant="d")
    assert isinstance(d.get_layer("conv3_block1_0_pool"), keras.layers.AveragePooling2D)
    assert d.get_layer("conv1_1_conv").kernel.shape == (3, 3, 3, 32)
    b = build_resnet(20, input_shape=(32, 32, 3), classes=10, shortcut="B")
    assert b.get_layer("conv3_block1_0_conv").kernel.shape == (1, 1, 16, 32)


def test_v15_and_v1_put_the_stride_where_they_should():
    v15 = build_resnet(50, include_top=False, input_shape=(64, 64, 3))
    v1 = build_resnet(50, variant="v1", include_top=False, input_shape=(64, 64, 3))
    assert v15.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert v15.get_layer("conv3_block1_1_conv").bias is None
    assert v1.get_layer("conv3_block1_1_conv").bias is not None
    assert v1.get_layer("conv1_bn").epsilon == pytest.approx(1.001e-5)


def test_kaiming_normal_fan_out_initialisation():
    keras.utils.set_random_seed(0)
    kernel = build_resnet(50, include_top=False).get_layer("conv4_block2_2_conv").kernel.numpy()
    fan_out = 3 * 3 * 256
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.02)


def test_blocks_build_a_custom_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = residual_block(x, 16, name="a")
    x = residual_block(x, 32, stride=2, name="b")
    x = bottleneck_block(x, 16, stride=2, groups=4, width_per_group=16, se_ratio=0.25,
                         name="c")
    x = bottleneck_block(x, 16, variant="v2")
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 64)
    assert model.get_layer("b_0_conv").strides == (2, 2)
    assert model.get_layer("c_2_conv").groups == 4


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = build_resnet(20, input_shape=(32, 32, 3), classes=10, se_ratio=0.25,
                         stochastic_depth_rate=0.1)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    kinds = lambda m: [(type(layer).__module__, type(layer).__name__, layer.name) for layer in m.layers]
    assert kinds(loaded) == kinds(model)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_are_float32(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_resnet(20, input_shape=(32, 32, 3), classes=10)
        logits = build_resnet(18, include_top=True, input_shape=(32, 32, 3), classes=10,
                              classifier_activation=None)
        x = np.zeros((2, 32, 32, 3), "float32")
        assert model(x).dtype == "float32"
        assert logits(x).dtype == "float32"
        assert model.get_layer("conv2_block1_1_conv").compute_dtype == policy.split("_")[1]
    finally:
        keras.config.set_dtype_policy(previous)


def test_tiny_network_learns_a_fixed_batch():
    keras.utils.set_random_seed(1)
    model = build_resnet(20, input_shape=(16, 16, 3), classes=4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 3)).astype("float32")
    y = np.arange(16) % 4
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=33), "Received: depth=33; expected one of 18, 34, 50, 101, 152, 200, 20"),
        (dict(depth=50, variant="v3"), "Received: variant='v3'; expected one of 'v1.5', 'v1'"),
        (dict(depth=50, input_shape=(16, 16, 3)), "at least 32x32"),
        (dict(depth=20, input_shape=(2, 2, 3)), "at least 4x4"),
        (dict(depth=50, classes=0), "Received: classes=0"),
        (dict(depth=50, include_top=False, pooling="mean"), "Received: pooling='mean'"),
        (dict(depth=50, stem="big"), "Received: stem='big'"),
        (dict(depth=20, shortcut="C"), "Received: shortcut='C'"),
        (dict(depth=18, groups=32), "Received: groups=32"),
        (dict(depth=50, input_shape=(64, 64)), "Received: input_shape=(64, 64)"),
        (dict(depth=50, stochastic_depth_rate=1.0), "Received: stochastic_depth_rate=1.0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    depth = kwargs.pop("depth")
    with pytest.raises(ValueError, match=None) as info:
        build_resnet(depth, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("kwargs", [
    dict(width_multiplier="2"), dict(se_ratio="x"), dict(stochastic_depth_rate="a"),
    dict(input_shape=5), dict(classes="3"), dict(dropout=1.5), dict(se_ratio=float("nan")),
])
def test_arguments_of_the_wrong_type_are_value_errors_naming_them(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"Received: {name}={value!r}".replace("(", r"\(")):
        build_resnet(20, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(groups=2.5), dict(width_per_group="4")])
def test_bottleneck_widths_must_be_integers(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        build_resnet(50, **kwargs)


def test_float_depth_is_refused():
    with pytest.raises(ValueError, match="Unknown depth. Received: depth=50.0"):
        build_resnet(50.0)


def test_default_model_names_survive_the_argument_checks():
    assert build_resnet(20).name == "resnet20"
    assert build_resnet(50, groups=32, width_per_group=4).name == "resnext50_32x4d"
