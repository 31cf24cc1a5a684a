"""Input pipelines: image folders, TFDS datasets and synthetic data as batched `tf.data`.

`load_data` returns batches of `(float32 [B, S, S, 3] normalized images, int32 [B] labels)`,
preprocessed by `resnet_tf.data.preprocessing`, which evaluation and the exported serving
graph share.

Small datasets (decoded size under `IN_MEMORY_LIMIT_BYTES`, CIFAR-10 is 150 MB) are
decoded once into memory; each epoch then only shuffles, augments and batches, which keeps
two CPU cores ahead of the model. Larger ones are streamed from files or TFDS records.
"""

import logging
import os
import time
import typing
import warnings

import numpy as np
import tensorflow as tf

from resnet_tf.data.augment import batch_augmenter, check_augmentation, check_classes  # issue 13
from resnet_tf.data.examples import (
    IN_MEMORY_LIMIT_BYTES,
    Data,
    Examples,
    check_positive_int,
    dataset_options,
    val_mask,
)
from resnet_tf.data.folders import list_image_folder
from resnet_tf.data.headers import MAX_IMAGE_PIXELS
from resnet_tf.data.preprocessing import (
    CIFAR_PAD,
    check_preset,
    decode_image,
    default_preset,
    normalize,
    pad_crop_flip,
    preprocess_encoded_for_train,
    preprocess_for_eval,
    preprocess_for_train,
    resize_to,
)
from resnet_tf.data.records import is_records_folder, read_manifest, record_splits
from resnet_tf.data.synthetic import synthetic_data
from resnet_tf.data.tfds import tfds_facts, tfds_splits
from resnet_tf.errors import DataError
from resnet_tf.models.transform import EvalTransform
from resnet_tf.runs import default_class_names

_DEFAULT_IMAGE_SIZE = 224
_HEADER_SAMPLE = 64
_NAMED_FILES = 5  # odd-sized files a warning names

_log = logging.getLogger(__name__)


