"""TFDS datasets as `Examples`, with downloads that fail in seconds offline."""

from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from resnet_tf.data.examples import IN_MEMORY_LIMIT_BYTES, Examples, val_mask
from resnet_tf.errors import DataError
from resnet_tf.files import socket_timeout

# Decoded images from TFDS records are large; a file-level shuffle does the rest.
_STREAM_SHUFFLE_BUFFER = 4096
OFFLINE_HINT = (
    "pass --data-dir PATH (a folder with one sub-folder per class) or --dataset synthetic"
)


def tfds_facts(name, tfds_dir):
    """`(class names, native size)` of a TFDS dataset from its description, without
    downloading or preparing it; the size is None unless its images are square of one size."""
    builder = _builder(import_tfds(), name, tfds_dir)
    _, names, native = _image_classes(builder.info, name, splits=False)
    return list(names), native


def tfds_splits(name, tfds_dir, manual_dir, val_split, seed, cache):
    tfds = import_tfds()
    builder = prepared_builder(tfds, name, tfds_dir, manual_dir)
    info = builder.info
    (image_key, label_key), names, native = _image_classes(info, name)
    held_out = next((s for s in ("validation", "test") if s in info.splits), None)
    shape = tuple(info.features[image_key].shape)
    total = sum(info.splits[s].num_examples for s in ("train", held_out) if s)
    in_memory = (
        cache and None not in shape and total * shape[0] * shape[1] * 3 < IN_MEMORY_LIMIT_BYTES
    )

    if in_memory:
        images, labels = _tfds_arrays(builder, "train")
        if held_out:
            train = _memory_examples(images, labels)
            val = _memory_examples(*_tfds_arrays(builder, held_out))
        else:
            is_val = val_mask(labels, val_split, seed)
            train = _memory_examples(images[~is_val], labels[~is_val])
            val = _memory_examples(images[is_val], labels[is_val]) if is_val.any() else None
        return train, val, names, native, 0

    count = info.splits["train"].num_examples
    if held_out:
        train = _tfds_stream(tfds, builder, "train", count)
        val = _tfds_stream(tfds, builder, held_out, info.splits[held_out].num_examples)
    elif val_split:
        # Record order is fixed at preparation, so a slice is a stable (unstratified) split.
        n_val = min(count - 1, max(1, round(val_split * count)))
        train = _tfds_stream(tfds, builder, f"train[{n_val}:]", count - n_val)
        val = _tfds_stream(tfds, builder, f"train[:{n_val}]", n_val)
    else:
        train, val = _tfds_stream(tfds, builder, "train", count), None
    return train, val, names, native, 0


def _image_classes(info, name, splits=True):
    """`(supervised keys, class names, native size)`; a `DataError` for a dataset that is
    not image classification (or, with `splits`, has no train split)."""
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise DataError(
            f"TFDS dataset '{name}' has no (image, label) supervised keys; "
            "expected an image-classification dataset."
        )
    image_key, label_key = info.supervised_keys
    names = getattr(info.features[label_key], "names", None)
    if (splits and "train" not in info.splits) or not names:
        raise DataError(
            f"TFDS dataset '{name}' has splits {sorted(info.splits)} and label feature "
            f"{type(info.features[label_key]).__name__}; expected a 'train' split and class labels."
        )
    shape = tuple(info.features[image_key].shape)
    native = shape[0] if None not in shape[:2] and shape[0] == shape[1] else None
    return (image_key, label_key), names, native


def import_tfds():
    """`tensorflow_datasets`, or a `DataError` naming the module that is missing."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise _import_failure(error) from error
    return tfds


# pip names of modules TFDS imports, where they differ.
_PIP_NAMES = {"tensorflow_datasets": "tensorflow-datasets", "PIL": "pillow", "yaml": "pyyaml",
              "google": "protobuf"}


def _missing_module(error):
    """The ImportError in `error`'s chain of causes, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ImportError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _import_failure(error):
    module = (error.name or "").split(".")[0]
    reason = _short(error).split(": ", 1)[-1]
    fix = (f"install it with pip install {_PIP_NAMES.get(module, module)}" if module
           else "reinstall tensorflow-datasets")
    return DataError(f"TFDS could not be imported ({reason}); {fix}, or {OFFLINE_HINT}.")


