"""Input pipelines: image folders, TFDS datasets and synthetic data as batched `tf.data`.

`load_data` returns batches of `(float32 [B, S, S, 3] normalized images, int32 [B] labels)`,
preprocessed by `resnet_tf.preprocessing` (re-exported here: `data.normalize`,
`data.preprocess_for_eval`, ...), which evaluation and the exported serving graph share.

Small datasets (decoded size under `_IN_MEMORY_LIMIT_BYTES`, CIFAR-10 is 150 MB) are
decoded once into memory; each epoch then only shuffles, augments and batches, which keeps
two CPU cores ahead of the model. Larger ones are streamed from files or TFDS records.
"""

import dataclasses
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from resnet_tf.errors import DataError

# The preprocessing is shared with evaluation and export; it is part of this module's API.
from resnet_tf.preprocessing import (  # noqa: F401
    MEAN,
    PRESETS,
    STD,
    _check_preset,
    _pad_crop_flip,
    decode_image,
    default_preset,
    normalize,
    preprocess_for_eval,
    preprocess_for_train,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# Also keeps `from_tensor_slices` constants clear of protobuf's 2 GiB limit, which a
# multi-worker strategy hits when it serializes the dataset graph.
_IN_MEMORY_LIMIT_BYTES = 1536 * 1024**2
_DEFAULT_IMAGE_SIZE = 224
_HEADER_SAMPLE = 64
# Decoded images from TFDS records are large; a file-level shuffle does the rest.
_STREAM_SHUFFLE_BUFFER = 4096
_DOWNLOAD_TIMEOUT_S = 10
_FOLDER_LAYOUT = "a folder with one sub-folder of images per class"
_OFFLINE_HINT = (
    "pass --data-dir PATH (a folder with one sub-folder per class) or --dataset synthetic"
)

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Data:
    """Batched train and validation pipelines plus what a trainer needs to know about them.

    Attributes:
        train: `tf.data.Dataset` of `(images, labels)` batches: shuffled, augmented, not
            repeated, `drop_remainder=True`.
        val: `tf.data.Dataset` or `None`. Eval-preprocessed batches in a fixed order.
        class_names: list of str. Index `i` names label `i`.
        image_size: int. Height and width of every batch image.
        preset: str. `"cifar"` or `"imagenet"`, the preprocessing applied.
        train_examples: int. Training images (an upper bound when streamed from files).
        val_examples: int. Validation images, 0 without a validation set.
        skipped_files: int. Image files that could not be decoded and were left out.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    class_names: list[str]
    image_size: int
    preset: str
    train_examples: int
    val_examples: int
    skipped_files: int = 0


def list_image_folder(path):
    """Lists a folder with one sub-folder of images per class.

    Class `i` is the `i`-th sub-folder name in sorted order, so labels are stable across
    machines. Sub-folders are searched recursively; hidden files and folders and files
    without an `IMAGE_EXTENSIONS` suffix (any case) are ignored.

    Returns:
        `(files, labels, class_names)`: lists of str paths, int labels and str names.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"Image folder '{path}' does not exist; expected {_FOLDER_LAYOUT}.")
    if not os.path.isdir(path):
        raise DataError(f"Expected {_FOLDER_LAYOUT}, received the file '{path}'.")
    class_names = sorted(
        e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")
    )
    if not class_names:
        raise DataError(
            f"Image folder '{path}' has no class sub-folders; expected {_FOLDER_LAYOUT}, "
            f"e.g. '{os.path.join(path, 'cat', '0001.jpg')}'."
        )
    files, labels, empty = [], [], []
    for label, name in enumerate(class_names):
        class_files = sorted(_walk_images(os.path.join(path, name)))
        if not class_files:
            empty.append(name)
        files += class_files
        labels += [label] * len(class_files)
    if not files:
        raise DataError(
            f"Image folder '{path}' has {len(class_names)} class sub-folders but no image files; "
            f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}."
        )
    if empty:
        named = ", ".join(repr(n) for n in empty)
        named = f"Class folder {named} has" if len(empty) == 1 else f"Class folders {named} have"
        raise DataError(
            f"{named} no image files in '{path}'; expected at least one file ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} in every class."
        )
    return files, labels, class_names