def load_data(
    dataset="cifar10",
    *,
    data_dir=None,
    val_dir=None,
    val_split=None,
    image_size=None,
    train_size=None,
    batch_size=128,
    seed=0,
    split_seed=None,
    deterministic=False,
    augment=True,
    cache=True,
    tfds_dir=None,
    manual_dir=None,
    synthetic_examples=50000,
    synthetic_classes=10,
    preset=None,
    mixup=0.0,
    cutmix=0.0,
    random_erasing=0.0,
    crop_padding=CIFAR_PAD,
    eval_transform=None,
    train_pixels="normalized",
):
    """Builds the train and validation pipelines.

    Args:
        dataset: str. A TFDS name (`"cifar10"`, `"imagenette"`, ...) or `"synthetic"`.
            Ignored when `data_dir` is given.
        data_dir: optional path to a folder with one sub-folder of images per class.
        val_dir: optional folder laid out like `data_dir` holding the validation images;
            its class names must equal the training folder's.
        val_split: optional float in (0, 1). Fraction of the training images held out for
            validation, per class and fixed by `split_seed`, when no `val_dir` (or, for
            TFDS, no `validation`/`test` split) exists. `None` or 0: no validation set.
        image_size: optional int. Output height and width; `None` uses the images' own
            size when more than half of them share one square size (the others are resized
            to it, with a warning naming them), else 224. Validation images (and, without
            `train_size`, training images) come out at this size.
        train_size: optional int. Size of the training crops when it should differ from
            `image_size` (train/test resolution, FixRes: torchvision's `--train-crop-size`,
            e.g. 176 for evaluation at 224). The "imagenet" preset's random-resized crop
            is resized to it; the "cifar" preset's padded crop is.
        batch_size: int. Examples per batch.
        seed: int. Fixes the shuffle and augmentation when `deterministic`, and the
            validation split when `split_seed` is None.
        split_seed: optional int. Fixes the validation split; `None`: `seed`.
        deterministic: bool. Reproducible element order and augmentation, at some speed.
        augment: bool or str, the training augmentation policy (`resnet_tf.data.augment`):
            `"basic"` (= `True`): random crop and flip; `"randaugment"`, `"augmix"`: the
            basic crop and flip, then Keras' RandAugment or AugMix operations;
            `"none"` (= `False`): the evaluation preprocessing, for training images too.
        mixup: float >= 0. MixUp's Beta alpha (e.g. 0.2), 0 for none.
        cutmix: float >= 0. CutMix's Beta alpha (e.g. 1.0), 0 for none. With both, each
            batch uses one of the two, with probability 0.5 each. Either one makes the
            training labels mixed one-hot float32 `[B, classes]` (`Data.one_hot_labels`).
        random_erasing: float in [0, 1]. Probability of erasing a random rectangle of each
            (normalized) training image with noise, 0 for none.
        crop_padding: int >= 0. The "cifar" preset's zero padding, in pixels per side,
            before its random crop (the crop moves the image by up to this much).
        cache: bool. Decode datasets under about 1.5 GB into memory once (the fast path);
            `False` always streams from files or TFDS records.
        tfds_dir: optional TFDS data directory (default `~/tensorflow_datasets`).
        manual_dir: optional folder of manually downloaded TFDS archives.
        synthetic_examples: int. Training examples per epoch of `"synthetic"`.
        synthetic_classes: int. Classes of `"synthetic"`.
        preset: optional str, `"cifar"` or `"imagenet"`; `None` uses `default_preset`.
        eval_transform: optional `EvalTransform`: how validation images (and training
            images without augmentation) are resized and cropped, e.g. pretrained
            weights' own (`transform_of`); `None`: `preset`'s at `image_size`.
        train_pixels: str. `"normalized"`: training batches of normalized float32 images.
            `"uint8"`: the "imagenet" preset's crops and flips as uint8 pixels, a quarter
            of the bytes and no normalization on the CPU, for a training step that
            normalizes them on the accelerator (`train.py` does); the per-batch policies
            (RandAugment, AugMix, TrivialAugment, MixUp, CutMix, random erasing) work on
            normalized images and refuse it. `"auto"`: uint8 where it applies, else
            normalized. `Data.train_pixels` says which.

    Image folders need at least two classes. A file reachable by several paths (links)
    is used once; files of `data_dir` that are also in `val_dir` are used for validation
    only, with a warning. Unreadable files with an image suffix are skipped, counted in
    `skipped_files` and reported in one warning. In memory this is exact; streamed
    folders (too large for memory, or `cache=False`) drop such files on the fly with
    `ignore_errors`, which costs nothing up front but leaves them uncounted.
    """
    check_positive_int("batch_size", batch_size)
    augmentation = check_augmentation(augment, mixup, cutmix, random_erasing, crop_padding)
    if train_pixels not in TRAIN_PIXELS:
        raise DataError(f"train_pixels must be one of {', '.join(TRAIN_PIXELS)}. Received: "
                        f"train_pixels={train_pixels!r}; expected one of them.")
    if image_size is not None:
        check_positive_int("image_size", image_size)
    if train_size is not None:
        check_positive_int("train_size", train_size)
    if preset is not None:
        check_preset(preset)
    if val_split is not None and not (
        isinstance(val_split, (int, float, np.floating)) and 0 <= val_split < 1
    ):
        raise DataError(
            f"val_split must be a fraction in [0, 1). Received: val_split={val_split!r}; expected e.g. 0.1."
        )
    val_split = val_split or None
    split_seed = seed if split_seed is None else split_seed
    if is_records_folder(data_dir):
        splits = _record_splits(data_dir, val_dir, val_split, split_seed)
    elif data_dir is not None:
        splits = _folder_splits(data_dir, val_dir, val_split, split_seed, cache)
    elif dataset == "synthetic":
        return synthetic_data(
            image_size or 32,
            preset,
            batch_size,
            val_split,
            synthetic_examples,
            synthetic_classes,
            deterministic,
        )
    else:
        splits = tfds_splits(dataset, tfds_dir, manual_dir, val_split, split_seed, cache)

    train, val, class_names, native_size, skipped = splits
    image_size = image_size or native_size or _DEFAULT_IMAGE_SIZE
    preset = preset or default_preset(image_size)
    if eval_transform is not None:  # at the size the model takes, its crop fraction kept
        eval_transform = EvalTransform.from_config(eval_transform).at_size(image_size)
    if train_size and native_size and train_size > native_size:
        # An upscaled --image-size is how pretrained weights meet small images; training
        # crops larger than the images they are cut from only blur.
        raise DataError(f"train_size is larger than the images. Received: train_size="
                        f"{train_size} for images of {native_size}x{native_size}; expected at "
                        f"most {native_size}.")
    train_size = train_size or image_size
    train_count = train.count if train else 0
    if train_count < batch_size:
        raise DataError(
            f"batch_size={batch_size} is larger than the {train_count} training images; "
            f"expected batch_size <= {train_count}, since incomplete training batches are dropped."
        )
    check_classes(augmentation, class_names)  # issue 13
    after = batch_augmenter(augmentation, len(class_names))  # issue 13
    pixels = _uint8_training(train_pixels, preset, augmentation, after)
    build = dict(
        image_size=image_size,
        preset=preset,
        transform=eval_transform,
        batch_size=batch_size,
        seed=seed,
        deterministic=deterministic,
    )
    return Data(
        train=_pipeline(
            train,
            training=True,
            augment=augmentation.crop_flip,
            crop_padding=augmentation.crop_padding,
            after=after,
            train_size=train_size,
            pixels=pixels,
            **build,
        ),
        val=None if val is None else _pipeline(val, training=False, augment=False, **build),
        class_names=list(class_names),
        image_size=image_size,
        train_size=train_size,
        preset=preset,
        train_examples=train.count,
        val_examples=0 if val is None else val.count,
        skipped_files=skipped,
        one_hot_labels=augmentation.one_hot_labels,  # issue 13
        train_pixels="uint8" if pixels else "normalized",
    )


