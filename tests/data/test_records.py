"""TFRecord shards: `python -m resnet_tf prepare DIR OUT --shards N`, read by train.py's data."""

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import write_class_images

from resnet_tf.cli import main as cli_main
from resnet_tf.data import load_data
from resnet_tf.data import prepare as prepare_module
from resnet_tf.data.prepare import prepare_records
from resnet_tf.data.records import MANIFEST
from resnet_tf.errors import DataError


@pytest.fixture()
def folder(tmp_path):
    root = write_class_images(tmp_path / "images", per_class=10, size=12, suffix=".jpg", bad=1)
    return root


def _pairs(dataset):
    """(label, rounded pixel sum) of every image of a dataset of batches: order-free."""
    found = []
    for images, labels in dataset:
        for image, label in zip(np.asarray(images), np.asarray(labels)):
            found.append((int(label), round(float(image.sum()), 2)))
    return sorted(found)


def test_prepare_writes_every_image_once_with_a_manifest(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    assert cli_main(["prepare", folder, str(out), "--shards", "3"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["class_names"] == ["cat", "dog", "fish"]
    assert manifest["examples"] == 30  # the undecodable file is skipped and counted
    assert len(manifest["skipped_indices"]) == 1
    assert sorted(e["file"] for e in manifest["shard_files"]) == sorted(
        n for n in os.listdir(out) if n.endswith(".tfrecord"))
    assert sum(e["examples"] for e in manifest["shard_files"]) == 30
    for entry in manifest["shard_files"]:
        data = (out / entry["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
    printed = capsys.readouterr().out
    assert "decoding each of the 31 images once" in printed
    assert "skipped 1 unreadable image file(s)" in printed


def test_shards_train_and_validate_on_the_images_of_the_folder(folder, tmp_path):
    prepare_records(folder, tmp_path / "shards", 3, log=lambda line: None)
    common = dict(val_split=0.2, split_seed=3, image_size=12, batch_size=4, augment="none")
    from_shards = load_data(data_dir=str(tmp_path / "shards"), **common)
    from_folder = load_data(data_dir=folder, **common)
    assert from_shards.class_names == from_folder.class_names
    assert (from_shards.train_examples, from_shards.val_examples, from_shards.skipped_files) == (
        from_folder.train_examples, from_folder.val_examples, 1)
    # The same hold-out: the very images the folder's --val-split 0.2 --split-seed 3 holds out.
    assert _pairs(from_shards.val) == _pairs(from_folder.val)
    assert len(_pairs(from_shards.train)) == from_folder.train_examples // 4 * 4


def test_prepared_image_size_is_the_images_own(folder, tmp_path):
    prepare_records(folder, tmp_path / "shards", 2, log=lambda line: None)
    data = load_data(data_dir=str(tmp_path / "shards"), val_split=0.2, batch_size=4)
    assert (data.image_size, data.preset) == (12, "cifar")
    images, _ = next(iter(data.train))
    assert images.shape == (4, 12, 12, 3)


def test_an_interrupted_prepare_resumes_without_rewriting_finished_shards(folder, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "shards"
    real = prepare_module._write_shard
    written = []

    def fail_on_second(path, members):
        if written:
            raise KeyboardInterrupt
        real(path, members)
        written.append(path)

    monkeypatch.setattr(prepare_module, "_write_shard", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_records(folder, out, 3, log=lambda line: None)
    assert not (out / MANIFEST).exists()
    first = os.stat(written[0])
    monkeypatch.setattr(prepare_module, "_write_shard", real)
    manifest = prepare_records(folder, out, 3, log=lambda line: None)
    assert os.stat(written[0]).st_mtime_ns == first.st_mtime_ns  # kept, not rewritten
    assert manifest["examples"] == 30
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporaries left
    lines = []
    prepare_records(folder, out, 3, log=lines.append)  # complete: nothing to do
    assert "nothing to do" in lines[0]


@pytest.mark.parametrize("case", ["truncated", "missing shard", "bad manifest", "other format"])
def test_damaged_shards_are_one_line_errors(folder, tmp_path, case):
    out = tmp_path / "shards"
    manifest = prepare_records(folder, out, 2, log=lambda line: None)
    shard = out / manifest["shard_files"][0]["file"]
    expected = {"truncated": "was truncated or replaced", "missing shard": "is missing",
                "bad manifest": "Cannot read the shard manifest",
                "other format": "is not a shard manifest of this version"}[case]
    if case == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif case == "missing shard":
        shard.unlink()
    elif case == "bad manifest":
        (out / MANIFEST).write_text("{not json")
    else:
        (out / MANIFEST).write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(DataError, match=expected) as error:
        load_data(data_dir=str(out), val_split=0.2, batch_size=4)
    assert "\n" not in str(error.value)


def test_prepare_refuses_what_it_would_overwrite(folder, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert cli_main(["prepare", folder, str(user)]) == 2
    assert "is not empty and holds no preparation" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "keep me" and os.listdir(user) == ["notes.txt"]
    assert cli_main(["prepare", folder, os.path.join(folder, "cat", "x")]) == 2
    assert "must be outside the image folder" in capsys.readouterr().err
    assert cli_main(["prepare", folder, str(tmp_path / "s"), "--shards", "31"]) == 2
    assert "Received: --shards 31 for 30 images; expected at most 30." in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # the refused run leaves no folder behind
    prepare_records(folder, tmp_path / "done", 2, log=lambda line: None)
    assert cli_main(["prepare", folder, str(tmp_path / "done"), "--shards", "3"]) == 2
    assert "already holds shards of another preparation" in capsys.readouterr().err


def test_resnet_evaluate_reads_shards_like_the_folder(folder, tmp_path, tiny_resnet):
    from resnet_tf.evaluation.evaluate import evaluate, load_classifier

    prepare_records(folder, tmp_path / "shards", 2, log=lambda line: None)
    model = tiny_resnet(classes=3, size=12)
    model.save(tmp_path / "m.keras")
    (tmp_path / "classes.txt").write_text("cat\ndog\nfish\n")
    classifier = load_classifier(str(tmp_path / "m.keras"), image_size=12, preset="cifar")
    on_shards = evaluate(classifier, data_dir=str(tmp_path / "shards"))
    on_folder = evaluate(classifier, data_dir=folder)
    assert on_shards["examples"] == on_folder["examples"] == 30
    assert on_shards["confusion_matrix"] == on_folder["confusion_matrix"]


def test_prepare_decodes_every_image_and_skips_what_does_not_decode(tmp_path, capsys):
    """A JPEG whose header reads but whose data is cut short is skipped at prepare, so the
    shards hold only images that decode (and say so)."""
    root = write_class_images(tmp_path / "images", per_class=6, size=12, suffix=".jpg")
    whole = (tmp_path / "images" / "dog" / "000.jpg").read_bytes()
    (tmp_path / "images" / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    manifest = prepare_records(root, tmp_path / "shards", 2, log=print)
    assert manifest["decoded"] is True
    assert manifest["examples"] == 18
    listed = (tmp_path / "shards" / "files.tsv").read_text().splitlines()
    assert [listed[i].split("\t")[0] for i in manifest["skipped_indices"]] == [
        os.path.join("dog", "cut.jpg")]
    assert "skipped 1 unreadable image file(s)" in capsys.readouterr().out


def test_a_damaged_record_ends_its_shard_and_training_goes_on(folder, tmp_path):
    """A shard whose bytes changed (its size kept) fails a record's CRC in the reader, which
    cannot find the next record after it: the rest of that shard is skipped for the epoch,
    at the reader, and the other shards train."""
    from resnet_tf.data.records import record_splits

    out = tmp_path / "shards"
    manifest = prepare_records(folder, out, 3, log=lambda line: None)
    shard = out / manifest["shard_files"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF  # inside the first record's payload
    shard.write_bytes(bytes(data))
    train, _, _ = record_splits(str(out), None, 0)
    assert train.may_fail is False  # prepared decoded: no decoding errors to catch after the map
    images = load_data(data_dir=str(out), image_size=12, batch_size=1, val_split=0,
                       augment="none").train
    assert sum(1 for _ in images) == 30 - manifest["shard_files"][0]["examples"]
    # A manifest from before prepare decoded every image keeps the guard after the map.
    old = json.loads((out / MANIFEST).read_text())
    del old["decoded"]
    (out / MANIFEST).write_text(json.dumps(old))
    assert record_splits(str(out), None, 0)[0].may_fail is True


def test_rerunning_a_finished_prepare_decodes_nothing(folder, tmp_path, monkeypatch, capsys):
    prepare_records(folder, tmp_path / "shards", 2, log=lambda line: None)

    def decoding(files):
        raise AssertionError("a finished preparation decoded its images again")

    monkeypatch.setattr(prepare_module, "undecodable_files", decoding)
    assert cli_main(["prepare", folder, str(tmp_path / "shards"), "--shards", "2"]) == 0
    assert "nothing to do" in capsys.readouterr().out
