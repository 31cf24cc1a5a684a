"""resnet_tf.data: folder listing, decoding, preprocessing, pipelines and every DataError."""

import importlib
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf import data
from resnet_tf.data import DataError, load_data

CIFAR_TAR = Path(__file__).parents[3] / "shared/data/cifar10/train.tar.gz"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_image(path, pixels):
    """Writes `pixels` (uint8 HxWxC) in the format named by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        path.write_bytes(tf.io.encode_jpeg(pixels, quality=95).numpy())
    elif suffix == ".png":
        path.write_bytes(tf.io.encode_png(pixels).numpy())
    else:
        Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)
    return path


def solid(value, size=8):
    """A flat image whose colour identifies it exactly, even through JPEG."""
    return np.full((size, size, 3), value, np.uint8)


def make_folder(root, counts, size=8, suffix=".png"):
    """One sub-folder per class; image `i` of the whole folder has colour `i * 8`."""
    index = 0
    for name, count in counts.items():
        for i in range(count):
            write_image(root / name / f"{i:03d}{suffix}", solid(8 * index, size))
            index += 1
    return root


def image_ids(dataset):
    """The colour id of every image in a batched dataset (undoing `normalize`)."""
    ids = []
    for images, _ in dataset:
        pixels = images.numpy()[:, 0, 0] * np.array(data.STD) * 255 + np.array(data.MEAN) * 255
        ids += [int(round(v / 8)) for v in pixels[:, 0]]
    return ids


# --- Listing ------------------------------------------------------------------------------


def test_class_order_is_sorted_and_other_files_are_ignored(tmp_path):
    for name in ["zebra", "Apple", "mango"]:
        write_image(tmp_path / name / "a.png", solid(0))
    write_image(tmp_path / "mango" / "nested" / "b.JPG", solid(0))
    (tmp_path / "mango" / "notes.txt").write_text("not an image")
    (tmp_path / "mango" / ".hidden.jpg").write_bytes(b"resource fork")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "README.md").write_text("top-level files are not classes")

    files, labels, class_names = data.list_image_folder(tmp_path)

    assert class_names == ["Apple", "mango", "zebra"]
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "Apple/a.png",
        "mango/a.png",
        "mango/nested/b.JPG",
        "zebra/a.png",
    ]
    assert labels == [0, 1, 1, 2]
    assert data.list_image_folder(str(tmp_path)) == (files, labels, class_names)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("file", "The image folder is a file. Received:"),
        ("no_classes", "has no class sub-folders"),
        ("no_images", "has 2 class sub-folders but no image files"),
        ("empty_class", "Class folder 'empty' has no image files in"),
    ],
)
def test_folder_errors_name_the_problem(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout == "file":
        root.write_text("x")
    elif layout == "no_classes":
        root.mkdir()
        write_image(root / "loose.png", solid(0))
    elif layout == "no_images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "b" / "readme.txt").write_text("x")
    elif layout == "empty_class":
        write_image(root / "full" / "a.png", solid(0))
        (root / "empty").mkdir()
    with pytest.raises(DataError, match=message) as error:
        load_data(data_dir=root)
    assert str(root) in str(error.value)


def test_one_class_folder_is_a_data_error(tmp_path):
    root = make_folder(tmp_path / "images", {"cat": 4})
    with pytest.raises(DataError) as error:
        load_data(data_dir=root, batch_size=2)
    assert str(error.value) == (f"Too few classes to train. Received: 1 class folder ('cat') in "
                                f"'{root}'; expected at least 2.")


# --- Links: each real file once, never in training and validation both ---------------------


def relative(files, root):
    return [Path(f).relative_to(root).as_posix() for f in files]


def test_a_link_loop_lists_each_file_once_in_its_own_class(tmp_path, recwarn):
    root = make_folder(tmp_path / "data", {"cat": 3, "dog": 2})
    (root / "cat" / "up").symlink_to("..")  # ln -s .. data/cat/up: a loop through the root
    (root / "dog" / "cats").symlink_to("../cat")  # another class's folder
    (root / "dog" / "self").symlink_to(".")  # a loop inside the class
    write_image(tmp_path / "outside" / "000.png", solid(8 * 20))
    (root / "dog" / "more").symlink_to(tmp_path / "outside")  # outside the root: followed

    files, labels, class_names = data.list_image_folder(root)

    assert class_names == ["cat", "dog"]
    assert relative(files, root) == ["cat/000.png", "cat/001.png", "cat/002.png",
                                     "dog/000.png", "dog/001.png", "dog/more/000.png"]
    assert labels == [0, 0, 0, 1, 1, 1]
    assert not [w for w in recwarn if "reachable by more than one path" in str(w.message)]

    result = load_data(data_dir=root, val_split=0.4, batch_size=1, augment=False)
    train, val = image_ids(result.train), image_ids(result.val)
    assert (result.train_examples, result.val_examples) == (4, 2)
    assert sorted(train + val) == [0, 1, 2, 3, 4, 20] and not set(train) & set(val)


def test_a_file_linked_into_another_class_is_used_once_in_its_own(tmp_path):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    (root / "cat" / "borrowed.png").symlink_to(root / "dog" / "000.png")

    with pytest.warns(UserWarning, match=r"1 image file\(s\) in .* are reachable by more "
                                         r"than one path \(e\.g\. '.*cat/borrowed\.png'\)"):
        files, labels, _ = data.list_image_folder(root)

    assert relative(files, root) == ["cat/000.png", "cat/001.png", "dog/000.png", "dog/001.png"]
    assert labels == [0, 0, 1, 1]


def test_broken_links_are_skipped(tmp_path):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    (root / "cat" / "gone.png").symlink_to(tmp_path / "deleted.png")
    (root / "dog" / "gone").symlink_to(tmp_path / "deleted_folder")

    files, labels, _ = data.list_image_folder(root)
    assert relative(files, root) == ["cat/000.png", "dog/000.png"]
    assert relative(data.image_files([root / "cat"]), root) == ["cat/000.png"]
    assert load_data(data_dir=root, batch_size=1).skipped_files == 0


def test_val_dir_files_are_left_out_of_training(tmp_path):
    train = make_folder(tmp_path / "train", {"cat": 3, "dog": 3})
    val = tmp_path / "val"
    write_image(val / "cat" / "own.png", solid(8 * 25))
    (val / "cat" / "linked.png").symlink_to(train / "cat" / "001.png")
    (val / "dog").mkdir()
    os.link(train / "dog" / "002.png", val / "dog" / "hardlinked.png")

    with pytest.warns(UserWarning, match=r"2 image file\(s\) of .*train' are also in the "
                                         r"validation folder .*val' \(e\.g\. '.*cat/001\.png'\); "
                                         r"they are used for validation only"):
        result = load_data(data_dir=train, val_dir=val, batch_size=1, augment=False)

    assert (result.train_examples, result.val_examples) == (4, 3)
    assert sorted(image_ids(result.train)) == [0, 2, 3, 4]
    assert sorted(image_ids(result.val)) == [1, 5, 25]

    with pytest.raises(DataError, match=r"The validation folder holds every training image\. "
                                        r"Received: val_dir=.* with all 6 images of data_dir="):
        load_data(data_dir=train, val_dir=train, batch_size=1)


# --- Image size: the data's own, unless no size is common ----------------------------------


@pytest.mark.parametrize("cache", [True, False], ids=["in-memory", "streamed"])
def test_a_few_odd_sized_images_keep_the_datas_size_and_recipe(tmp_path, cache):
    root = make_folder(tmp_path, {"a": 4, "b": 4}, size=16)
    write_image(root / "a" / "odd.png", solid(8 * 30, 24)[:, :20])
    write_image(root / "b" / "odd2.jpg", solid(8 * 31, 9))

    warned = (r"2 of 10 sampled images are not 16x16 like the others and are resized to it: "
              if not cache else r"2 images are not 16x16 like the others and are resized to it: ")
    with pytest.warns(UserWarning, match=warned + r"a/odd\.png, b/odd2\.jpg$"):
        result = load_data(data_dir=root, batch_size=2, augment=False, cache=cache)

    assert (result.image_size, result.preset, result.train_examples) == (16, "cifar", 10)
    batches = list(result.train)
    assert all(images.shape[1:] == (16, 16, 3) for images, _ in batches)
    assert sorted(image_ids(result.train)) == [0, 1, 2, 3, 4, 5, 6, 7, 30, 31]


def test_one_odd_image_is_named_in_the_singular(tmp_path):
    root = make_folder(tmp_path, {"a": 2, "b": 2}, size=16)
    write_image(root / "b" / "odd.png", solid(0, 8))
    with pytest.warns(UserWarning, match=r"^1 image is not 16x16 like the others and is "
                                         r"resized to it: b/odd\.png$"):
        assert load_data(data_dir=root, batch_size=2).image_size == 16


# --- Decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, pixels, expected",
    [
        ("rgb.png", np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), None),
        ("rgb.bmp", np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), None),
        ("gray.png", np.arange(20, dtype=np.uint8).reshape(4, 5, 1), "gray"),
        ("rgba.png", np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4), "rgba"),
        ("gray.jpg", np.full((4, 5, 1), 200, np.uint8), "gray"),
        ("rgb.jpg", np.full((4, 5, 3), 120, np.uint8), None),
        ("rgb.gif", np.zeros((4, 5, 3), np.uint8), None),
    ],
)
def test_decode_image_gives_rgb_uint8(tmp_path, name, pixels, expected):
    path = write_image(tmp_path / name, pixels)
    if name.endswith(".gif"):  # GIF is palette-based; two frames check "first frame".
        frames = [Image.new("RGB", (5, 4), (255, 0, 0)), Image.new("RGB", (5, 4), (0, 0, 255))]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        pixels = np.broadcast_to(np.array([255, 0, 0], np.uint8), (4, 5, 3))

    image = data.decode_image(tf.io.read_file(str(path)))

    assert image.dtype == tf.uint8 and image.shape == (4, 5, 3)
    want = {"gray": np.repeat(pixels, 3, -1), "rgba": pixels[..., :3]}.get(expected, pixels)
    tolerance = 3 if name.endswith(".jpg") else 0
    np.testing.assert_allclose(image.numpy(), want, atol=tolerance)


def test_truncated_jpeg_is_rejected(tmp_path):
    encoded = tf.io.encode_jpeg(
        np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    ).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError):
        data.decode_image(encoded[: len(encoded) // 2])


def test_unreadable_files_are_skipped_counted_and_reported(tmp_path):
    root = make_folder(tmp_path / "train", {"a": 3, "b": 3}, suffix=".jpg")
    good = (root / "a" / "000.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "b" / "garbage.jpg").write_bytes(b"\x00not an image at all" * 10)
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "text.gif").write_text("GIF? no")
    (root / "b" / "notes.txt").write_text("ignored, not counted")

    with pytest.warns(
        UserWarning,
        match=r"Skipped 4 unreadable image files in .*train \(corrupt, or larger than "
              r"50000000 pixels\): .*truncated\.jpg, .*empty\.png, .*garbage\.jpg, .*text\.gif",
    ):
        result = load_data(data_dir=root, batch_size=2, augment=False)

    assert result.skipped_files == 4
    assert result.train_examples == 6
    assert sorted(image_ids(result.train)) == [0, 1, 2, 3, 4, 5]


def test_streaming_drops_unreadable_files_without_failing(tmp_path):
    root = make_folder(tmp_path, {"a": 2, "b": 2})
    (root / "a" / "bad.png").write_bytes(b"broken")

    result = load_data(data_dir=root, batch_size=1, cache=False, augment=False)

    assert result.train_examples == 5  # Streaming cannot know about bad files up front.
    assert sorted(image_ids(result.train)) == [0, 1, 2, 3]


# --- load_data ----------------------------------------------------------------------------


def test_batches_have_the_documented_shapes_and_dtypes(tmp_path):
    root = make_folder(tmp_path, {"a": 5, "b": 5}, size=16)

    result = load_data(data_dir=root, val_split=0.3, batch_size=4)

    assert (result.image_size, result.preset, result.class_names) == (16, "cifar", ["a", "b"])
    assert (result.train_examples, result.val_examples, result.skipped_files) == (6, 4, 0)
    train = list(result.train)
    assert len(train) == 1  # 6 examples, incomplete batch dropped
    images, labels = train[0]
    assert images.shape == (4, 16, 16, 3) and images.dtype == tf.float32
    assert labels.shape == (4,) and labels.dtype == tf.int32
    assert [len(labels) for _, labels in result.val] == [4]


def test_val_split_is_stratified_seeded_and_disjoint_from_train(tmp_path):
    root = make_folder(tmp_path, {"a": 10, "b": 10})
    split = dict(data_dir=root, val_split=0.2, batch_size=2, augment=False)

    first = load_data(**split, seed=0)
    again = load_data(**split, seed=0)
    other = load_data(**split, seed=1)

    val, train = image_ids(first.val), image_ids(first.train)
    assert val == image_ids(again.val)
    assert val != image_ids(other.val)
    # split_seed fixes the split alone: another seed, the same hold-out.
    assert image_ids(load_data(**split, seed=1, split_seed=0).val) == val
    assert sorted(val + train) == list(range(20))
    assert sum(v < 10 for v in val) == 2 and sum(v >= 10 for v in val) == 2


def test_val_dir_must_have_the_same_classes(tmp_path):
    train = make_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    val = make_folder(tmp_path / "val", {"cat": 1, "bird": 1})

    with pytest.raises(
        DataError, match=r"only in training: \['dog'\], only in validation: \['bird'\]"
    ):
        load_data(data_dir=train, val_dir=val, batch_size=2)

    val = make_folder(tmp_path / "val2", {"cat": 1, "dog": 2})
    result = load_data(data_dir=train, val_dir=val, batch_size=2, val_split=0.5)
    assert (result.train_examples, result.val_examples) == (4, 3)


@pytest.mark.parametrize("val_split", [-0.1, 1, 1.5, "0.1"])
def test_invalid_val_split_is_a_data_error(tmp_path, val_split):
    with pytest.raises(
        DataError,
        match=rf"val_split must be a fraction in \[0, 1\)\. Received: val_split={val_split!r}",
    ):
        load_data(data_dir=tmp_path, val_split=val_split)


def test_no_val_split_means_no_validation_set(tmp_path):
    result = load_data(data_dir=make_folder(tmp_path, {"a": 2, "b": 1}), val_split=0, batch_size=2)
    assert result.val is None and result.val_examples == 0


def test_batch_larger_than_the_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="batch_size=128 is larger than the 4 training images"):
        load_data(data_dir=make_folder(tmp_path, {"a": 2, "b": 2}))


def test_mixed_sizes_default_to_224_and_any_size_can_be_asked_for(tmp_path):
    for name, shape in [
        ("a/wide.png", (20, 40)),
        ("a/tall.png", (30, 10)),
        ("b/small.png", (8, 8)),
        ("b/big.png", (50, 50)),
    ]:
        write_image(tmp_path / name, np.zeros((*shape, 3), np.uint8))

    assert load_data(data_dir=tmp_path, batch_size=2).image_size == 224
    result = load_data(data_dir=tmp_path, batch_size=2, image_size=24, val_split=0.5)

    assert (result.preset, result.train_examples, result.val_examples) == ("cifar", 2, 2)
    assert next(iter(result.train))[0].shape == (2, 24, 24, 3)
    assert next(iter(result.val))[0].shape == (2, 24, 24, 3)


def test_mixed_sizes_train_with_the_imagenet_preset(tmp_path):
    write_image(tmp_path / "a" / "wide.jpg", np.zeros((40, 80, 3), np.uint8))
    write_image(tmp_path / "b" / "tall.jpg", np.zeros((90, 30, 3), np.uint8))

    result = load_data(data_dir=tmp_path, batch_size=2, image_size=72)

    images, labels = next(iter(result.train))
    assert result.preset == "imagenet" and images.shape == (2, 72, 72, 3)


def test_deterministic_pipelines_repeat_exactly(tmp_path):
    root = make_folder(tmp_path, {"a": 6, "b": 6}, size=12)
    first = load_data(data_dir=root, batch_size=4, deterministic=True, seed=3)
    second = load_data(data_dir=root, batch_size=4, deterministic=True, seed=3)

    epochs = [list(first.train), list(first.train)]
    for (x1, y1), (x2, y2) in zip(epochs[0], second.train):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # each epoch is reshuffled


def test_synthetic_data_has_the_requested_shapes():
    result = load_data(
        "synthetic",
        image_size=40,
        batch_size=8,
        synthetic_examples=100,
        synthetic_classes=5,
        val_split=0.1,
    )

    assert result.class_names == [f"class_{i}" for i in range(5)]
    assert (result.image_size, result.preset, result.train_examples, result.val_examples) == (
        40,
        "cifar",
        88,
        10,
    )
    train = list(result.train)
    assert (
        len(train) == 11 and train[0][0].shape == (8, 40, 40, 3) and train[0][1].dtype == tf.int32
    )
    assert [len(y) for _, y in result.val] == [8, 2]
    assert set(np.concatenate([y for _, y in train])) <= set(range(5))


# --- TFDS ---------------------------------------------------------------------------------


def test_unprepared_tfds_dataset_fails_fast_with_a_way_out(tmp_path, monkeypatch):
    import socket

    from tensorflow_datasets.core.download import downloader

    lookups = []

    def no_dns(*args, **kwargs):
        lookups.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    retries = downloader.MAX_RETRIES
    with pytest.raises(DataError) as error:
        load_data("cifar10", tfds_dir=str(tmp_path))
    # One request and urllib3's one retry; TFDS alone retries 10 times with back-off
    # (minutes offline). The download is tried at all only because setup.cfg installs
    # importlib_resources, which TFDS needs and does not declare.
    assert len(lookups) == 2 and downloader.MAX_RETRIES == retries
    message = str(error.value)
    assert message.startswith("Could not load TFDS dataset 'cifar10' (not prepared in ")
    assert "--data-dir PATH" in message and "--dataset synthetic" in message


def test_a_missing_tfds_dependency_is_not_reported_as_a_download_failure(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    class Unprepared:
        data_dir = str(tmp_path)

        def is_prepared(self):
            return False

        def download_and_prepare(self, **unused):  # TFDS imports parts of itself lazily
            raise ModuleNotFoundError("No module named 'importlib_resources'",
                                      name="importlib_resources")

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Unprepared())
    with pytest.raises(DataError) as error:
        load_data("cifar10", tfds_dir=str(tmp_path))
    assert str(error.value) == (
        "TFDS could not be imported (No module named 'importlib_resources'); install it with "
        "pip install importlib_resources, or pass --data-dir PATH (a folder with one "
        "sub-folder per class) or --dataset synthetic.")


def test_unknown_tfds_name_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Could not find TFDS dataset 'no_such_dataset_xyz'"):
        load_data("no_such_dataset_xyz", tfds_dir=str(tmp_path))


class FakeBuilder:
    """Just enough of a prepared `tfds` builder: 8x8 grayscale images, train and test splits."""

    def __init__(self, name, data_dir=None):
        from types import SimpleNamespace

        import tensorflow_datasets as tfds

        self.data_dir = data_dir
        self.examples = {"train": 6, "test": 3}
        self.info = SimpleNamespace(
            supervised_keys=("image", "label"),
            features={
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(names=["even", "odd"]),
            },
            splits={s: SimpleNamespace(num_examples=n) for s, n in self.examples.items()},
        )

    def is_prepared(self):
        return True

    def as_dataset(self, split, as_supervised, decoders=None, **unused):
        offset = 0 if split == "train" else 100
        values = np.arange(offset, offset + self.examples[split])
        images = np.repeat(values.astype(np.uint8), 64).reshape(-1, 8, 8, 1)
        if decoders:  # SkipDecoding: the records' encoded bytes
            images = [tf.io.encode_png(image).numpy() for image in images]
        return tf.data.Dataset.from_tensor_slices((images, values % 2))


@pytest.mark.parametrize("cache", [True, False])
def test_tfds_dataset_uses_its_test_split_for_validation(monkeypatch, cache):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds, "builder", FakeBuilder)
    result = load_data("fake", batch_size=2, augment=False, cache=cache)

    assert result.class_names == ["even", "odd"]
    assert (result.image_size, result.train_examples, result.val_examples) == (8, 6, 3)
    images, labels = next(iter(result.val))
    assert images.shape == (2, 8, 8, 3) and labels.dtype == tf.int32
    pixels = images.numpy()[:, 0, 0] * np.array(data.STD) * 255 + np.array(data.MEAN) * 255
    np.testing.assert_allclose(pixels, [[100] * 3, [101] * 3], atol=1e-3)  # gray -> RGB


class FakeImagenet(FakeBuilder):
    """imagenet2012's layout as TFDS prepares it: variable-size JPEG records, no size."""

    def __init__(self, name, data_dir=None):
        import tensorflow_datasets as tfds

        super().__init__(name, data_dir)
        self.info.features["image"] = tfds.features.Image(encoding_format="jpeg")

    def as_dataset(self, split, as_supervised, decoders=None, **unused):
        assert decoders, "streamed TFDS images must reach the pipeline still encoded"
        values = np.arange(self.examples[split])
        images = [tf.io.encode_jpeg(np.full((90 + 7 * v, 120, 3), 40 * v, np.uint8)).numpy()
                  for v in values]
        return tf.data.Dataset.from_tensor_slices((images, values % 2))