TRAIN_PIXELS = ("normalized", "uint8", "auto")


def _uint8_training(train_pixels, preset, augmentation, after):
    """Whether training batches are uint8 pixels (`load_data`'s `train_pixels`)."""
    possible = preset == "imagenet" and augmentation.crop_flip and after is None
    if train_pixels == "uint8" and not possible:
        why = (f"preset={preset!r}" if preset != "imagenet" else
               "augment='none'" if not augmentation.crop_flip else
               "a per-batch augmentation (RandAugment, AugMix, TrivialAugment, MixUp, CutMix "
               "or random erasing)")
        raise DataError(f"train_pixels='uint8' needs the imagenet preset's crop and flip alone. "
                        f"Received: {why}; expected train_pixels='normalized' or 'auto' for it.")
    return train_pixels != "normalized" and possible


class DataFacts(typing.NamedTuple):
    """What a run must know of its data before building the pipelines."""

    class_names: list  # str, in label order
    image_size: int  # what `load_data` uses without `image_size`


def probe_data(dataset="cifar10", *, data_dir=None, val_dir=None, tfds_dir=None,
               synthetic_classes=10):
    """The class names and image size `load_data` finds, read cheaply: folder and file
    names and the headers of a fixed sample of images, or a TFDS dataset's description
    (nothing is downloaded or decoded).

    The size follows `load_data`'s rule (the square size most images share, else 224),
    from the same sample of headers that streamed folders use; for a folder decoded into
    memory that sample stands for every image.
    """
    if data_dir is not None:
        files, _, class_names = list_image_folder(data_dir)
        if val_dir is not None:
            files = files + list_image_folder(val_dir)[0]
        common, _ = _common_size(_sample_sizes(files)[1])
        native = common[0] if common and common[0] == common[1] else None
    elif dataset == "synthetic":
        class_names, native = default_class_names(synthetic_classes), 32
    else:
        class_names, native = tfds_facts(dataset, tfds_dir)
    return DataFacts(list(class_names), native or _DEFAULT_IMAGE_SIZE)


