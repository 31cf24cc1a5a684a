"""Registered weights offline (issue 30): one line instead of a traceback, and a read-only
cache that already holds the file serves it."""

import json
import struct

import keras
import pytest

from resnet_tf.cli.train import main as train_main
from resnet_tf.models import registry


def test_train_with_registered_weights_offline_is_one_line(tmp_path, monkeypatch, capsys,
                                                           image_folder_factory):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure on https://example: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    images = image_folder_factory(per_class=4, size=16)
    status = train_main(["--data-dir", images, "--weights", "timm:resnet18.a1_in1k", "--epochs",
                         "1", "--batch-size", "4", "--cpu-config", "tf-defaults", "--out",
                         str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 1 and len(err) == 1, err
    assert "timm:resnet18.a1_in1k are not in the Keras cache" in err[0]
    assert "Traceback" not in err[0]


def test_a_read_only_cache_holding_the_complete_file_serves_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    entry = registry.get_weights("timm:resnetv2_50.a1h_in1k")  # checked for completeness
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / entry.file_name).write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)

    def read_only(entry):  # as the cache check answers for a folder this user cannot write
        raise registry.WeightsDownloadError(f"The Keras cache folder {folder} is not writable")

    monkeypatch.setattr(registry, "_cache_folder", read_only)
    path, found = registry.download_weights(entry.name)
    assert path == str(folder / entry.file_name) and found == entry
    (folder / entry.file_name).unlink()  # not cached: the read-only folder is the reason given
    with pytest.raises(registry.WeightsDownloadError, match="is not writable"):
        registry.download_weights(entry.name)
