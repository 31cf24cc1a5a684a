"""TrivialAugmentWide: one of torchvision's 14 operations per image, at its wide strengths."""

import numpy as np
import tensorflow as tf

from resnet_tf.data import load_data
from resnet_tf.data.augment import TrivialAugmentWide, _WidePixelOps

SIZE = 32


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(20, 235, (count, SIZE, SIZE, 3)), tf.float32)


def test_each_of_the_13_operations_runs_per_image_and_keeps_pixels_in_range():
    ops = _WidePixelOps(SIZE)
    assert len(ops) == 13  # with the identity, torchvision's 14
    images = _images(14)
    choices = tf.range(14)[tf.newaxis]  # image i gets operation i; 13 is the identity
    out = ops.apply(images, choices, tf.constant([1, 2], tf.int64)).numpy()
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    changed = [not np.allclose(out[i], images[i]) for i in range(14)]
    assert changed[13] is False  # the identity
    assert sum(changed[:13]) >= 11  # posterize at 8 bits may leave an image as it was


def test_policy_is_reproducible_and_leaves_about_one_image_in_fourteen_alone():
    augment, images = TrivialAugmentWide(), _images(280, seed=1)
    seed = tf.constant([5, 6], tf.int64)
    first, second = augment(images, seed).numpy(), augment(images, seed).numpy()
    np.testing.assert_array_equal(first, second)
    unchanged = sum(np.array_equal(a, b) for a, b in zip(first, images.numpy()))
    assert 5 <= unchanged <= 45, unchanged  # expected 20 (1/14) plus the rare 8-bit posterize


def test_load_data_trains_with_trivialaugment(image_folder_factory):
    root = image_folder_factory(per_class=6, size=SIZE)
    data = load_data(data_dir=root, val_split=0.25, batch_size=4, augment="trivialaugment",
                     seed=3, deterministic=True)
    images, labels = next(iter(data.train))
    assert images.shape == (4, SIZE, SIZE, 3) and labels.shape == (4,)
    again, _ = next(iter(load_data(data_dir=root, val_split=0.25, batch_size=4,
                                   augment="trivialaugment", seed=3, deterministic=True).train))
    np.testing.assert_array_equal(images.numpy(), again.numpy())
