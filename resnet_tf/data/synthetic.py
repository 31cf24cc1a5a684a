"""Random images for speed tests: one fixed batch repeated, so the input costs nothing per step."""

import numpy as np
import tensorflow as tf

from resnet_tf.data.examples import Data, check_positive_int, dataset_options
from resnet_tf.data.preprocessing import default_preset, normalize
from resnet_tf.errors import DataError
from resnet_tf.runs import default_class_names


def synthetic_data(image_size, preset, batch_size, val_split, examples, classes, deterministic):
    """Random images, one fixed normalized batch repeated so the input costs nothing per step."""
    check_positive_int("synthetic_examples", examples)
    check_positive_int("synthetic_classes", classes)
    n_val = round(val_split * examples) if val_split else 0
    n_train = examples - n_val
    if n_train < batch_size:
        raise DataError(
            f"batch_size={batch_size} is larger than the {n_train} synthetic training examples; "
            f"expected batch_size <= {n_train}."
        )
    rng = np.random.default_rng(0)
    images = normalize(rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8))
    labels = tf.constant(rng.integers(0, classes, batch_size), tf.int32)
    options = dataset_options(deterministic)
    train = tf.data.Dataset.from_tensors((images, labels)).repeat(n_train // batch_size)
    val = None
    if n_val:
        val = tf.data.Dataset.from_tensors((images, labels)).repeat(n_val // batch_size)
        if n_val % batch_size:
            val = val.concatenate(
                tf.data.Dataset.from_tensors(
                    (images[: n_val % batch_size], labels[: n_val % batch_size])
                )
            )
        val = val.with_options(options)
    return Data(
        train=train.prefetch(tf.data.AUTOTUNE).with_options(options),
        val=val,
        class_names=default_class_names(classes),
        image_size=image_size,
        preset=preset or default_preset(image_size),
        train_examples=n_train // batch_size * batch_size,
        val_examples=n_val,
    )