def load_data(
    dataset="cifar10",
    *,
    data_dir=None,
    val_dir=None,
    val_split=None,
    image_size=None,
    batch_size=128,
    seed=0,
    deterministic=False,
    augment=True,
    cache=True,
    tfds_dir=None,
    manual_dir=None,
    synthetic_examples=50000,
    synthetic_classes=10,
    preset=None,
):
    """Builds the train and validation pipelines.

    Args:
        dataset: str. A TFDS name (`"cifar10"`, `"imagenette"`, ...) or `"synthetic"`.
            Ignored when `data_dir` is given.
        data_dir: optional path to a folder with one sub-folder of images per class.
        val_dir: optional folder laid out like `data_dir` holding the validation images;
            its class names must equal the training folder's.
        val_split: optional float in (0, 1). Fraction of the training images held out for
            validation, per class and fixed by `seed`, when no `val_dir` (or, for TFDS, no
            `validation`/`test` split) exists. `None` or 0: no validation set.
        image_size: optional int. Output height and width; `None` uses the images' own size
            when they all share one square size, else 224.
        batch_size: int. Examples per batch.
        seed: int. Fixes the validation split, and the shuffle and augmentation when
            `deterministic`.
        deterministic: bool. Reproducible element order and augmentation, at some speed.
        augment: bool. Random crops and flips for training; `False` applies the
            evaluation preprocessing to training images too.
        cache: bool. Decode datasets under about 1.5 GB into memory once (the fast path);
            `False` always streams from files or TFDS records.
        tfds_dir: optional TFDS data directory (default `~/tensorflow_datasets`).
        manual_dir: optional folder of manually downloaded TFDS archives.
        synthetic_examples: int. Training examples per epoch of `"synthetic"`.
        synthetic_classes: int. Classes of `"synthetic"`.
        preset: optional str, `"cifar"` or `"imagenet"`; `None` uses `default_preset`.

    Image folders: unreadable files with an image suffix are skipped, counted in
    `skipped_files` and reported in one warning. In memory this is exact; streamed
    folders (too large for memory, or `cache=False`) drop such files on the fly with
    `ignore_errors`, which costs nothing up front but leaves them uncounted.
    """
    _check_positive_int("batch_size", batch_size)
    if image_size is not None:
        _check_positive_int("image_size", image_size)
    if preset is not None:
        _check_preset(preset)
    if val_split is not None and not (
        isinstance(val_split, (int, float, np.floating)) and 0 <= val_split < 1
    ):
        raise DataError(
            f"val_split must be a fraction in [0, 1), e.g. 0.1; received val_split={val_split!r}."
        )
    val_split = val_split or None
    if data_dir is not None:
        splits = _folder_splits(data_dir, val_dir, val_split, seed, cache)
    elif dataset == "synthetic":
        return _synthetic_data(
            image_size or 32,
            preset,
            batch_size,
            val_split,
            synthetic_examples,
            synthetic_classes,
            deterministic,
        )
    else:
        splits = _tfds_splits(dataset, tfds_dir, manual_dir, val_split, seed, cache)

    train, val, class_names, native_size, skipped = splits
    image_size = image_size or native_size or _DEFAULT_IMAGE_SIZE
    preset = preset or default_preset(image_size)
    train_count = train.count if train else 0
    if train_count < batch_size:
        raise DataError(
            f"batch_size={batch_size} is larger than the {train_count} training images; "
            f"expected batch_size <= {train_count}, since incomplete training batches are dropped."
        )
    build = dict(
        image_size=image_size,
        preset=preset,
        batch_size=batch_size,
        seed=seed,
        deterministic=deterministic,
    )
    return Data(
        train=_pipeline(train, training=True, augment=augment, **build),
        val=None if val is None else _pipeline(val, training=False, augment=False, **build),
        class_names=list(class_names),
        image_size=image_size,
        preset=preset,
        train_examples=train.count,
        val_examples=0 if val is None else val.count,
        skipped_files=skipped,
    )


