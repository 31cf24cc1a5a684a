"""`ResNetSpec`: defaults filled and arguments checked once; a built model keeps its spec,
through `.keras` files too, and files written before it still load."""

import json

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet
from resnet_tf.models import blocks, resnet, spec
from resnet_tf.models.spec import ResNetSpec, default_stem, spec_of


@pytest.mark.parametrize("depth, variant, stem, shortcut", [
    (50, "v1.5", "imagenet", "B"),
    (18, "v1.5", "imagenet", "B"),
    (20, "v1.5", "cifar", "A"),
    (164, "v2", "cifar", "B"),
])
def test_defaults_are_filled(depth, variant, stem, shortcut):
    filled = ResNetSpec(depth)
    assert (filled.variant, filled.stem, filled.shortcut) == (variant, stem, shortcut)


@pytest.mark.parametrize("depth, variant, small_images, stem", [
    (50, None, None, "imagenet"),   # build_resnet: the depth's family
    (50, "d", None, "deep"),
    (20, None, None, "cifar"),
    (18, None, True, "cifar"),      # the cifar preset, whatever the depth
    (20, None, False, "imagenet"),  # another preset for a CIFAR depth
    (50, "d", False, "deep"),       # published weights: ImageNet stems
    (None, None, False, "imagenet"),
    (None, "d", False, "deep"),
])
def test_one_stem_rule(depth, variant, small_images, stem):
    assert default_stem(depth, variant, small_images) == stem


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=19), "Unknown depth. Received: depth=19; expected one of 18, 34, 50"),
    (dict(depth=50.0), "Unknown depth. Received: depth=50.0"),
    (dict(depth=50, variant="v3"), "Unknown variant. Received: variant='v3'"),
    (dict(depth=50, stem="big"), "Unknown stem. Received: stem='big'"),
    (dict(depth=50, shortcut="C"), "Unknown shortcut. Received: shortcut='C'"),
    (dict(depth=50, pooling="sum"), "Unknown pooling. Received: pooling='sum'"),
    (dict(depth=50, dropout=1.0), "dropout must be a number in [0, 1). Received: dropout=1.0"),
    (dict(depth=50, se_ratio=-0.1), "se_ratio must be a number in [0, 1)."),
    (dict(depth=50, width_multiplier=0), "width_multiplier must be a number in (0, inf)."),
    (dict(depth=50, classes=0), "classes must be a positive integer. Received: classes=0"),
    (dict(depth=50, groups=True), "groups must be a positive integer. Received: groups=True"),
    (dict(depth=18, groups=32), "ResNet-18 uses basic blocks, which support only groups=1"),
])
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ValueError) as error:
        ResNetSpec(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_empty_string_is_no_default():
    with pytest.raises(ValueError, match="Unknown variant. Received: variant=''"):
        ResNetSpec(50, variant="")


def test_config_round_trip_is_json():
    wide = ResNetSpec(50, variant="d", width_multiplier=2, se_ratio=1 / 16, classes=7,
                      classifier_activation=None)
    config = json.loads(json.dumps(wide.get_config()))
    assert ResNetSpec.from_config(config) == wide
    assert ResNetSpec.from_config({**config, "added_later": 1}) == wide
    assert wide.default_name == "wide_resnet50_2d"


def test_a_registered_activation_survives_the_config():
    relu = ResNetSpec(20, classifier_activation=keras.activations.relu)
    again = ResNetSpec.from_config(json.loads(json.dumps(relu.get_config())))
    assert again.classifier_activation is keras.activations.relu


def test_names_stay_importable_where_they_were():
    assert resnet.SPECS is spec.SPECS and resnet.DEPTHS is spec.DEPTHS
    assert resnet.STAGE_FILTERS is spec.STAGE_FILTERS and resnet.STEMS is spec.STEMS
    assert resnet.default_variant is spec.default_variant
    assert blocks.VARIANTS is spec.VARIANTS and blocks.SHORTCUTS is spec.SHORTCUTS


def _tiny(**kwargs):
    return build_resnet(20, input_shape=(16, 16, 3), classes=3, **kwargs)


def _images():
    return np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")


def test_the_model_knows_its_spec():
    model = _tiny(stochastic_depth_rate=0.1)
    assert spec_of(model) == ResNetSpec(20, classes=3, stochastic_depth_rate=0.1)
    assert isinstance(model, keras.Model) and model.name == "resnet20"


def test_keras_file_keeps_the_spec_and_the_outputs(tmp_path):
    model = _tiny(variant="d", se_ratio=0.25)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert spec_of(loaded) == spec_of(model)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(_images(), verbose=0),
                                  model.predict(_images(), verbose=0))


def test_mixed_precision_round_trip_keeps_dtypes(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _tiny()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")

    def policies(m):  # an InputLayer's policy is not saved, with or without a spec
        return {layer.name: layer.dtype_policy.name for layer in m.layers
                if not isinstance(layer, keras.layers.InputLayer)}

    assert policies(loaded) == policies(model)
    assert policies(loaded)["conv1_conv"] == "mixed_float16"
    assert policies(loaded)["predictions"] == "float32"
    assert loaded(_images()).dtype == "float32"
    assert spec_of(loaded) == spec_of(model)


def test_old_plain_functional_file_still_loads(tmp_path):
    model = _tiny()
    keras.Model(model.inputs, model.outputs).save(tmp_path / "old.keras")  # as main wrote them
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert spec_of(loaded) is None
    np.testing.assert_array_equal(loaded.predict(_images(), verbose=0),
                                  model.predict(_images(), verbose=0))


def test_nested_in_a_user_model_and_cloned(tmp_path):
    backbone = _tiny(include_top=False, pooling="avg")
    inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)))
    outer.save(tmp_path / "outer.keras")
    loaded = keras.saving.load_model(tmp_path / "outer.keras")
    assert spec_of(loaded.layers[1]) == spec_of(backbone)
    np.testing.assert_allclose(loaded.predict(_images(), verbose=0),
                               outer.predict(_images(), verbose=0), atol=1e-6)
    clone = keras.models.clone_model(backbone)
    assert [w.shape for w in clone.weights] == [w.shape for w in backbone.weights]
