"""TFLite files from `export_tflite` compute what the Keras model computes, at each quantization.

One tiny ResNet-20 (16x16 inputs, 3 classes, BatchNorm statistics randomised so folding
them matters) is exported once per quantization; a small generated image folder with one
colour per class serves as training data for int8 calibration and as an easy test set.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batchnorm
from PIL import Image

from resnet_tf import build_resnet, data
from resnet_tf.cli import export as export_cli
from resnet_tf.errors import ExportError
from resnet_tf.export import export_tflite, predict_tflite, tflite

SIZE = 16
CLASSES = ["red", "green", "blue"]
PER_CLASS = 8


def _tiny_model():
    keras.utils.set_random_seed(0)
    return randomise_batchnorm(build_resnet(20, input_shape=(SIZE, SIZE, 3), classes=len(CLASSES)))


def _fit_head(model, images, labels):
    """Sets the classifier to the least-squares fit of the images' features to confident logits.

    The random network then tells the classes apart with margins, which makes agreement
    with the float model a test of the int8 model rather than of a constant prediction.
    """
    features = keras.Model(model.input, model.get_layer("avg_pool").output).predict(images, verbose=0)
    features = np.c_[features, np.ones(len(features))]
    targets = 2.0 * np.eye(len(CLASSES))[labels]  # probabilities near 0.8, not saturated
    solution = np.linalg.solve(features.T @ features + 1e-3 * np.eye(features.shape[1]),
                               features.T @ targets)
    model.get_layer("predictions").set_weights([solution[:-1], solution[-1]])
    return model


@pytest.fixture(scope="module")
def model(images):
    return _fit_head(_tiny_model(), *images)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Noisy images dominated by one colour channel per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            image = rng.integers(0, 96, (SIZE, SIZE, 3))
            image[..., label] += 160
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def images(folder):
    files, labels, _ = data.list_image_folder(folder)
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return data.normalize(pixels).numpy(), np.asarray(labels)


@pytest.fixture(scope="module")
def exported(model, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite")
    calibration = tflite.calibration_images(folder, image_size=SIZE, preset="cifar", count=16)
    return {q: export_tflite(model, out / f"tiny_{q}.tflite", quantization=q,
                             representative_images=calibration, class_names=CLASSES)
            for q in tflite.QUANTIZATIONS}


def test_each_quantization_writes_a_model_and_a_sidecar_a_client_can_use(exported):
    sizes = {q: os.path.getsize(path) for q, path in exported.items()}
    # float16 halves the weights, int8 quarters them.
    assert sizes["int8"] < 0.6 * sizes["float16"] < 0.6 * sizes["float32"]
    for q, path in exported.items():
        with open(tflite.sidecar_path(path)) as f:
            meta = json.load(f)
        assert (meta["quantization"], meta["class_names"], meta["image_size"], meta["preset"]) == (
            q, CLASSES, SIZE, "cifar")
        assert (meta["mean"], meta["std"]) == (list(data.MEAN), list(data.STD))
        assert meta["input"]["shape"] == [-1, SIZE, SIZE, 3]
        assert meta["output"]["shape"] == [-1, len(CLASSES)]
        expected_dtype = "int8" if q == "int8" else "float32"
        assert meta["input"]["dtype"] == meta["output"]["dtype"] == expected_dtype
    with open(tflite.sidecar_path(exported["int8"])) as f:
        int8 = json.load(f)
    assert int8["input"]["scale"] > 0 and int8["output"]["scale"] == pytest.approx(1 / 256)
    assert int8["calibration_images"] == 16


def test_float32_and_float16_match_the_keras_model(model, exported, images):
    x = images[0][::3]
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict_tflite(exported["float32"], x), expected, atol=1e-4)
    np.testing.assert_allclose(predict_tflite(exported["float16"], x), expected, atol=1e-2)


def test_int8_is_full_integer_and_agrees_with_the_float_model(model, exported, images):
    tensors = tflite.load_interpreter(exported["int8"]).get_tensor_details()
    assert {np.dtype(t["dtype"]).name for t in tensors} <= {"int8", "int32"}  # no float left
    kernels = [t for t in tensors if len(t["shape"]) == 4 and t["quantization_parameters"]["scales"].size > 1]
    conv_count = sum(isinstance(l, keras.layers.Conv2D) for l in model.layers)
    assert len(kernels) == conv_count
    for kernel in kernels:  # int8 weights, one scale per output channel
        assert np.dtype(kernel["dtype"]) == np.int8
        assert kernel["quantization_parameters"]["scales"].size == kernel["shape"][0]

    x, labels = images
    expected = model.predict(x, verbose=0)
    assert np.mean(expected.argmax(-1) == labels) == 1.0  # the easy set is easy
    got = predict_tflite(exported["int8"], x)
    assert np.abs(got - expected).max() < 0.08
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.9


def test_evaluate_and_latency_read_the_files(model, exported, images):
    x, labels = images
    keras_top1 = np.mean(model.predict(x, verbose=0).argmax(-1) == labels)
    batches = tf.data.Dataset.from_tensor_slices((x, labels)).batch(5)
    assert tflite.evaluate_tflite(exported["float32"], batches, batch_size=4) == pytest.approx(keras_top1)
    assert tflite.latency_ms(exported["int8"], runs=3, warmup=1) > 0


def test_existing_files_are_kept_unless_overwrite(model, exported):
    before = open(exported["float32"], "rb").read()
    with pytest.raises(ExportError, match="already exists"):
        export_tflite(model, exported["float32"], quantization="float16")
    assert open(exported["float32"], "rb").read() == before
    assert not [n for n in os.listdir(os.path.dirname(exported["float32"])) if n.startswith(".tmp")]


def test_int8_without_images_and_unknown_quantizations_are_rejected(model, tmp_path):
    with pytest.raises(ExportError, match="representative_images"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ExportError, match=r"one of float32, float16, int8. Received: quantization='int4'"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int4")
    assert not os.listdir(tmp_path)


def test_command_writes_tflite_beside_the_saved_model(model, folder, tmp_path, capsys):
    model.save(tmp_path / "best.keras")
    code = export_cli.main([str(tmp_path), "--tflite", "float16,int8", "--tflite", "int8",
                        "--data-dir", str(folder)])
    assert code == 0, capsys.readouterr().err
    base = tmp_path / "export" / model.name
    assert sorted(os.listdir(base)) == sorted(
        ["1", f"{model.name}_float16.tflite", f"{model.name}_float16.json",
         f"{model.name}_int8.tflite", f"{model.name}_int8.json"])
    assert capsys.readouterr().out.split() == [
        str(base / "1"), str(base / f"{model.name}_float16.tflite"), str(base / f"{model.name}_int8.tflite")]


def test_command_without_training_images_fails_before_writing(model, tmp_path, capsys):
    model.save(tmp_path / "best.keras")
    assert export_cli.main([str(tmp_path), "--tflite", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("resnet-export: error: --tflite int8 needs training images")
    assert "--data-dir" in err
    assert not os.path.exists(tmp_path / "export")
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tmp_path), "--tflite", "int4"])
    assert exit_info.value.code == 2