def _pipeline(
    examples, *, training, augment, image_size, preset, batch_size, seed, deterministic, after=None,
    crop_padding=CIFAR_PAD, train_size=None, transform=None, pixels=False,
):
    # `after`: an optional `augment.BatchAugmenter`, run on every batch after the crop and
    # flip; it normalizes (issue 13).
    seed = seed if deterministic else None
    train_size = train_size or image_size
    # The cifar preset crops at the image size, then resizes; the imagenet preset's
    # random-resized crop is made at the training size directly.
    crop_size = train_size if preset == "imagenet" else image_size
    ds = examples.source
    if training:
        ds = ds.shuffle(
            examples.shuffle_buffer or examples.count, seed=seed, reshuffle_each_iteration=True
        )
    to_image = examples.to_image or (lambda image, label: (image, label))
    if examples.to_encoded is not None:
        def to_image(*element):
            encoded, label = examples.to_encoded(*element)
            return decode_image(encoded), label
    in_memory = examples.to_image is None and examples.to_encoded is None
    if training and augment and preset == "cifar" and in_memory:
        ds = _zip_seeds(ds.batch(batch_size, drop_remainder=True), seed)

        def augment_batch(batch, batch_seed):
            images, labels = batch
            images = resize_to(pad_crop_flip(images, image_size, batch_seed, crop_padding),
                               train_size)
            if after is not None:  # issue 13: the same seed, folded, for what comes after
                return after(images, labels, batch_seed)
            return normalize(images), labels

        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        if training and augment:
            ds = _zip_seeds(ds, seed)

            def prepare(element, image_seed):
                if examples.to_encoded is not None:  # JPEG: decode the crop window only
                    encoded, label = examples.to_encoded(*element)
                    return resize_to(preprocess_encoded_for_train(
                        encoded, crop_size, preset, image_seed, crop_padding, pixels),
                        train_size), label
                image, label = to_image(*element)
                return resize_to(preprocess_for_train(image, crop_size, preset, image_seed,
                                                      crop_padding, pixels), train_size), label
        else:

            def prepare(*element):
                image, label = to_image(*element)
                return preprocess_for_eval(image, image_size, preset,
                                           transform=transform), label

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        if examples.may_fail:
            ds = ds.ignore_errors()
        ds = ds.batch(batch_size, drop_remainder=training)
        if after is not None:  # issue 13
            ds = after.map_batches(ds, seed)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(dataset_options(deterministic))


