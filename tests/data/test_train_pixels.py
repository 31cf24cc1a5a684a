"""uint8 training batches (`load_data(train_pixels=...)`), normalized in the training step
on the accelerator (`normalizing_train_step`): the same images to within the rounding of
the resize to whole grey levels, and the same training step."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf.data import load_data
from resnet_tf.data.preprocessing import STD, normalize, preprocess_encoded_for_train
from resnet_tf.errors import DataError

# Rounding the resized crop to whole grey levels moves a pixel by at most half a level.
HALF_LEVEL = 0.5 / (255 * min(STD)) + 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 8 JPEGs and 2 PNGs each, 48x40 px."""
    root = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(root / c)
        for i in range(10):
            small = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
            image = small.resize((48, 40), Image.BICUBIC)
            image.save(root / c / (f"{i}.png" if i >= 8 else f"{i}.jpg"), quality=90)
    return str(root)


def _batches(folder, train_pixels, **extra):
    data = load_data(data_dir=folder, image_size=24, preset="imagenet", batch_size=10,
                     val_split=0, cache=False, deterministic=True, seed=5,
                     train_pixels=train_pixels, **extra)
    return data, [images.numpy() for images, _ in data.train]


def test_uint8_batches_are_the_normalized_ones_to_half_a_grey_level(folder):
    data, pixels = _batches(folder, "uint8")
    reference, normalized = _batches(folder, "normalized")
    assert (data.train_pixels, reference.train_pixels) == ("uint8", "normalized")
    assert len(pixels) == len(normalized) == 2
    for uint8, floats in zip(pixels, normalized):
        assert uint8.dtype == np.uint8 and uint8.shape == (10, 24, 24, 3)
        assert floats.dtype == np.float32
        # The same crops and flips (JPEG windows and the PNGs' whole decode alike).
        np.testing.assert_allclose(normalize(uint8).numpy(), floats, rtol=0, atol=HALF_LEVEL)


def test_the_jpeg_and_whole_image_paths_round_alike(tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), np.uint8))
    for fmt in ("JPEG", "PNG"):
        path = str(tmp_path / f"image.{fmt.lower()}")
        image.save(path, fmt)
        encoded = tf.io.read_file(path)
        seed = tf.constant([2, 9], tf.int64)
        uint8 = preprocess_encoded_for_train(encoded, 16, "imagenet", seed, pixels=True)
        floats = preprocess_encoded_for_train(encoded, 16, "imagenet", seed)
        assert uint8.dtype == tf.uint8
        np.testing.assert_allclose(normalize(uint8).numpy(), floats.numpy(), atol=HALF_LEVEL)


def test_auto_is_uint8_only_where_the_pipeline_can(folder):
    assert _batches(folder, "auto")[0].train_pixels == "uint8"
    data = load_data(data_dir=folder, image_size=24, preset="imagenet", batch_size=10,
                     val_split=0, cache=False, mixup=0.2, train_pixels="auto")
    assert data.train_pixels == "normalized"
    assert next(iter(data.train))[0].dtype == tf.float32
    data = load_data(data_dir=folder, image_size=24, preset="cifar", batch_size=10,
                     val_split=0, train_pixels="auto")
    assert data.train_pixels == "normalized"


@pytest.mark.parametrize("extra, expected", [
    (dict(preset="cifar"), "Received: preset='cifar'"),
    (dict(augment=False), "Received: augment='none'"),
    (dict(augment="randaugment"), "Received: a per-batch augmentation"),
    (dict(cutmix=1.0), "Received: a per-batch augmentation"),
    (dict(train_pixels="float16"), "train_pixels must be one of normalized, uint8, auto. "
                                   "Received: train_pixels='float16'"),
])
def test_uint8_where_it_cannot_apply_is_one_clear_error(folder, extra, expected):
    arguments = dict(data_dir=folder, image_size=24, preset="imagenet", batch_size=10,
                     val_split=0, train_pixels="uint8")
    with pytest.raises(DataError, match=expected) as error:
        load_data(**{**arguments, **extra})
    assert "\n" not in str(error.value)


def test_the_training_step_on_uint8_pixels_is_the_step_on_normalized_images():
    import keras

    from resnet_tf.models.resnet import build_resnet
    from resnet_tf.training.pixels import normalizing_train_step

    pixels = np.random.default_rng(3).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    labels = np.array([0, 1, 2, 1])

    def one_step(images, on_device):
        keras.utils.set_random_seed(0)
        model = build_resnet(20, input_shape=(16, 16, 3), classes=3)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        with normalizing_train_step(model, on_device):
            model.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0,
                      shuffle=False)
        assert "train_step" not in vars(model)  # as it was before
        return model.get_weights()

    on_device = one_step(pixels, True)
    on_cpu = one_step(normalize(pixels).numpy(), False)
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_py_trains_on_uint8_pixels_and_records_it(folder, tmp_path):
    """The imagenet preset with the basic augmentation: uint8 batches, normalized in the step."""
    import csv
    import json

    from conftest import train_in_process

    out = tmp_path / "run"
    result = train_in_process("--data-dir", folder, "--depth", 18, "--image-size", 72,
                              "--epochs", 1, "--batch-size", 8, "--val-split", 0.2,
                              "--no-export", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "config.json") as f:
        config = json.load(f)
    assert config["runtime"]["train_pixels"] == "uint8"
    assert "uint8 training batches, normalized in the training step" in result.stdout
    assert config["config"]["preset"] in (None, "imagenet")
    with open(out / "history.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 1 and np.isfinite(losses[0])