@dataclasses.dataclass
class _Examples:
    """One split before preprocessing.

    `source` is cheap to shuffle (in-memory arrays, file names or encoded records) and
    `to_image` turns one of its elements into `(uint8 image, int32 label)`.
    """

    source: tf.data.Dataset
    count: int
    to_image: Callable | None = None
    may_fail: bool = False
    shuffle_buffer: int | None = None


def _pipeline(examples, *, training, augment, image_size, preset, batch_size, seed, deterministic):
    seed = seed if deterministic else None
    ds = examples.source
    if training:
        ds = ds.shuffle(
            examples.shuffle_buffer or examples.count, seed=seed, reshuffle_each_iteration=True
        )
    to_image = examples.to_image or (lambda image, label: (image, label))
    if training and augment and preset == "cifar" and examples.to_image is None:
        ds = _zip_seeds(ds.batch(batch_size, drop_remainder=True), seed)

        def augment_batch(batch, batch_seed):
            images, labels = batch
            return normalize(_pad_crop_flip(images, image_size, batch_seed)), labels

        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        if training and augment:
            ds = _zip_seeds(ds, seed)

            def prepare(element, image_seed):
                image, label = to_image(*element)
                return preprocess_for_train(image, image_size, preset, image_seed), label
        else:

            def prepare(*element):
                image, label = to_image(*element)
                return preprocess_for_eval(image, image_size, preset), label

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        if examples.may_fail:
            ds = ds.ignore_errors()
        ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def _zip_seeds(ds, seed):
    """Pairs every element with a fresh `[2]` seed for stateless random ops.

    A seed travels with its element, so augmentation is reproducible even when the
    parallel map finishes out of order; `rerandomize_each_iteration` varies it per epoch.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds)


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    # The AUTO default tries FILE sharding first, which in-memory and TFDS pipelines
    # cannot do, and every replica logs a warning before falling back to DATA.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _folder_splits(data_dir, val_dir, val_split, seed, cache):
    files, labels, class_names = list_image_folder(data_dir)
    roots = [os.fspath(data_dir)] * len(files)
    labels = np.asarray(labels, np.int32)
    if val_dir is not None:
        val_files, val_labels, val_names = list_image_folder(val_dir)
        if val_names != class_names:
            only_train = sorted(set(class_names) - set(val_names))
            only_val = sorted(set(val_names) - set(class_names))
            raise DataError(
                f"Validation folder '{val_dir}' must have the same class sub-folders as "
                f"'{data_dir}'; only in training: {only_train}, only in validation: {only_val}."
            )
        is_val = np.r_[np.zeros(len(files), bool), np.ones(len(val_files), bool)]
        files, roots = files + val_files, roots + [os.fspath(val_dir)] * len(val_files)
        labels = np.r_[labels, np.asarray(val_labels, np.int32)]
    else:
        is_val = _val_mask(labels, val_split, seed)

    sizes = _sample_sizes(files)
    estimate = np.mean([h * w * 3 for h, w in sizes]) * len(files) if sizes else 0
    if cache and estimate < _IN_MEMORY_LIMIT_BYTES:
        return _decode_folder_into_memory(files, labels, roots, is_val, class_names)

    # Streaming: decode from file names each epoch; the image size is a guess from the sample.
    native = sizes[0][0] if sizes and all(s == (sizes[0][0],) * 2 for s in sizes) else None
    train = _stream_files(np.asarray(files)[~is_val], labels[~is_val])
    val = _stream_files(np.asarray(files)[is_val], labels[is_val]) if is_val.any() else None
    return train, val, class_names, native, 0


def _walk_images(folder):
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, name)


def _val_mask(labels, val_split, seed):
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


def _sample_sizes(files):
    """`(height, width)` of a fixed sample of files, read from headers only."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sample = rng.choice(len(files), min(_HEADER_SAMPLE, len(files)), replace=False)
    sizes = []
    for i in sample:
        try:
            with Image.open(files[i]) as image:
                sizes.append(image.size[::-1])
        except Exception:  # Unreadable files are the decode pass's business.
            pass
    return sizes