def _zip_seeds(ds, seed):
    """Pairs every element with a fresh `[2]` seed for stateless random ops.

    A seed travels with its element, so augmentation is reproducible even when the
    parallel map finishes out of order; `rerandomize_each_iteration` varies it per epoch.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds)


def _record_splits(data_dir, val_dir, val_split, split_seed):
    """TFRecord shards (`resnet_tf.data.records`); `val_dir` may be prepared shards too."""
    train, val, class_names = record_splits(data_dir, None if val_dir else val_split, split_seed)
    if val_dir is not None:
        if not is_records_folder(val_dir):
            raise DataError(f"--val-dir must be prepared shards too when --data-dir is. Received: "
                            f"--val-dir '{val_dir}' without a manifest.json; expected the output "
                            "of `python -m resnet_tf prepare`.")
        val, _, val_names = record_splits(val_dir, None, split_seed)
        if val_names != class_names:
            raise DataError(f"Validation shards '{val_dir}' must have the classes of "
                            f"'{data_dir}'. Received: {val_names}; expected {class_names}.")
    manifest = read_manifest(data_dir)
    return train, val, class_names, manifest.get("image_size"), len(manifest["skipped_indices"])


def native_square_size(files):
    """The side of the square size most of `files` have (from a sample of headers), else None."""
    _, sizes = _sample_sizes(files)
    common, _ = _common_size(sizes)
    return int(common[0]) if common and common[0] == common[1] else None


def _folder_splits(data_dir, val_dir, val_split, split_seed, cache):
    files, labels, class_names = list_image_folder(data_dir)
    if len(class_names) < 2:
        raise DataError(
            f"Too few classes to train. Received: {len(class_names)} class folder "
            f"({', '.join(repr(n) for n in class_names)}) in '{data_dir}'; expected at least 2."
        )
    roots = [os.fspath(data_dir)] * len(files)
    if val_dir is not None:
        val_files, val_labels, val_names = list_image_folder(val_dir)
        if val_names != class_names:
            only_train = sorted(set(class_names) - set(val_names))
            only_val = sorted(set(val_names) - set(class_names))
            raise DataError(
                f"Validation folder '{val_dir}' must have the same class sub-folders as "
                f"'{data_dir}'; only in training: {only_train}, only in validation: {only_val}."
            )
        files, labels = _without_validation_files(files, labels, val_files, data_dir, val_dir)
        roots = roots[: len(files)]
    labels = np.asarray(labels, np.int32)
    if val_dir is not None:
        is_val = np.r_[np.zeros(len(files), bool), np.ones(len(val_files), bool)]
        files, roots = files + val_files, roots + [os.fspath(val_dir)] * len(val_files)
        labels = np.r_[labels, np.asarray(val_labels, np.int32)]
    else:
        is_val = val_mask(labels, val_split, split_seed)

    sampled, sizes = _sample_sizes(files)
    estimate = np.mean([h * w * 3 for h, w in sizes]) * len(files) if sizes else 0
    if cache and estimate < IN_MEMORY_LIMIT_BYTES:
        return _decode_folder_into_memory(files, labels, roots, is_val, class_names)

    # Streaming: decode from file names each epoch; the image size is a guess from the sample.
    common, odd = _common_size(sizes)
    native = common[0] if common and common[0] == common[1] else None
    if native and odd.size:
        _warn_resized([sampled[i] for i in odd], common, len(sizes), roots, sampled=True)
    train = _stream_files(np.asarray(files)[~is_val], labels[~is_val])
    val = _stream_files(np.asarray(files)[is_val], labels[is_val]) if is_val.any() else None
    return train, val, class_names, native, 0


def _without_validation_files(files, labels, val_files, data_dir, val_dir):
    """Leaves the files that are also in `val_dir` (the same file: a link, a hard link, the
    same folder) out of training, with a warning, so the two never share an image."""
    held_out = {key for key in map(_file_key, val_files) if key is not None}
    shared = [i for i, f in enumerate(files) if _file_key(f) in held_out]
    if not shared:
        return files, labels
    if len(shared) == len(files):
        raise DataError(
            f"The validation folder holds every training image. Received: val_dir='{val_dir}' "
            f"with all {len(files)} images of data_dir='{data_dir}'; expected validation "
            "images apart from the training ones."
        )
    warnings.warn(
        f"{len(shared)} image file(s) of '{data_dir}' are also in the validation folder "
        f"'{val_dir}' (e.g. '{files[shared[0]]}'); they are used for validation only.",
        stacklevel=5,
    )
    drop = set(shared)
    keep = [i for i in range(len(files)) if i not in drop]
    return [files[i] for i in keep], [labels[i] for i in keep]


def _file_key(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _sample_sizes(files):
    """A fixed sample of files and their `(height, width)`, read from headers only."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sample = rng.choice(len(files), min(_HEADER_SAMPLE, len(files)), replace=False)
    sampled, sizes = [], []
    for i in sorted(sample):
        try:
            with warnings.catch_warnings():
                # A decompression bomb is the decode pass's to skip and name, not PIL's.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(files[i])
            with image:
                if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
                    continue  # decoding skips it
                sizes.append(image.size[::-1])
                sampled.append(files[i])
        except Exception:  # Unreadable files are the decode pass's business.
            pass
    return sampled, sizes


def _common_size(sizes):
    """`((height, width), odd)`: the size most images have and the indices of the others,
    or `(None, [])` when no size is shared by more than half of them."""
    if len(sizes) == 0:
        return None, np.zeros(0, int)
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    unique, counts = np.unique(sizes, axis=0, return_counts=True)
    best = int(np.argmax(counts))  # ties: the smallest size, deterministically
    if counts[best] * 2 <= len(sizes):
        return None, np.zeros(0, int)
    common = (int(unique[best][0]), int(unique[best][1]))
    return common, np.flatnonzero((sizes != unique[best]).any(axis=1))


def _warn_resized(files, size, total, roots, sampled=False):
    shown = [_relative(f, roots) for f in files[:_NAMED_FILES]]
    more = ", ..." if len(files) > _NAMED_FILES else ""
    n = len(files)
    counted = f"{n} of {total} sampled images" if sampled else f"{n} image{'s' * (n != 1)}"
    warnings.warn(
        f"{counted} {'are' if n != 1 or sampled else 'is'} not {size[0]}x{size[1]} like the "
        f"others and {'are' if n != 1 or sampled else 'is'} resized to it: "
        f"{', '.join(shown)}{more}",
        stacklevel=6,
    )


