"""The evaluation transform that travels with weights and models (issue 29 item 1)."""

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet
from resnet_tf.models.registry import WEIGHTS
from resnet_tf.models.transform import EvalTransform, transform_of


def test_registered_entries_state_their_source_transform():
    v1 = WEIGHTS["torchvision:resnet50.IMAGENET1K_V1"].preprocessing
    v2 = WEIGHTS["torchvision:resnet50.IMAGENET1K_V2"].preprocessing
    a1 = WEIGHTS["timm:resnet18.a1_in1k"].preprocessing
    assert (v1.resize, v1.crop, v1.interpolation) == (256, 224, "bilinear")
    assert (v2.resize, v2.crop, v2.interpolation) == (232, 224, "bilinear")
    assert (a1.resize, a1.crop, a1.interpolation) == (235, 224, "bicubic")
    assert WEIGHTS["timm:resnet101d.ra2_in1k"].preprocessing.resize == 269  # 256 / 0.95
    assert "resize 232 (bilinear), centre crop 224" in v2.describe()


def test_at_size_keeps_the_crop_fraction_as_timm_scales_it():
    v2 = WEIGHTS["torchvision:resnet50.IMAGENET1K_V2"].preprocessing
    assert v2.at_size(160).resize == 165  # floor(160 * 232 / 224)
    assert v2.at_size(224) is v2
    assert EvalTransform.for_preset("cifar", 32).at_size(48).resize is None
    assert EvalTransform.for_preset("imagenet", 224).resize == 256


@pytest.mark.parametrize("changes, message", [
    (dict(interpolation="nearest"), "interpolation='nearest' (expected one of bilinear, bicubic)"),
    (dict(crop=0), "crop=0 (expected a positive integer)"),
    (dict(resize=200), "resize=200 smaller than crop=224"),
])
def test_a_wrong_transform_is_one_clear_error(changes, message):
    config = {**EvalTransform.for_preset("imagenet", 224).get_config(), **changes}
    with pytest.raises(ValueError, match="Invalid evaluation transform") as error:
        EvalTransform.from_config(config)
    assert message in str(error.value)


def test_a_registered_name_as_preprocessing_gives_its_normalisation_and_transform(tmp_path):
    model = build_resnet(50, include_top=False, input_shape=(None, None, 3),
                         preprocessing="keras:resnet50.imagenet")
    assert model.get_layer("weights_normalization").mode == "caffe"
    assert transform_of(model) == WEIGHTS["keras:resnet50.imagenet"].preprocessing
    # At a fixed input size the transform is scaled to it; the .keras file keeps it.
    small = build_resnet(18, input_shape=(64, 64, 3), classes=3,
                         preprocessing="timm:resnet18.a1_in1k")
    assert (transform_of(small).resize, transform_of(small).crop) == (67, 64)
    small.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert transform_of(loaded) == transform_of(small)
    # Nested in the user's model, the ResNet's transform answers for it.
    outer = keras.Sequential([keras.Input((64, 64, 3)), loaded, keras.layers.Dense(2)])
    assert transform_of(outer) == transform_of(small)
    # A short name picks the entry of the architecture being built.
    r50 = build_resnet(50, input_shape=(224, 224, 3), preprocessing="torchvision:IMAGENET1K_V2")
    assert transform_of(r50).resize == 232
    # Without weights or a transform, a model carries none: its run or preset decides.
    assert transform_of(build_resnet(20, classes=10)) is None


def test_grayscale_models_carry_no_rgb_transform():
    model = build_resnet(18, input_shape=(64, 64, 1), classes=2,
                         preprocessing="timm:resnet18.a1_in1k")
    assert transform_of(model) is None


def test_the_centre_crop_follows_torchvision_arithmetic():
    from resnet_tf.data import preprocess_for_eval

    # A 301 x 260 image, resize 256: the long side int(256 * 301 / 260) = 296, offsets
    # round((296 - 224) / 2) = 36 and round((256 - 224) / 2) = 16.
    image = np.arange(301 * 260 * 3, dtype=np.float64).reshape(301, 260, 3) % 251
    transform = EvalTransform.for_preset("imagenet", 224)
    out = preprocess_for_eval(image.astype(np.uint8), transform=transform).numpy()
    assert out.shape == (224, 224, 3)
    # Halves round to even, as Python's round: an extra of 9 starts at 4, of 11 at 6.
    from resnet_tf.data.preprocessing import _centre_offset

    assert [int(_centre_offset(extra + 224, 224)) for extra in (9, 11, 10, 0)] == [4, 6, 5, 0]


def test_a_damaged_eval_transform_in_a_runs_config_is_one_clear_error():
    from resnet_tf.export.inference import serving_transform
    from resnet_tf.models.sources import recorded_transform

    run = {"image_size": 32, "preset": "cifar", "eval_transform": {"mode": "torch"}}
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match=r"config.json records a damaged eval_transform: Not an "
                                         r"evaluation transform. Received: \{'mode': 'torch'\}"):
        serving_transform(model, run=run)
    # Without the key (a run of an earlier version), the preset's transform at its size.
    del run["eval_transform"]
    assert recorded_transform(run) == EvalTransform.for_preset("cifar", 32)