def _builder(tfds, name, tfds_dir):
    try:
        return tfds.builder(name, data_dir=tfds_dir)
    except Exception as error:
        if _missing_module(error):
            raise _import_failure(_missing_module(error)) from error
        raise DataError(
            f"Could not find TFDS dataset '{name}' ({_short(error)}); expected a TFDS "
            f"image-classification name such as 'cifar10', or {OFFLINE_HINT}."
        ) from error


def prepared_builder(tfds, name, tfds_dir, manual_dir):
    builder = _builder(tfds, name, tfds_dir)
    if builder.is_prepared():
        return builder
    try:
        with _fail_fast_downloads():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
    except Exception as error:
        # TFDS imports parts of itself lazily: a missing dependency shows up only here,
        # and is no download failure.
        if _missing_module(error):
            raise _import_failure(_missing_module(error)) from error
        raise DataError(
            f"Could not load TFDS dataset '{name}' (not prepared in {builder.data_dir} and it "
            f"could not be downloaded: {_short(error)}); offline, {OFFLINE_HINT}."
        ) from error
    return builder


@contextmanager
def _fail_fast_downloads():
    """Makes a TFDS download fail in seconds when there is no network.

    TFDS retries a failed request 10 times with exponential backoff (3.5 minutes
    offline) and sets no socket timeout, so a dropped connection can hang for minutes.
    """
    from tensorflow_datasets.core.download import downloader

    retries = getattr(downloader, "MAX_RETRIES", None)
    downloader.MAX_RETRIES = 1
    try:
        with socket_timeout():
            yield
    finally:
        if retries is not None:
            downloader.MAX_RETRIES = retries


def _short(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _tfds_arrays(builder, split):
    images, labels = [], []
    for image, label in (
        builder.as_dataset(split=split, as_supervised=True).batch(4096).as_numpy_iterator()
    ):
        images.append(image)
        labels.append(label)
    images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images[..., :3], labels


def _memory_examples(images, labels):
    return Examples(tf.data.Dataset.from_tensor_slices((images, labels)), len(labels))


def _tfds_stream(tfds, builder, split, count):
    # Shuffling still-encoded images keeps the buffer small; decoding happens after it.
    source = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=True,
        decoders={builder.info.supervised_keys[0]: tfds.decode.SkipDecoding()},
    )

    def encoded(data, label):
        # The records' bytes as stored (JPEG for imagenet2012): training decodes only the
        # random crop's window of a JPEG, as for folders and shards.
        return data, tf.cast(label, tf.int32)

    return Examples(
        source, count, to_encoded=encoded, shuffle_buffer=min(count, _STREAM_SHUFFLE_BUFFER)
    )




def tfds_eval_split(name, split, tfds_dir):
    """(encoded images and labels, class names) of a prepared TFDS split."""
    tfds = import_tfds()
    builder = prepared_builder(tfds, name, tfds_dir, None)
    _, label_key = builder.info.supervised_keys
    names = list(builder.info.features[label_key].names)
    try:
        # The records' own bytes (JPEG for imagenet2012, PNG for cifar10): decoded once, by
        # the same decoder (accurate DCT) as image files and the SavedModel, so a Keras
        # model and its export start from the same pixels.
        ds = builder.as_dataset(split=split, as_supervised=True, decoders={
            builder.info.supervised_keys[0]: tfds.decode.SkipDecoding()})
    except (KeyError, ValueError) as error:
        raise DataError(f"TFDS dataset '{name}' has no split '{split}' ({error}).") from error
    ds = ds.map(lambda encoded, label: (encoded, tf.cast(label, tf.int32)))
    return ds, names
