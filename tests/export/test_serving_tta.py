"""The export serves what its run measured: test-time augmentation inside the SavedModel."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batchnorm

from resnet_tf import build_resnet
from resnet_tf.cli import export as export_cli
from resnet_tf.data.preprocessing import normalize
from resnet_tf.errors import ExportError
from resnet_tf.export import export_run, export_serving_model
from resnet_tf.export.savedmodel import SERVING_INFO
from resnet_tf.metrics import evaluate_model

SIZE = 16
CLASSES = ["cat", "dog", "bird"]
# Measured: the largest difference over the 3 choices x 6 images is 3e-7 (float32
# sums in another order, BatchNorm folded into the served convolutions).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return randomise_batchnorm(build_resnet(20, input_shape=(SIZE, SIZE, 3), classes=3))


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)


def _evaluated_scores(model, pixels, tta):
    """The scores `resnet-evaluate --tta` averages for each image (`evaluate_model`)."""
    kept = []
    images = normalize(tf.constant(pixels)).numpy()
    evaluate_model(model, [(images, np.zeros(len(pixels)))], CLASSES, tta=tta,
                   on_batch=lambda images, labels, scores: kept.append(scores))
    return np.concatenate(kept)


@pytest.mark.parametrize("tta", ["none", "flip", "flip-shift"])
def test_served_probabilities_equal_evaluation_with_the_same_tta(model, pixels, tmp_path, tta):
    version = export_serving_model(model, tmp_path, class_names=CLASSES, image_size=SIZE,
                                   preset="cifar", tta=tta)
    loaded = tf.saved_model.load(version)
    served = loaded.signatures["serving_pixels"](images=tf.constant(pixels))
    expected = _evaluated_scores(model, pixels, tta)
    print(f"max |served - evaluated| with tta={tta}: "
          f"{np.abs(served['probabilities'].numpy() - expected).max():.2e}")
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=TOLERANCE)
    assert served["classes"].numpy()[:, 0].tolist() == expected.argmax(axis=1).tolist()
    assert loaded.tta.numpy().decode() == tta
    with open(os.path.join(version, SERVING_INFO)) as f:
        assert json.load(f)["tta"] == tta


def test_tta_changes_what_is_served(model, pixels, tmp_path):
    single = _evaluated_scores(model, pixels, "none")
    shifted = _evaluated_scores(model, pixels, "flip-shift")
    assert np.abs(single - shifted).max() > 1e-3  # else the tests above prove nothing


def test_unknown_tta_is_refused_before_writing(model, tmp_path):
    with pytest.raises(ExportError, match="Received: tta='mirror'; expected one of none, flip, "
                                          "flip-shift"):
        export_serving_model(model, tmp_path / "e", class_names=CLASSES, image_size=SIZE,
                             preset="cifar", tta="mirror")
    assert not os.path.exists(tmp_path / "e" / "1")


def _run_folder(model, path, **config):
    os.makedirs(path)
    model.save(os.path.join(path, "last.keras"))
    model.save(os.path.join(path, "best.keras"))
    with open(os.path.join(path, "classes.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"config": {"image_size": SIZE, "preset": "cifar", "epochs": 1, **config},
                   "status": "complete"}, f)
    return str(path)


def test_a_run_exports_its_own_tta_and_an_old_run_single_view(model, tmp_path):
    run = _run_folder(model, tmp_path / "run", tta="flip-shift")
    loaded = tf.saved_model.load(export_run(run))
    assert loaded.tta.numpy().decode() == "flip-shift"
    old = _run_folder(model, tmp_path / "old")  # before --tta: its config has no tta
    assert tf.saved_model.load(export_run(old)).tta.numpy().decode() == "none"


def test_command_defaults_to_the_runs_tta_and_says_so(model, tmp_path, capsys):
    run = _run_folder(model, tmp_path / "run", tta="flip")
    assert export_cli.main([run, "--export-dir", str(tmp_path / "e")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "e" / "1")
    assert "flip test-time augmentation (2 views) (--tta flip)" in captured.err
    assert export_cli.main([run, "--export-dir", str(tmp_path / "e"), "--tta", "none"]) == 0
    assert tf.saved_model.load(str(tmp_path / "e" / "2")).tta.numpy().decode() == "none"


def test_a_calibrated_export_serves_the_temperature_scaled_probabilities(model, pixels, tmp_path):
    from resnet_tf.metrics import probabilities

    plain = _evaluated_scores(model, pixels, "flip")
    loaded = tf.saved_model.load(export_serving_model(
        model, tmp_path, class_names=CLASSES, image_size=SIZE, preset="cifar", tta="flip",
        temperature=2.5))
    served = loaded.signatures["serving_pixels"](images=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities(plain, 2.5),
                               atol=TOLERANCE)
    assert served["classes"].numpy()[:, 0].tolist() == plain.argmax(axis=1).tolist()


def test_a_runs_temperature_goes_into_its_export_and_into_predictions(model, pixels, tmp_path):
    from resnet_tf.evaluation.evaluate import load_classifier

    run = _run_folder(model, tmp_path / "run", tta="none")
    with open(os.path.join(run, "calibration.json"), "w") as f:
        json.dump({"temperature": 1.7}, f)
    with open(os.path.join(export_run(run), SERVING_INFO)) as f:
        assert json.load(f)["temperature"] == 1.7
    served = load_classifier(os.path.join(run, "best.keras")).serve(
        tf.constant([tf.io.encode_png(p).numpy() for p in pixels[:2]]))
    from resnet_tf.metrics import probabilities

    sharp = _evaluated_scores(model, pixels[:2], "none")
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities(sharp, 1.7),
                               atol=TOLERANCE)  # resnet-predict answers calibrated too
