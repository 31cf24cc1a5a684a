"""Weight files: keras.applications' HDF5 files, this library's own, and "imagenet".

keras.applications' layout comes from the real thing: tf_keras (Keras 2) writes a
ResNet50 file in a subprocess, so the two Keras versions never share a process.
"""

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import keras
import numpy as np
import pytest

from resnet_tf import build_resnet, files
from resnet_tf.data import normalize as data_normalize
from resnet_tf.errors import WeightsDownloadError
from resnet_tf.models import weights as weights_lib
from resnet_tf.models.weights import load_weights

SIZE = 64  # keras.applications accepts any input >= 32 with weights=None

# Random weights and non-trivial BatchNorm statistics, so inference really uses them.
_WRITE_LEGACY_FILES = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tf_keras

    out, size = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    tf_keras.utils.set_random_seed(0)
    top = tf_keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    for layer in top.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])
    # The include_top=False file: the same layers, less the classifier.
    notop = tf_keras.Model(top.input, top.get_layer("avg_pool").output)
    pixels = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    x = tf_keras.applications.resnet.preprocess_input(pixels.copy())
    np.save(f"{out}/pixels.npy", pixels)
    np.save(f"{out}/x.npy", x)
    # A JPEG as a client would send it, and what keras.applications makes of its pixels
    # decoded the way resnet_tf's serving graph decodes them.
    import tensorflow as tf
    photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    encoded = tf.io.encode_jpeg(photo, quality=95).numpy()
    open(f"{out}/photo.jpg", "wb").write(encoded)
    decoded = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    caffe = tf_keras.applications.resnet.preprocess_input(decoded[None].astype("float32"))
    np.save(f"{out}/photo_probabilities.npy", top(caffe, training=False).numpy())
    np.save(f"{out}/probabilities.npy", top(x, training=False).numpy())
    np.save(f"{out}/features.npy", notop(x, training=False).numpy())
    top.save_weights(f"{out}/resnet50.h5")
    notop.save_weights(f"{out}/resnet50_notop.h5")
    """
)


@pytest.fixture(scope="session")
def legacy(tmp_path_factory):
    """Paths of tf_keras ResNet50 files (with and without classifier) and its outputs."""
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tf_keras (the test extra) is not installed")
    out = tmp_path_factory.mktemp("tf_keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_LEGACY_FILES, str(out), str(SIZE)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "top": str(out / "resnet50.h5"),
        "notop": str(out / "resnet50_notop.h5"),
        "photo": str(out / "photo.jpg"),
        **{name: np.load(out / f"{name}.npy")
           for name in ("x", "pixels", "probabilities", "features", "photo_probabilities")},
    }


@pytest.fixture(scope="module")
def resnet101_v1():
    return build_resnet(101, variant="v1", input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def backbone():
    """A ResNet-50 v1 feature extractor that tests load files into (builds are slow)."""
    return build_resnet(50, variant="v1", include_top=False, pooling="avg",
                        input_shape=(SIZE, SIZE, 3))


def _standard(pixels):
    """Pixels 0..255 on resnet_tf's standard input scale."""
    return np.asarray(data_normalize(pixels))


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def _assert_unchanged(model, before):
    after = _values(model)
    assert len(after) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _zero(model):
    for v in model.weights:
        v.assign(np.zeros(v.shape, "float32"))


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        positive = v.name in ("gamma", "moving_variance")
        value = rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.1, v.shape)
        v.assign(value.astype("float32"))


# keras.applications files ---------------------------------------------------------


def test_tf_keras_writes_the_legacy_layout(legacy):
    with h5py.File(legacy["top"], "r") as f:
        assert "layers" not in f and "model_weights" not in f
        layer_names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        assert layer_names[-1] == "predictions"
        weight_names = [
            n.decode() if isinstance(n, bytes) else n for n in f["conv1_bn"].attrs["weight_names"]
        ]
    assert weight_names == [
        "conv1_bn/gamma:0", "conv1_bn/beta:0",
        "conv1_bn/moving_mean:0", "conv1_bn/moving_variance:0",
    ]


