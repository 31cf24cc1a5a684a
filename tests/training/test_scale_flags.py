"""train.py's flags for ImageNet-scale training and honest serving, end to end in-process:
--train-size/--eval-size, --grad-accum, --calibrate, --data-service; metrics.json leads
with what the export serves."""

import json
import os

import pytest
import tensorflow as tf

from resnet_tf.cli.train import main as train_main
from resnet_tf.data.service import start_servers

# In-process: --cpu-config tf-defaults never restarts the command.
QUICK = ["--epochs", "1", "--batch-size", "8", "--cpu-config", "tf-defaults", "--depth", "20",
         "--width-multiplier", "0.25", "--shortcut", "B"]


@pytest.fixture(scope="module")
def images(image_folder_factory):
    return image_folder_factory(per_class=12, size=16)


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_sizes_accumulation_and_calibration_reach_the_run_and_its_export(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data-dir", images, *QUICK, "--train-size", "12", "--eval-size", "16",
                       "--grad-accum", "2", "--tta", "flip", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    stored = _read(out / "config.json")
    config, runtime = stored["config"], stored["runtime"]
    assert (config["train_size"], config["image_size"], config["grad_accum"]) == (12, 16, 2)
    assert config["calibrate"] is True
    assert runtime["effective_batch"] == 16
    assert runtime["learning_rate"] == pytest.approx(config["lr"] * 16 / 256)
    metrics = _read(out / "metrics.json")
    # What the export serves leads; every other evaluation stands beside it, named.
    assert metrics["served"]["tta"] == "flip"
    assert metrics["top1"] == metrics["evaluations"]["flip"]["top1"]
    assert set(metrics["evaluations"]) == {"none", "flip", "flip-shift"}
    assert metrics["single_view"]["top1"] == metrics["evaluations"]["none"]["top1"]
    calibration = _read(out / "calibration.json")
    assert calibration["temperature"] > 0 and calibration == metrics["calibration"]
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-6
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "Validation, as the export serves it (flip test-time augmentation" in printed
    # The export serves 16 px images, the run's TTA and its temperature.
    (model,) = os.listdir(out / "export")
    (version,) = os.listdir(out / "export" / model)
    info = _read(out / "export" / model / version / "assets.extra" / "resnet_tf_serving.json")
    assert (info["tta"], info["temperature"]) == ("flip", calibration["temperature"])
    served = tf.saved_model.load(str(out / "export" / model / version))
    assert int(served.image_size.numpy()) == 16


def test_no_calibrate_writes_no_temperature(images, tmp_path):
    out = tmp_path / "run"
    assert train_main(["--data-dir", images, *QUICK, "--no-calibrate", "--no-export",
                       "--out", str(out)]) == 0
    assert _read(out / "config.json")["config"]["calibrate"] is False
    assert not (out / "calibration.json").exists()
    assert "calibration" not in _read(out / "metrics.json")


def test_training_through_a_tf_data_service_of_two_workers(images, tmp_path):
    target, servers = start_servers(0, 2)
    address = target.split("://", 1)[1]
    out = tmp_path / "run"
    assert train_main(["--data-dir", images, *QUICK, "--no-export", "--data-service", address,
                       "--out", str(out)]) == 0
    stored = _read(out / "config.json")
    assert stored["status"] == "complete" and stored["runtime"]["data_service"] == address
    with open(out / "history.csv") as f:
        assert len(f.read().strip().splitlines()) == 2  # one epoch
    del servers


@pytest.mark.parametrize("flags, message", [
    (["--data-service", "localhost:1"], "No tf.data service dispatcher answers at localhost:1"),
    (["--data-service", "localhost:1", "--deterministic"],
     "--deterministic cannot be combined with --data-service"),
    (["--grad-accum", "0"], "--grad-accum"),
    (["--train-size", "64"], "train_size is larger than the images"),
])
def test_bad_scale_flags_are_one_line_and_write_nothing(images, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert train_main(["--data-dir", images, *QUICK, "--out", str(out), *flags]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() or not [n for n in os.listdir(out) if n != ".lock"]