def test_streamed_tfds_jpeg_records_train_through_the_fused_crop(monkeypatch):
    import tensorflow_datasets as tfds

    from resnet_tf.data import preprocessing

    monkeypatch.setattr(tfds, "builder", FakeImagenet)
    fused = []
    original = preprocessing.preprocess_encoded_for_train
    monkeypatch.setattr("resnet_tf.data.pipeline.preprocess_encoded_for_train",
                        lambda *a, **k: fused.append(1) or original(*a, **k))
    result = load_data("imagenet2012", image_size=72, batch_size=2, cache=False)
    images, labels = next(iter(result.train))
    assert images.shape == (2, 72, 72, 3) and fused  # the encoded bytes' path, traced
    assert next(iter(result.val))[0].shape == (2, 72, 72, 3)


# --- Preprocessing ------------------------------------------------------------------------


def test_normalize_matches_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 4, 5, 3), np.uint8)
    want = (pixels / 255.0 - np.array(data.MEAN)) / np.array(data.STD)

    for given in (pixels, pixels.astype(np.float32)):
        got = data.normalize(given)
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
@pytest.mark.parametrize("shape", [(32, 32), (50, 30), (300, 400)])
def test_eval_preprocessing_is_square_and_deterministic(preset, shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8)
    serving = tf.function(
        lambda x: data.preprocess_for_eval(x, 32, preset),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )

    first, second = serving(image), data.preprocess_for_eval(image, 32, preset)

    assert first.shape == (32, 32, 3) and first.dtype == tf.float32
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_eval_preprocessing_crops_the_centre_without_resizing_when_sizes_fit():
    image = np.random.default_rng(0).integers(0, 256, (256, 300, 3), np.uint8)

    np.testing.assert_array_equal(
        data.preprocess_for_eval(image[:, :256], 224, "imagenet"),
        data.normalize(image[16:240, 16:240]),
    )
    np.testing.assert_array_equal(
        data.preprocess_for_eval(image[:32, :32], 32, "cifar"), data.normalize(image[:32, :32])
    )