@pytest.fixture(scope="module")
def classifier(legacy):
    return build_resnet(50, variant="v1", weights=legacy["top"], input_shape=(SIZE, SIZE, 3))


def test_keras_applications_file_reproduces_its_predictions(legacy, classifier):
    # The caffe preprocessing travels inside the model: it takes resnet_tf's standard input.
    assert "weights_normalization" in [layer.name for layer in classifier.layers]
    probabilities = _predict(classifier, _standard(legacy["pixels"]))
    assert np.abs(probabilities - legacy["probabilities"]).max() < 1e-4
    assert probabilities.max() < 0.999  # not saturated, so the comparison means something


@pytest.mark.parametrize("file", ["notop", "top"])
def test_keras_applications_file_reproduces_its_features(legacy, backbone, file):
    # A file with the classifier loads into a model without one (only "predictions" skipped).
    _zero(backbone)
    load_weights(backbone, legacy[file], depth=50, variant="v1", include_top=False)
    features = _predict(backbone, legacy["x"])
    assert features.std() > 0.1
    np.testing.assert_allclose(features, legacy["features"], rtol=1e-4, atol=1e-4)


def test_v1_file_into_v1_5_model_names_the_variant(legacy):
    with pytest.raises(ValueError) as error:
        build_resnet(50, weights=legacy["top"], input_shape=(SIZE, SIZE, 3))
    message = str(error.value)
    assert "does not match resnet50 (variant='v1.5')" in message
    assert "layer 'conv1_conv' has no 'bias' in the model" in message
    assert f"Received: weights='{legacy['top']}'" in message
    assert "keras.applications files need variant='v1'" in message


def test_resnet50_file_into_resnet101_fails_and_loads_nothing(legacy, resnet101_v1):
    before = _values(resnet101_v1)
    with pytest.raises(ValueError, match="layer 'conv4_block7_1_conv' is not in the file"):
        load_weights(resnet101_v1, legacy["top"], depth=101, variant="v1")
    # conv1 .. conv4_block6 match: a loader that assigned as it checked would have changed them.
    _assert_unchanged(resnet101_v1, before)


def test_resnet101_file_into_resnet50_names_the_extra_layers(backbone, resnet101_v1, tmp_path):
    path = str(tmp_path / "resnet101_v1.h5")
    resnet101_v1.save(path)  # Keras 3's legacy HDF5: the layout under "model_weights"
    before = _values(backbone)
    with pytest.raises(ValueError) as error:
        load_weights(backbone, path, depth=50, variant="v1", include_top=False)
    assert "the file has 102 layer(s) with weights that the model lacks, first " \
           "'conv4_block7_1_conv'" in str(error.value)
    _assert_unchanged(backbone, before)


def test_other_classes_than_the_file_asks_for_include_top_false(legacy):
    with pytest.raises(ValueError) as error:
        build_resnet(50, variant="v1", classes=10, weights=legacy["top"],
                     input_shape=(SIZE, SIZE, 3))
    message = str(error.value)
    assert "has a 1000-class classifier" in message
    assert "Received: classes=10" in message
    assert "expected classes=1000, or include_top=False" in message


def test_notop_file_into_model_with_classifier_says_include_top_false(legacy, classifier):
    with pytest.raises(ValueError, match=r"'predictions' is not in the file .*include_top=False"):
        load_weights(classifier, legacy["notop"], depth=50, variant="v1")


def test_legacy_file_is_recognised_by_content_not_suffix(legacy, backbone, tmp_path):
    path = tmp_path / "renamed.weights.h5"
    os.symlink(legacy["notop"], path)
    _zero(backbone)
    load_weights(backbone, path, depth=50, variant="v1", include_top=False)
    np.testing.assert_allclose(_predict(backbone, legacy["x"]), legacy["features"],
                               rtol=1e-4, atol=1e-4)


