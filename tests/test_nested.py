"""A ResNet used as one layer of the user's model: the standard transfer-learning shape.

`keras.Sequential([Rescaling(...), base, Dense(3)])` and
`keras.Model(inp, Dense(3)(base(inp)))`: `spec_of`, `stage_layers`,
`feature_extractor`, `freeze_batchnorm` and the export find the ResNet inside.
"""

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet, feature_extractor, freeze_batchnorm
from resnet_tf.models.resnet import stage_layers
from resnet_tf.models.spec import find_resnet, spec_of

SIZE = 64
SCALE = 0.5


def base_network():
    base = build_resnet(18, include_top=False, input_shape=(SIZE, SIZE, 3), pooling="avg")
    rng = np.random.default_rng(0)
    for layer in base.layers:  # statistics that are not identities
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
    return base


def sequential(base):
    return keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(SCALE), base,
                             keras.layers.Dense(3, activation="softmax")], name="user_sequential")


def functional(base):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(SCALE)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(base(x))
    return keras.Model(inputs, outputs, name="user_functional")


def twice_nested(base):
    inputs = keras.Input((SIZE, SIZE, 3))
    inner = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(SCALE), base])
    return keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)), name="user_twice")


SHAPES = {"sequential": sequential, "functional": functional, "twice_nested": twice_nested}


@pytest.fixture(scope="module", params=list(SHAPES))
def nested(request):
    base = base_network()
    return SHAPES[request.param](base), base


def images(batch=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 2, (batch, SIZE, SIZE, 3)).astype("float32")


def numpy_dict(outputs):
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def test_the_nested_resnet_is_found(nested):
    model, base = nested
    assert find_resnet(model) is base
    assert spec_of(model) == base.spec
    assert stage_layers(model) == stage_layers(base)


def test_a_model_without_resnet_has_no_spec():
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    assert find_resnet(plain) is None and spec_of(plain) is None
    with pytest.raises(ValueError, match="has no ResNet stage outputs"):
        feature_extractor(plain)


@pytest.mark.parametrize("kwargs", [{}, dict(out_indices=(0, 2, 4), output_stride=8)])
def test_feature_extractor_starts_from_the_users_inputs(nested, kwargs):
    model, base = nested
    features = feature_extractor(model, **kwargs)
    direct = feature_extractor(base, **kwargs)
    assert features.feature_info == direct.feature_info
    x = images()
    ours, theirs = numpy_dict(features(x)), numpy_dict(direct(x * SCALE))  # the Rescaling
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-5)


def test_nested_feature_extractor_shares_the_weights(nested):
    model, base = nested
    assert {id(w) for w in feature_extractor(model).weights} == {id(w) for w in base.weights}


def test_an_unbuilt_model_is_one_clear_line():
    model = keras.Sequential([keras.layers.Rescaling(SCALE), base_network()], name="unbuilt")
    with pytest.raises(ValueError) as error:
        feature_extractor(model)
    assert str(error.value).startswith("Model 'unbuilt' has no inputs yet.")


def test_freeze_batchnorm_reaches_the_nested_layers():
    base = base_network()
    model = functional(base)
    batchnorms = [layer for layer in base.layers
                  if isinstance(layer, keras.layers.BatchNormalization)]
    assert freeze_batchnorm(model) == len(batchnorms) > 0
    assert not any(layer.trainable for layer in batchnorms)
    before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batchnorms]
    model(images(), training=True)  # what fit does
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batchnorms]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_export_serves_a_nested_model(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from PIL import Image

    from resnet_tf.data.preprocessing import decode_image, preprocess_for_eval
    from resnet_tf.export import export_serving_model

    model = sequential(base_network())
    version = export_serving_model(model, tmp_path / "served", class_names=["a", "b", "c"],
                                   image_size=SIZE, preset="imagenet")
    rng = np.random.default_rng(3)
    pixels = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
                        .resize((80, 72), Image.BILINEAR))
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    encoded = path.read_bytes()
    served = tf.saved_model.load(version).signatures["serving_default"]
    out = served(image_bytes=tf.constant([encoded]))
    batch = tf.stack([preprocess_for_eval(decode_image(encoded), SIZE, "imagenet")])
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-4)


def test_grad_cam_explains_a_nested_model(nested):
    from resnet_tf.evaluation.explain import grad_cam

    model, _ = nested
    heatmaps = np.asarray(grad_cam(model, images()))
    assert heatmaps.shape == (2, SIZE // 32, SIZE // 32)
    assert np.isfinite(heatmaps).all()


def test_grad_cam_of_a_nested_resnet_equals_the_same_network_built_flat():
    import keras

    from resnet_tf import build_resnet
    from resnet_tf.evaluation.explain import grad_cam

    keras.utils.set_random_seed(3)
    base = build_resnet(18, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))
    dense = keras.layers.Dense(3)
    flat = keras.Model(base.inputs, dense(base.output))
    inputs = keras.Input((SIZE, SIZE, 3))
    nested = keras.Model(inputs, dense(base(inputs)))
    for layer in (None, "C3"):
        np.testing.assert_allclose(grad_cam(nested, images(), layer=layer),
                                   grad_cam(flat, images(), layer=layer), atol=1e-5)
