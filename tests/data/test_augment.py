"""resnet_tf.data.augment: the RandAugment, AugMix, MixUp, CutMix and random erasing policies
of `load_data`, on tiny generated images (issue 13)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf.data import DataError, list_image_folder, load_data, normalize
from resnet_tf.data.augment import (
    _NORMALIZED_RANGE,
    POLICIES,
    BatchAugmenter,
    _denormalize,
    batch_augmenter,
    check_augmentation,
    check_classes,
)
from resnet_tf.data.preprocessing import pad_crop_flip

SIZE, BATCH = 8, 8
LOW, HIGH = _NORMALIZED_RANGE


@pytest.fixture(scope="module")
def folder(image_folder_factory):
    return image_folder_factory(classes=("cat", "dog", "fish"), per_class=8, size=SIZE)


_TRACED = {}


def augment(images, labels, seed=(1, 2), classes=16, normalized=False, **kwargs):
    """One `BatchAugmenter` call; traced once per configuration (the seed is a tensor)."""
    key = (classes, normalized, tuple(sorted(kwargs.items())))
    if key not in _TRACED:
        augmenter = BatchAugmenter(check_augmentation(**kwargs), classes)
        _TRACED[key] = tf.function(lambda x, y, s: augmenter(x, y, s, normalized=normalized))
    images, labels = _TRACED[key](
        tf.constant(images, tf.float32), tf.constant(labels), tf.constant(seed, tf.int64)
    )
    return images.numpy(), labels.numpy()


def assert_normalized_range(images):
    images = np.asarray(images)
    assert images.min() >= LOW - 1e-4 and images.max() <= HIGH + 1e-4


def random_pixels(count=16, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.float32)


def solid_images(count=16, size=SIZE):
    """Image i is flat with colour (10 i, 10 i + 1, 10 i + 2): its pixels name it."""
    colours = 10.0 * np.arange(count)[:, None] + np.arange(3)
    return np.broadcast_to(colours[:, None, None, :], (count, size, size, 3)).copy()


# --- Each policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(augment="randaugment"), dict(augment="augmix"), dict(random_erasing=1.0)],
    ids=["randaugment", "augmix", "random_erasing"],
)
def test_policy_changes_images_and_keeps_shape_dtype_and_range(kwargs):
    pixels = random_pixels()
    images, labels = augment(pixels, np.arange(16), **kwargs)
    assert images.shape == pixels.shape and images.dtype == np.float32
    assert_normalized_range(images)
    changed = np.abs(images - normalize(pixels).numpy()).max(axis=(1, 2, 3)) > 1e-3
    assert changed.mean() >= 0.75, changed
    np.testing.assert_array_equal(labels, np.arange(16))  # int labels pass through


def test_pixel_policies_start_from_normalized_batches_too():
    """The per-image path hands over normalized batches: undone, augmented, redone."""
    pixels = random_pixels()
    np.testing.assert_allclose(_denormalize(normalize(pixels)).numpy(), pixels, atol=1e-3)
    images, _ = augment(normalize(pixels).numpy(), np.arange(16), normalized=True,
                        augment="randaugment")
    assert_normalized_range(images)


def test_mixup_labels_are_the_pixel_weights_of_two_images():
    pixels = solid_images()
    images, labels = augment(pixels, np.arange(16), mixup=1.0)
    assert labels.shape == (16, 16) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0 and ((labels > 1e-6).sum(axis=1) <= 2).all()
    assert ((labels > 1e-6).sum(axis=1) == 2).sum() >= 8  # most images mix two classes
    # Each image is flat: weight w of its own colour plus 1 - w of its partner's.
    expected = labels @ pixels[:, 0, 0, :]
    np.testing.assert_allclose(_denormalize(images).numpy()[:, 0, 0], expected, atol=1e-2)


def test_cutmix_labels_are_the_fractions_of_pasted_pixels():
    pixels = solid_images()
    images, labels = augment(pixels, np.arange(16), cutmix=1.0)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 1e-6).sum(axis=1) <= 2).all()
    assert ((labels > 1e-6).sum(axis=1) == 2).sum() >= 8
    # Which image every output pixel came from, read off its colour.
    source = np.rint(_denormalize(images).numpy()[..., 0] / 10).astype(int)
    fractions = np.stack([(source == k).mean(axis=(1, 2)) for k in range(16)], axis=1)
    np.testing.assert_allclose(labels, fractions, atol=1e-5)


def test_mixup_and_cutmix_together_use_one_of_the_two_per_batch():
    pixels, kinds = solid_images(), set()
    for seed in range(8):
        images, labels = augment(pixels, np.arange(16), seed=(seed, 0), mixup=1.0, cutmix=1.0)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        flat = np.ptp(images, axis=(1, 2)).max() < 1e-3  # MixUp keeps flat images flat
        kinds.add("mixup" if flat else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_output_is_float32_under_a_mixed_precision_policy():
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        images, labels = augment(random_pixels(), np.arange(16), augment="randaugment",
                                 mixup=0.2, random_erasing=0.5)
    finally:
        keras.config.set_dtype_policy(previous)
    assert images.dtype == np.float32 and labels.dtype == np.float32


# --- Through load_data ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(augment="randaugment"),
        dict(augment="augmix"),
        dict(mixup=0.2, cutmix=1.0),
        dict(augment="none", random_erasing=0.5, cutmix=1.0),
    ],
    ids=["randaugment", "augmix", "mixup+cutmix", "none+erasing+cutmix"],
)
def test_load_data_policies(folder, kwargs):
    data = load_data(data_dir=folder, batch_size=BATCH, val_split=0.25, **kwargs)
    mixes = bool(kwargs.get("mixup") or kwargs.get("cutmix"))
    assert data.one_hot_labels is mixes
    images, labels = next(iter(data.train))
    assert images.shape == (BATCH, SIZE, SIZE, 3) and images.dtype == tf.float32
    assert_normalized_range(images)
    if mixes:
        assert labels.shape == (BATCH, 3) and labels.dtype == tf.float32
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    else:
        assert labels.shape == (BATCH,) and labels.dtype == tf.int32
    _, val_labels = next(iter(data.val))
    assert val_labels.dtype == tf.int32  # validation is never mixed


def test_streamed_folder_with_randaugment_and_mixup(folder):
    """The per-image path (streamed files) augments after batching, on normalized images."""
    data = load_data(data_dir=folder, batch_size=BATCH, cache=False, augment="randaugment",
                     mixup=0.2)
    images, labels = next(iter(data.train))
    assert images.shape == (BATCH, SIZE, SIZE, 3) and labels.shape == (BATCH, 3)
    assert_normalized_range(images)


def test_basic_is_unchanged(folder):
    """`True`, `"basic"` and zero mixing all take today's batched pad-crop-flip path, with
    the same output for the same seed."""
    assert batch_augmenter(check_augmentation(True), 3) is None
    assert batch_augmenter(check_augmentation("basic", 0, 0.0, 0), 3) is None
    files, labels, _ = list_image_folder(folder)
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    seed = 7

    def todays_fast_path():  # spelled out: shuffle, batch, a [2] seed per batch, pad-crop-flip
        ds = tf.data.Dataset.from_tensor_slices((pixels, np.asarray(labels, np.int32)))
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        return tf.data.Dataset.zip(
            ds.batch(BATCH, drop_remainder=True),
            tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2),
        ).map(lambda batch, s: (normalize(pad_crop_flip(batch[0], SIZE, s)), batch[1]))

    for augment_arg in (True, "basic"):
        expected = todays_fast_path()  # reshuffles and redraws its seeds every epoch
        data = load_data(data_dir=folder, batch_size=BATCH, seed=seed, deterministic=True,
                         augment=augment_arg, mixup=0.0, cutmix=0.0, random_erasing=0.0)
        assert data.one_hot_labels is False
        for _ in range(2):  # two epochs
            for (x, y), (ex, ey) in zip(data.train, expected, strict=True):
                np.testing.assert_array_equal(x.numpy(), ex.numpy())
                np.testing.assert_array_equal(y.numpy(), ey.numpy())


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param(dict(augment="randaugment", mixup=0.2, cutmix=1.0, random_erasing=0.5),
                  id="randaugment+mix+erasing"),
     pytest.param(dict(augment="augmix", cutmix=1.0), id="augmix+cutmix",
                  marks=pytest.mark.slow)],  # ~15 s; AugMix's other checks stay in the default run
)
def test_deterministic_runs_repeat(folder, kwargs):
    def batches(seed):
        data = load_data(data_dir=folder, batch_size=BATCH, seed=seed, deterministic=True,
                         **kwargs)
        return [(x.numpy(), y.numpy()) for x, y in data.train]

    first, again, other = batches(0), batches(0), batches(1)
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][0], other[0][0])


# --- Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(augment="autoaugment"), "augment='autoaugment'; expected True, False or one of "
                                      "'none', 'basic', 'randaugment', 'augmix', "
                                      "'trivialaugment'"),
        (dict(augment=1), "augment=1;"),
        (dict(mixup=-0.2), "mixup=-0.2; expected a finite number >= 0"),
        (dict(cutmix=-1), "cutmix=-1; expected a finite number >= 0"),
        (dict(cutmix=float("nan")), "cutmix=nan;"),
        (dict(mixup=True), "mixup=True;"),
        (dict(random_erasing=1.5), r"random_erasing=1.5; expected a number in \[0, 1\]"),
        (dict(random_erasing=-0.1), "random_erasing=-0.1;"),
    ],
)
def test_bad_arguments_raise_one_line_data_errors(kwargs, match):
    with pytest.raises(DataError, match=match) as error:
        load_data("synthetic", batch_size=4, synthetic_examples=8, **kwargs)
    message = str(error.value)
    assert "\n" not in message and "Received: " in message and "; expected " in message


def test_mixing_one_class_is_refused():
    assert POLICIES == ("none", "basic", "randaugment", "augmix", "trivialaugment")
    check_classes(check_augmentation(mixup=0.2), ["cat", "dog"])
    check_classes(check_augmentation(random_erasing=0.5), ["cat"])  # nothing to mix: fine
    for kwargs in (dict(mixup=0.2), dict(cutmix=1.0)):
        with pytest.raises(DataError, match=r"dataset of 1 class \('cat'\); expected mixup=0"):
            check_classes(check_augmentation(**kwargs), ["cat"])
