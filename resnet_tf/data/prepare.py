"""Writing an image folder as TFRecord shards: `python -m resnet_tf prepare DIR OUT --shards N`.

The format and its reader are `resnet_tf.data.records`. Writing is atomic and resumable:
each shard goes to a temporary name and is renamed once complete, `.progress.json` lists
the finished ones with their sizes and hashes, and the manifest comes last. Rerunning the
same command after a kill continues with the first unfinished shard; a folder prepared
from other files, or holding anything else, is refused.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from resnet_tf.data.folders import list_image_folder
from resnet_tf.data.pipeline import native_square_size, undecodable_files
from resnet_tf.data.records import (
    FILES,
    FORMAT,
    MANIFEST,
    PROGRESS,
    read_manifest,
    sha256_of,
    shard_name,
)
from resnet_tf.errors import DataError
from resnet_tf.files import atomic_write, fault_point, remove_debris, write_json, write_text

MAX_SHARDS = 100_000
# Images are spread over the shards in this seeded order, so every shard mixes every class.
_SHUFFLE_SEED = 0


def prepare_records(data_dir, out, shards, *, log=print):
    """Writes the images of `data_dir` (one sub-folder per class) as `shards` TFRecord files.

    Args:
        data_dir: str. The image folder, walked as training walks it (`list_image_folder`).
        out: str. The folder to write; created. A folder holding another preparation, or
            anything but a preparation, is refused.
        shards: int. Number of shard files, at most the number of images.
        log: callable taking one line of progress.

    Returns:
        The manifest (a dict), as written to `out/manifest.json`.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise DataError(f"--shards must be a whole number from 1 to {MAX_SHARDS}. Received: "
                        f"--shards {shards!r}; expected e.g. 8.")
    data_dir, out = os.path.abspath(data_dir), os.path.abspath(out)
    if out == data_dir or out.startswith(data_dir + os.sep):
        raise DataError(f"The shard folder must be outside the image folder. Received: OUT "
                        f"'{out}' inside DIR '{data_dir}'; expected another folder.")
    files, labels, class_names = list_image_folder(data_dir)
    listing = "".join(f"{os.path.relpath(f, data_dir)}\t{label}\n"
                      for f, label in zip(files, labels))
    plan = {"format": FORMAT, "source": data_dir, "shards": shards,
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}
    existed = os.path.isdir(out)
    done = _start(out, plan)
    if done is None:
        log(f"{out} already holds these {len(files)} images in {shards} shards; nothing to do.")
        return read_manifest(out)
    # Every file is decoded once, as training decodes it: the shards hold only images that
    # decode, so training skips damaged records at the reader, before decoding
    # (`records.record_splits`). Skipped files stay listed in files.tsv, so hold-outs match
    # the folder's.
    log(f"decoding each of the {len(files)} images once, to keep only those that decode")
    skipped = undecodable_files(files)
    if shards > len(files) - len(skipped):
        if not existed and not os.listdir(out):  # nothing of it is left behind
            os.rmdir(out)
        readable = len(files) - len(skipped)
        raise DataError(f"--shards is larger than the number of images. Received: --shards "
                        f"{shards} for {readable} images; expected at most {readable}.")
    write_text(os.path.join(out, FILES), listing)
    present = np.setdiff1d(np.arange(len(files)), skipped)
    order = np.random.default_rng(_SHUFFLE_SEED).permutation(present)
    for shard, members in enumerate(np.array_split(order, shards)):
        name = shard_name(shard, shards)
        if name in done:
            continue
        path = os.path.join(out, name)
        _write_shard(path, [(files[i], labels[i], int(i)) for i in sorted(members)])
        done[name] = {"file": name, "examples": len(members), "bytes": os.path.getsize(path),
                      "sha256": sha256_of(path)}
        write_json(os.path.join(out, PROGRESS), {**plan, "done": done})
        log(f"wrote {name} ({len(members)} images)")
    manifest = {**plan, "class_names": list(class_names), "examples": len(present),
                "image_size": native_square_size([files[i] for i in present]),
                "skipped_indices": [int(i) for i in skipped], "decoded": True,
                "shard_files": [done[shard_name(i, shards)] for i in range(shards)]}
    fault_point("before manifest")
    write_json(os.path.join(out, MANIFEST), manifest)
    os.remove(os.path.join(out, PROGRESS))
    if skipped:
        log(f"skipped {len(skipped)} unreadable image file(s), e.g. {files[skipped[0]]}")
    log(f"prepared {len(present)} images of {len(class_names)} classes in {shards} shards: {out}")
    return manifest


def _start(out, plan):
    """The shards already written for `plan` ({} for none), or None if `out` is complete."""
    os.makedirs(out, exist_ok=True)
    remove_debris(out)  # half-written shards of a killed run
    if os.path.isfile(os.path.join(out, MANIFEST)):
        old = read_manifest(out)
        if {k: old.get(k) for k in plan} == plan:
            return None
        raise DataError(f"'{out}' already holds shards of another preparation ({old['source']}, "
                        f"{old['shards']} shards); choose another OUT folder or delete it.")
    progress = os.path.join(out, PROGRESS)
    if os.path.isfile(progress):
        with open(progress) as f:
            old = json.load(f)
        if {k: old.get(k) for k in plan} != plan:
            raise DataError(f"'{out}' holds an unfinished preparation of other images or "
                            f"shards ({old.get('source')}, {old.get('shards')} shards); rerun "
                            "that command, or choose another OUT folder.")
        # A shard counts only while it is still the file that was measured.
        return {name: entry for name, entry in old["done"].items()
                if os.path.isfile(os.path.join(out, name))
                and os.path.getsize(os.path.join(out, name)) == entry["bytes"]}
    others = [n for n in os.listdir(out) if n != FILES]
    if others:
        raise DataError(f"'{out}' is not empty and holds no preparation (e.g. '{others[0]}'); "
                        "choose an empty or new OUT folder.")
    return {}


def _write_shard(path, members):
    def write(tmp):
        with tf.io.TFRecordWriter(tmp) as writer:
            for file, label, index in members:
                with open(file, "rb") as f:
                    encoded = f.read()
                writer.write(_example(encoded, label, index, file).SerializeToString())

    atomic_write(path, write)  # a kill leaves a temporary that the next start removes


def _example(encoded, label, index, file):
    def feature(**kind):
        return tf.train.Feature(**kind)

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": feature(int64_list=tf.train.Int64List(value=[label])),
        "image/index": feature(int64_list=tf.train.Int64List(value=[index])),
        "image/filename": feature(bytes_list=tf.train.BytesList(
            value=[os.path.basename(file).encode()])),
    }))