@pytest.mark.parametrize("pad", [4, 2, 0])
def test_cifar_augmentation_is_a_padded_crop_maybe_flipped(pad):
    image = np.random.default_rng(0).integers(1, 256, (32, 32, 3), np.uint8)
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
    windows = [
        w
        for y in range(2 * pad + 1)
        for x in range(2 * pad + 1)
        for w in (padded[y : y + 32, x : x + 32], padded[y : y + 32, x : x + 32][:, ::-1])
    ]

    outputs = [
        data.preprocess_for_train(image, 32, "cifar", seed=tf.constant([s, 0]), crop_padding=pad)
        for s in range(8)
    ]

    for out in outputs:
        assert any(np.allclose(out, data.normalize(w), atol=1e-5) for w in windows)
    assert len({out.numpy().tobytes() for out in outputs}) > 1
    np.testing.assert_array_equal(
        outputs[0],
        data.preprocess_for_train(image, 32, "cifar", seed=tf.constant([0, 0]), crop_padding=pad),
    )


def test_imagenet_augmentation_outputs_the_requested_size():
    image = np.random.default_rng(0).integers(0, 256, (60, 90, 3), np.uint8)
    out = data.preprocess_for_train(image, 48, "imagenet", seed=tf.constant([1, 2]))
    assert out.shape == (48, 48, 3) and out.dtype == tf.float32
    assert data.default_preset(64) == "cifar" and data.default_preset(65) == "imagenet"