# This library's own files -----------------------------------------------------------


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A ResNet-20 with random weights, saved in every format, and its outputs."""
    out = tmp_path_factory.mktemp("own")
    model = build_resnet(20, input_shape=(32, 32, 3), classes=10)
    _randomize(model)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    model.save_weights(str(out / "resnet20.weights.h5"))
    model.save(str(out / "resnet20.keras"))
    return {"dir": out, "x": x, "outputs": _predict(model, x)}


@pytest.mark.parametrize("file", ["resnet20.weights.h5", "resnet20.keras"])
def test_own_file_round_trip_gives_identical_outputs(own, file):
    model = build_resnet(20, input_shape=(32, 32, 3), classes=10, weights=own["dir"] / file)
    np.testing.assert_array_equal(_predict(model, own["x"]), own["outputs"])


@pytest.mark.parametrize("file, renamed", [
    ("resnet20.weights.h5", "resnet20.h5"),
    ("resnet20.keras", "resnet20.model"),
])
def test_own_file_is_recognised_by_content_not_suffix(own, tmp_path, file, renamed):
    shutil.copyfile(own["dir"] / file, tmp_path / renamed)
    model = build_resnet(20, input_shape=(32, 32, 3), classes=10, weights=tmp_path / renamed)
    np.testing.assert_array_equal(_predict(model, own["x"]), own["outputs"])


def test_keras3_legacy_h5_full_model_loads_by_name(tmp_path):
    source = build_resnet(20, variant="v1", input_shape=(32, 32, 3), classes=10)
    _randomize(source, seed=2)
    path = str(tmp_path / "resnet20_v1.h5")
    source.save(path)
    model = build_resnet(20, variant="v1", input_shape=(32, 32, 3), classes=10, weights=path)
    x = np.ones((1, 32, 32, 3), "float32")
    np.testing.assert_array_equal(_predict(model, x), _predict(source, x))


def test_own_weights_file_with_other_classes_fails_and_loads_nothing(own):
    model = build_resnet(20, input_shape=(32, 32, 3), classes=100)
    before = _values(model)
    with pytest.raises(ValueError) as error:
        load_weights(model, own["dir"] / "resnet20.weights.h5", depth=20, variant="v1.5",
                     classes=100)
    message = str(error.value)
    assert "has a 10-class classifier" in message and "Received: classes=100" in message
    # Keras assigns every other layer before it reports the classifier: we undo that.
    _assert_unchanged(model, before)


@pytest.mark.parametrize("file", ["resnet20.weights.h5", "resnet20.keras"])
def test_own_file_into_other_depth_names_a_layer(own, file):
    with pytest.raises(ValueError) as error:
        build_resnet(32, input_shape=(32, 32, 3), classes=10, weights=own["dir"] / file)
    message = str(error.value)
    assert f"weights file '{file}' does not match resnet32 (variant='v1.5'): layer '" in message
    assert "expected a file saved from a model built with the same build_resnet arguments" \
        in message


# "imagenet" and bad arguments --------------------------------------------------------


def test_imagenet_keeps_keras_applications_urls_and_hashes():
    from keras.src.applications import resnet as applications

    assert weights_lib.IMAGENET_URL == applications.BASE_WEIGHTS_PATH
    for depth, hashes in weights_lib.IMAGENET_HASHES.items():
        assert hashes == applications.WEIGHTS_HASHES[f"resnet{depth}"]


def test_imagenet_for_resnet18_is_refused():
    with pytest.raises(ValueError, match="ImageNet weights are published for variant='v1'"):
        build_resnet(18, weights="imagenet")


@pytest.mark.parametrize("depth, variant", [(18, "v1"), (50, "v1.5"), (200, "v1")])
def test_imagenet_only_for_published_combinations(depth, variant):
    with pytest.raises(ValueError) as error:
        load_weights(None, "imagenet", depth=depth, variant=variant)
    message = str(error.value)
    assert "published for variant='v1' with depth 50, 101 or 152" in message
    assert f"Received: weights='imagenet', depth={depth}, variant='{variant}'" in message


def test_imagenet_with_other_classes_fails_before_downloading(monkeypatch):
    monkeypatch.setattr(weights_lib, "imagenet_file", lambda *a: pytest.fail("downloaded"))
    with pytest.raises(ValueError, match="Received: classes=10; expected classes=1000"):
        load_weights(None, "imagenet", depth=50, variant="v1", classes=10)


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


def _no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _assert_offline_advice(error, file_name):
    message = str(error.value)
    url = weights_lib.IMAGENET_URL + file_name
    assert isinstance(error.value, RuntimeError)
    assert message.startswith(f"The ImageNet weights {file_name} are not in the Keras cache")
    assert f"download {url} and pass weights='/path/to/{file_name}'." in message
    assert "\n" not in message and message.count("; ") == 1  # one sentence
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_imagenet_offline_fails_fast_with_one_sentence(empty_keras_home, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns)
    timeout = socket.getdefaulttimeout()
    start = time.monotonic()
    with pytest.raises(WeightsDownloadError) as error:
        load_weights(None, "imagenet", depth=50, variant="v1", include_top=False)
    assert time.monotonic() - start < 5
    _assert_offline_advice(error, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert str(empty_keras_home / "models") in str(error.value)
    assert os.listdir(empty_keras_home / "models") == []  # no partial file left behind
    assert socket.getdefaulttimeout() == timeout


def test_imagenet_download_that_stalls_times_out(empty_keras_home, monkeypatch):
    # A server that accepts the connection and never answers: without a socket timeout
    # the download would wait forever.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    address = server.getsockname()
    monkeypatch.setattr(
        socket, "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address)],
    )
    monkeypatch.setattr(files, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.monotonic()
    try:
        with pytest.raises(WeightsDownloadError) as error:
            load_weights(None, "imagenet", depth=101, variant="v1")
    finally:
        server.close()
    assert time.monotonic() - start < 5
    _assert_offline_advice(error, "resnet101_weights_tf_dim_ordering_tf_kernels.h5")


def test_imagenet_uses_the_keras_cache_without_network(legacy, classifier, empty_keras_home,
                                                      monkeypatch):
    file_name = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    (empty_keras_home / "models").mkdir()
    os.symlink(legacy["top"], empty_keras_home / "models" / file_name)
    with open(legacy["top"], "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    monkeypatch.setitem(weights_lib.IMAGENET_HASHES, 50, (md5, "unused"))
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns)
    _zero(classifier)
    load_weights(classifier, "imagenet", depth=50, variant="v1")
    assert np.abs(_predict(classifier, _standard(legacy["pixels"])) - legacy["probabilities"]).max() < 1e-4


def test_missing_file():
    with pytest.raises(ValueError) as error:
        build_resnet(20, weights="/no/such/resnet20.weights.h5")
    assert str(error.value) == (
        "weights file not found. Received: weights='/no/such/resnet20.weights.h5'; "
        "expected None, 'imagenet' or a path to a .h5/.weights.h5/.keras file."
    )


def test_file_that_is_no_weights_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a weights file")
    with pytest.raises(ValueError, match="is neither a keras.applications HDF5 file nor"):
        build_resnet(20, weights=path)


@pytest.mark.slow  # ~20 s: export and serve a ResNet-50
def test_keras_applications_weights_served_from_jpeg_bytes_match_tf_keras(legacy, classifier,
                                                                       tmp_path):
    """Issue 12: the caffe preprocessing travels with the weights into the SavedModel."""
    import tensorflow as tf

    from resnet_tf.export import export_serving_model

    path = export_serving_model(classifier, tmp_path / "export", class_names=[
        f"c{i}" for i in range(1000)], image_size=SIZE, preset="cifar")
    served = tf.saved_model.load(path).signatures["serving_default"]
    with open(legacy["photo"], "rb") as f:
        out = served(image_bytes=tf.constant([f.read()]))
    np.testing.assert_allclose(out["probabilities"].numpy(), legacy["photo_probabilities"],
                               atol=1e-4)


def test_preprocessing_is_saved_in_keras_files(classifier, tmp_path):
    classifier.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.get_layer("weights_normalization")
    assert layer.get_config()["mode"] == "caffe"