def _relative(path, roots):
    for root in dict.fromkeys(roots):
        relative = os.path.relpath(path, root)
        if not relative.startswith(os.pardir):
            return relative
    return path


def undecodable_files(files):
    """Indices (sorted) of the `files` that `decode_image` cannot decode, the files training
    skips as unreadable: all of them decoded once, in parallel, nothing kept."""
    paths = tf.data.Dataset.from_tensor_slices((list(files), np.arange(len(files))))

    def decode(path, index):
        return index, tf.size(decode_image(tf.io.read_file(path)))  # the size keeps the decode

    decoded = (paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
               .batch(4096).with_options(dataset_options(deterministic=False)))
    good = np.zeros(len(files), bool)
    for indices, _ in decoded:
        good[indices.numpy()] = True
    return [int(i) for i in np.flatnonzero(~good)]


def _decode_folder_into_memory(files, labels, roots, is_val, class_names):
    start = time.perf_counter()
    paths = tf.data.Dataset.from_tensor_slices((files, np.arange(len(files))))

    def decode(path, index):
        image = decode_image(tf.io.read_file(path))
        return tf.reshape(image, [-1]), tf.shape(image)[:2], index

    decoded = (
        paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().ragged_batch(1024)
    )
    decoded = decoded.with_options(dataset_options(deterministic=False))  # Sorted by index below.
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
    else:
        # A few odd sizes among square images of one size: resize those few, so the
        # data keeps its own size (and recipe) and the fast in-memory path.
        common, odd = _common_size(shapes)
        if common and common[0] == common[1]:
            _warn_resized([files[i] for i in indices[odd]], common, len(indices), roots)
            images = _uniform_images(values, starts, lengths, shapes, common)
            shapes[:] = common
            uniform = True
    labels, val_of = labels[indices], is_val[indices]

    def split(mask):
        if not mask.any():
            return None
        if uniform:
            return Examples(
                tf.data.Dataset.from_tensor_slices((images[mask], labels[mask])), int(mask.sum())
            )
        # Mixed sizes cannot share one array: keep the pixels flat, ragged by image.
        keep = np.flatnonzero(mask)
        flat = tf.RaggedTensor.from_row_lengths(
            np.concatenate([values[starts[i] : starts[i] + lengths[i]] for i in keep]),
            lengths[keep],
        )
        source = tf.data.Dataset.from_tensor_slices((flat, shapes[keep], labels[keep]))
        return Examples(source, len(keep), to_image=_unflatten)

    native = int(shapes[0][0]) if uniform and shapes[0][0] == shapes[0][1] else None
    return split(~val_of), split(val_of), class_names, native, int((~ok).sum())


def _uniform_images(values, starts, lengths, shapes, size):
    """uint8 `[N, H, W, 3]` of flat decoded images, those of another size resized (bilinear,
    antialiased, as preprocessing resizes)."""
    images = np.empty((len(starts), *size, 3), np.uint8)
    for k, (start, length, shape) in enumerate(zip(starts, lengths, shapes)):
        pixels = values[start : start + length].reshape(shape[0], shape[1], 3)
        if tuple(shape) != size:
            resized = tf.image.resize(pixels, size, antialias=True)
            pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
        images[k] = pixels
    return images


def _unflatten(flat, shape, label):
    return tf.reshape(flat, tf.concat([shape, [3]], 0)), label


def _warn_skipped(files, roots, ok):
    for root in dict.fromkeys(roots):
        bad = [f for f, r, good in zip(files, roots, ok) if r == root and not good]
        if bad:
            noun = "file" if len(bad) == 1 else "files"
            named = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            warnings.warn(
                f"Skipped {len(bad)} unreadable image {noun} in {root} (corrupt, or larger "
                f"than {MAX_IMAGE_PIXELS} pixels): {named}",
                stacklevel=5,
            )


def _stream_files(files, labels):
    def read(path, label):
        return tf.io.read_file(path), label

    source = tf.data.Dataset.from_tensor_slices((files, labels))
    return Examples(source, len(files), to_encoded=read, may_fail=True)