def test_unknown_preset_is_a_data_error():
    with pytest.raises(
        DataError, match="preset must be one of cifar, imagenet. Received: preset='tiny'"
    ):
        data.preprocess_for_eval(np.zeros((8, 8, 3), np.uint8), 8, "tiny")


def test_importing_the_module_does_not_import_tfds(monkeypatch):
    import resnet_tf

    # A fresh import of resnet_tf.data in this process, with TFDS forgotten; both come back after.
    for name in list(sys.modules):
        if name == "resnet_tf.data" or name.split(".")[0] == "tensorflow_datasets":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(resnet_tf, "data", data)

    importlib.import_module("resnet_tf.data")

    assert "tensorflow_datasets" not in sys.modules


# --- The real CIFAR-10 folder, when the shared data is next to the repository ---------------


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    """Every file name of the archive, and the first 20 images of each class extracted."""
    if not CIFAR_TAR.exists():
        pytest.skip(f"{CIFAR_TAR} not found")
    root = tmp_path_factory.mktemp("cifar")
    names, taken = [], {}
    with tarfile.open(CIFAR_TAR) as archive:
        for member in archive:
            if not member.isfile():
                continue
            names.append(member.name)
            label = Path(member.name).parent.name
            if taken.get(label, 0) < 20:
                taken[label] = taken.get(label, 0) + 1
                archive.extract(member, root, filter="data")
    return names, root / "train"


def test_real_cifar10_folder(cifar_subset):
    names, root = cifar_subset
    assert len(names) == 50_000
    assert sorted({Path(n).parent.name for n in names}) == CIFAR_CLASSES

    result = load_data(data_dir=root, val_split=0.1, batch_size=32)

    assert result.class_names == CIFAR_CLASSES
    assert (result.image_size, result.preset, result.skipped_files) == (32, "cifar", 0)
    assert (result.train_examples, result.val_examples) == (180, 20)
    images, labels = next(iter(result.train))
    assert images.shape == (32, 32, 32, 3) and set(labels.numpy()) <= set(range(10))
    assert abs(float(tf.reduce_mean(images))) < 1.0  # normalized, not 0..255