def _decode_folder_into_memory(files, labels, roots, is_val, class_names):
    start = time.perf_counter()
    paths = tf.data.Dataset.from_tensor_slices((files, np.arange(len(files))))

    def decode(path, index):
        image = decode_image(tf.io.read_file(path))
        return tf.reshape(image, [-1]), tf.shape(image)[:2], index

    decoded = (
        paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().ragged_batch(1024)
    )
    decoded = decoded.with_options(_options(deterministic=False))  # Sorted by index below.
    values, lengths, shapes, indices = [], [], [], []
    for flat, shape, index in decoded:
        values.append(flat.flat_values.numpy())
        lengths.append(flat.row_lengths().numpy())
        shapes.append(shape.numpy())
        indices.append(index.numpy())
    if not indices:
        raise DataError(
            f"None of the {len(files)} image files in '{roots[0]}' could be decoded "
            f"(e.g. '{files[0]}'); expected JPEG, PNG, BMP or GIF images."
        )
    values, lengths = np.concatenate(values), np.concatenate(lengths)
    shapes, indices = np.concatenate(shapes).astype(np.int32), np.concatenate(indices)

    ok = np.zeros(len(files), bool)
    ok[indices] = True
    _warn_skipped(files, roots, ok)
    _log.info(
        "Decoded %d images (%.0f MB) into memory in %.1f s.",
        len(indices),
        values.nbytes / 1e6,
        time.perf_counter() - start,
    )

    # Parallel decoding finishes out of order; file order keeps runs reproducible.
    order = np.argsort(indices)
    starts = (np.cumsum(lengths) - lengths)[order]
    indices, shapes, lengths = indices[order], shapes[order], lengths[order]
    uniform = bool((shapes == shapes[0]).all())
    if uniform:
        images = values.reshape(-1, *shapes[0], 3)[order]
    labels, val_of = labels[indices], is_val[indices]

    def split(mask):
        if not mask.any():
            return None
        if uniform:
            return _Examples(
                tf.data.Dataset.from_tensor_slices((images[mask], labels[mask])), int(mask.sum())
            )
        # Mixed sizes cannot share one array: keep the pixels flat, ragged by image.
        keep = np.flatnonzero(mask)
        flat = tf.RaggedTensor.from_row_lengths(
            np.concatenate([values[starts[i] : starts[i] + lengths[i]] for i in keep]),
            lengths[keep],
        )
        source = tf.data.Dataset.from_tensor_slices((flat, shapes[keep], labels[keep]))
        return _Examples(source, len(keep), to_image=_unflatten)

    native = int(shapes[0][0]) if uniform and shapes[0][0] == shapes[0][1] else None
    return split(~val_of), split(val_of), class_names, native, int((~ok).sum())


def _unflatten(flat, shape, label):
    return tf.reshape(flat, tf.concat([shape, [3]], 0)), label


def _warn_skipped(files, roots, ok):
    for root in dict.fromkeys(roots):
        bad = [f for f, r, good in zip(files, roots, ok) if r == root and not good]
        if bad:
            noun = "file" if len(bad) == 1 else "files"
            warnings.warn(
                f"Skipped {len(bad)} unreadable image {noun} in {root} (e.g. {bad[0]})",
                stacklevel=5,
            )


def _stream_files(files, labels):
    def read(path, label):
        return decode_image(tf.io.read_file(path)), label

    source = tf.data.Dataset.from_tensor_slices((files, labels))
    return _Examples(source, len(files), to_image=read, may_fail=True)


