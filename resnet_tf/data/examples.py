"""What the data layer hands on: `Data` (the pipelines a trainer needs) and `Examples` (one split)."""

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from resnet_tf.errors import DataError

# Datasets whose decoded pixels fit under this are decoded once into memory. Also keeps
# `from_tensor_slices` constants clear of protobuf's 2 GiB limit, which a multi-worker
# strategy hits when it serializes the dataset graph.
IN_MEMORY_LIMIT_BYTES = 1536 * 1024**2


@dataclasses.dataclass
class Data:
    """Batched train and validation pipelines plus what a trainer needs to know about them.

    Attributes:
        train: `tf.data.Dataset` of `(images, labels)` batches: shuffled, augmented, not
            repeated, `drop_remainder=True`.
        val: `tf.data.Dataset` or `None`. Eval-preprocessed batches in a fixed order.
        class_names: list of str. Index `i` names label `i`.
        image_size: int. Height and width of every validation image (and, unless
            `train_size` differs, of every training image).
        train_size: int or None. Height and width of the training images; None: `image_size`.
        preset: str. `"cifar"` or `"imagenet"`, the preprocessing applied.
        train_examples: int. Training images (an upper bound when streamed from files).
        val_examples: int. Validation images, 0 without a validation set.
        skipped_files: int. Image files that could not be decoded and were left out.
        one_hot_labels: bool. `train` yields float32 one-hot `[B, classes]` labels (mixed
            by MixUp or CutMix) instead of int32 `[B]`; `val` always yields int32.
        train_pixels: str. `"normalized"`: `train` yields normalized float32 images, as
            `val` always does; `"uint8"`: uint8 pixels, which the model's step normalizes
            on the accelerator (`resnet_tf.training.pixels.normalizing_train_step`).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    class_names: list[str]
    image_size: int
    preset: str
    train_examples: int
    val_examples: int
    skipped_files: int = 0
    one_hot_labels: bool = False  # issue 13 (resnet_tf.data.augment)
    train_size: int | None = None
    train_pixels: str = "normalized"


@dataclasses.dataclass
class Examples:
    """One split before preprocessing.

    `source` is cheap to shuffle (in-memory arrays, file names or encoded records) and
    `to_image` turns one of its elements into `(uint8 image, int32 label)`, or
    `to_encoded` into `(encoded image bytes, int32 label)` (then training decodes JPEG
    crops only: `preprocessing.preprocess_encoded_for_train`).
    """

    source: tf.data.Dataset
    count: int
    to_image: Callable | None = None
    may_fail: bool = False
    shuffle_buffer: int | None = None
    to_encoded: Callable | None = None


def dataset_options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    # The AUTO default tries FILE sharding first, which in-memory and TFDS pipelines
    # cannot do, and every replica logs a warning before falling back to DATA.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options



def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer. Received: {name}={value!r}; expected 1 or more.")


def val_mask(labels, val_split, seed):
    """Marks `val_split` of each class for validation, the same for the same seed and files."""
    is_val = np.zeros(len(labels), bool)
    if not val_split:
        return is_val
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # At least one validation image per class, and at least one left to train on.
        count = min(len(members) - 1, max(1, round(val_split * len(members))))
        is_val[rng.permutation(members)[:count]] = True
    return is_val


