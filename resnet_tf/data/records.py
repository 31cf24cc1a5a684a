"""TFRecord shards of an image folder: the format, and reading it for training and evaluation.

`python -m resnet_tf prepare DIR OUT --shards N` writes them (`resnet_tf.data.prepare`).

ImageNet-sized data reads faster from a few large files than from a million small ones,
and TFRecord is TensorFlow's format for that (TFDS's `imagenet2012` and the Model Garden
use it). A prepared folder holds:

    manifest.json               format, class names, every shard's examples, bytes and SHA-256
    files.tsv                   relative path and label of every image, in the folder's order
    train-00000-of-00008.tfrecord ...

Each record is a `tf.train.Example` with the file's bytes as they are (`image/encoded`:
no re-encoding, so nothing is lost and the fused JPEG decode-and-crop applies), its label
(`image/class/label`, 0-based), its index in `files.tsv` (`image/index`) and its path
(`image/filename`). Images are spread over the shards in a seeded random order, so every
shard mixes every class. Only images that `decode_image` decodes are written (the manifest
says `"decoded": true`), so a reader skips damage (a failed CRC, which ends the reading of
that shard for the epoch) before decoding, and nothing after it.

Writing is atomic and resumable: each shard is written to a temporary name and renamed
once complete, a `.progress.json` lists the finished ones with their hashes, and the
manifest is written last. Rerunning the same command after a kill continues with the
first unfinished shard; a folder prepared from other files is refused.

`train.py --data-dir OUT` and `resnet-evaluate --data-dir OUT` recognise a prepared
folder by its manifest. `--val-split` holds out exactly the images it holds out of the
original folder (the same `val_mask` over the same file order), so a run on shards and a
run on the folder validate on the same images.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from resnet_tf.data.examples import Examples, val_mask
from resnet_tf.errors import DataError

MANIFEST = "manifest.json"
FILES = "files.tsv"
FORMAT = "resnet_tf.records/1"
PROGRESS = ".progress.json"
# Records read ahead of the model; shards are interleaved, so this mixes several of them.
SHUFFLE_BUFFER = 10_000

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/index": tf.io.FixedLenFeature([], tf.int64),
}


def is_records_folder(path):
    """Whether `path` is a folder written by `prepare_records` (it has a manifest)."""
    return path is not None and os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


def shard_name(index, shards):
    return f"train-{index:05d}-of-{shards:05d}.tfrecord"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path, *, verify_hashes=False):
    """The manifest of a prepared folder, checked against its shards; one `DataError` line
    for a missing or damaged manifest, a missing shard or a shard of another size
    (truncated or replaced), or with `verify_hashes`, of other content."""
    manifest_path = os.path.join(os.fspath(path), MANIFEST)
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        shard_files = manifest["shard_files"]
        class_names = manifest["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"Cannot read the shard manifest '{manifest_path}' "
                        f"({type(error).__name__}: {error}); expected the manifest.json that "
                        "`python -m resnet_tf prepare` writes: prepare the folder again.") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"'{manifest_path}' is not a shard manifest of this version. Received: "
                        f"format {manifest.get('format')!r}; expected {FORMAT!r}.")
    for entry in shard_files:
        shard = os.path.join(os.fspath(path), entry["file"])
        if not os.path.isfile(shard):
            raise DataError(f"Shard '{shard}' named in {MANIFEST} is missing; prepare the "
                            "folder again.")
        size = os.path.getsize(shard)
        if size != entry["bytes"]:
            raise DataError(f"Shard '{shard}' has {size} bytes where {MANIFEST} says "
                            f"{entry['bytes']}: it was truncated or replaced; prepare the "
                            "folder again.")
        if verify_hashes and sha256_of(shard) != entry["sha256"]:
            raise DataError(f"Shard '{shard}' does not have the SHA-256 {MANIFEST} records: "
                            "its content changed; prepare the folder again.")
    if len(class_names) < 1 or sum(e["examples"] for e in shard_files) != manifest["examples"]:
        raise DataError(f"'{manifest_path}' does not add up (classes or example counts); "
                        "prepare the folder again.")
    return manifest


def read_labels(path):
    """Labels of every image of a prepared folder, in `files.tsv` order (record indices)."""
    with open(os.path.join(os.fspath(path), FILES), encoding="utf-8") as f:
        return np.asarray([int(line.rsplit("\t", 1)[1]) for line in f if line.strip()], np.int32)


def record_splits(path, val_split, split_seed):
    """`(train Examples, validation Examples or None, class names)` of a prepared folder.

    Elements are `(encoded bytes, label)`; validation holds out `val_mask(labels,
    val_split, split_seed)`, the images `--val-split` holds out of the original folder.
    """
    manifest = read_manifest(path)
    labels = read_labels(path)
    present = np.ones(len(labels), bool)
    present[manifest["skipped_indices"]] = False  # unreadable files have no record
    if present.sum() != manifest["examples"]:
        raise DataError(f"'{os.path.join(path, FILES)}' lists {present.sum()} readable images "
                        f"where {MANIFEST} says {manifest['examples']}; prepare the folder again.")
    is_val = val_mask(labels, val_split, split_seed)
    shards = [os.path.join(os.fspath(path), e["file"]) for e in manifest["shard_files"]]
    # Shards of a prepare that decoded every image hold only images that decode, so the
    # pipeline need not skip decoding errors after its map (`ignore_errors` there keeps
    # tf.data from fusing the map into the batch, benchmarks/imagenet_input.py); older
    # ones do.
    decoded = manifest.get("decoded") is True

    def split(validation):
        table = tf.constant(is_val)
        ds = tf.data.Dataset.from_tensor_slices(shards)
        if not validation:  # a new shard order every epoch, records mixed across shards
            ds = ds.shuffle(len(shards), reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(shards), 16),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=validation or None)
        ds = ds.map(lambda record: tf.io.parse_single_example(record, FEATURES),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.filter(lambda r: tf.gather(table, r["image/index"]) == validation)
        ds = ds.map(lambda r: (r["image/encoded"], tf.cast(r["image/class/label"], tf.int32)))
        if decoded:  # damage fails a CRC in the reader (the shard's rest is lost): skipped here
            ds = ds.ignore_errors()
        count = int(((is_val if validation else ~is_val) & present).sum())
        return Examples(ds, count, may_fail=not decoded,
                        to_encoded=lambda encoded, label: (encoded, label),
                        shuffle_buffer=min(SHUFFLE_BUFFER, max(count, 1)))

    return split(False), split(True) if (is_val & present).any() else None, manifest["class_names"]