def _tfds_splits(name, tfds_dir, manual_dir, val_split, seed, cache):
    import tensorflow_datasets as tfds

    builder = _prepared_builder(tfds, name, tfds_dir, manual_dir)
    info = builder.info
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise DataError(
            f"TFDS dataset '{name}' has no (image, label) supervised keys; "
            "expected an image-classification dataset."
        )
    image_key, label_key = info.supervised_keys
    names = getattr(info.features[label_key], "names", None)
    if "train" not in info.splits or not names:
        raise DataError(
            f"TFDS dataset '{name}' has splits {sorted(info.splits)} and label feature "
            f"{type(info.features[label_key]).__name__}; expected a 'train' split and class labels."
        )
    held_out = next((s for s in ("validation", "test") if s in info.splits), None)
    shape = tuple(info.features[image_key].shape)
    native = shape[0] if None not in shape[:2] and shape[0] == shape[1] else None
    total = sum(info.splits[s].num_examples for s in ("train", held_out) if s)
    in_memory = (
        cache and None not in shape and total * shape[0] * shape[1] * 3 < _IN_MEMORY_LIMIT_BYTES
    )

    if in_memory:
        images, labels = _tfds_arrays(builder, "train")
        if held_out:
            train = _memory_examples(images, labels)
            val = _memory_examples(*_tfds_arrays(builder, held_out))
        else:
            is_val = _val_mask(labels, val_split, seed)
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


def _prepared_builder(tfds, name, tfds_dir, manual_dir):
    try:
        builder = tfds.builder(name, data_dir=tfds_dir)
    except Exception as error:
        raise DataError(
            f"Could not find TFDS dataset '{name}' ({_short(error)}); expected a TFDS "
            f"image-classification name such as 'cifar10', or {_OFFLINE_HINT}."
        ) from error
    if builder.is_prepared():
        return builder
    try:
        with _fail_fast_downloads():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
    except Exception as error:
        raise DataError(
            f"Could not load TFDS dataset '{name}' (not prepared in {builder.data_dir} and it "
            f"could not be downloaded: {_short(error)}); offline, {_OFFLINE_HINT}."
        ) from error
    return builder


@contextmanager
def _fail_fast_downloads():
    """Makes a TFDS download fail in seconds when there is no network.

    TFDS retries a failed request 10 times with exponential backoff (3.5 minutes
    offline) and sets no socket timeout, so a dropped connection can hang for minutes.
    """
    from tensorflow_datasets.core.download import downloader

    retries, timeout = getattr(downloader, "MAX_RETRIES", None), socket.getdefaulttimeout()
    downloader.MAX_RETRIES = 1
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(timeout)
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
    return _Examples(tf.data.Dataset.from_tensor_slices((images, labels)), len(labels))


def _tfds_stream(tfds, builder, split, count):
    # Shuffling still-encoded images keeps the buffer small; decoding happens after it.
    source = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=True,
        decoders={builder.info.supervised_keys[0]: tfds.decode.SkipDecoding()},
    )

    def decode(data, label):
        return decode_image(data), tf.cast(label, tf.int32)

    return _Examples(
        source, count, to_image=decode, shuffle_buffer=min(count, _STREAM_SHUFFLE_BUFFER)
    )


def _synthetic_data(image_size, preset, batch_size, val_split, examples, classes, deterministic):
    """Random images, one fixed normalized batch repeated so the input costs nothing per step."""
    _check_positive_int("synthetic_examples", examples)
    _check_positive_int("synthetic_classes", classes)
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
    options = _options(deterministic)
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
        class_names=[f"class_{i}" for i in range(classes)],
        image_size=image_size,
        preset=preset or default_preset(image_size),
        train_examples=n_train // batch_size * batch_size,
        val_examples=n_val,
    )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer; received {name}={value!r}.")
