"""Grad-CAM, feature grids, the error gallery and `resnet-explain`.

The key test trains a tiny residual network on noise images whose class is decided only
by a 6x6 red, green or blue patch at a random place, and requires the Grad-CAM peak to
fall on the patch; the same network untrained stays near chance, so the test cannot pass
by accident.
"""

import os
import re

import keras
import numpy as np
import pytest
from PIL import Image

from resnet_tf import build_resnet, residual_block
from resnet_tf.cli.explain import main
from resnet_tf.data import normalize
from resnet_tf.evaluation.explain import (
    ExplainError,
    colorize,
    error_gallery,
    feature_grid,
    feature_layer,
    grad_cam,
    overlay,
    stage_layers,
    upsample,
)

SIZE = 32
PATCH = 6
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
CLASSES = list(COLOURS)
STRIDE = 4  # of the tiny network's last stage: an 8 x 8 grid


def patch_images(count, seed):
    """uint8 RGB noise with one pure-colour patch; the colour is the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), count)
    corners = rng.integers(0, SIZE - PATCH + 1, (count, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        image[row:row + PATCH, col:col + PATCH] = COLOURS[CLASSES[label]]
    return images, labels, corners


def tiny_network(seed):
    """Stem at 32 x 32, then two residual stages named as build_resnet names them (C2, C3)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = residual_block(x, 16, 2, name="conv2_block1")
    x = residual_block(x, 32, 2, name="conv3_block1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def trained():
    images, labels, _ = patch_images(1500, seed=0)
    model = tiny_network(seed=0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(normalize(images).numpy(), labels, batch_size=64, epochs=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def held_out():
    images, labels, corners = patch_images(200, seed=1)
    return images, normalize(images).numpy(), labels, corners


def on_patch(heatmaps, corners, stride=STRIDE):
    """Fraction of heat maps whose peak cell covers part of the image's patch."""
    hits = []
    for heatmap, (row, col) in zip(heatmaps, corners):
        r, c = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        hits.append(r * stride < row + PATCH and row < (r + 1) * stride
                    and c * stride < col + PATCH and col < (c + 1) * stride)
    return float(np.mean(hits))


def test_grad_cam_peak_lies_on_the_patch_that_decides_the_class(trained, held_out):
    _, inputs, labels, corners = held_out
    accuracy = np.mean(np.argmax(trained.predict(inputs, verbose=0), axis=1) == labels)
    assert accuracy >= 0.95  # the network learned the task, so its evidence is the patch

    heatmaps = grad_cam(trained, inputs)

    assert heatmaps.shape == (200, 8, 8) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
    assert on_patch(heatmaps, corners) >= 0.9  # no tolerance: the peak cell itself
    untrained = grad_cam(tiny_network(seed=0), inputs, class_index=list(labels))
    assert on_patch(untrained, corners) < 0.5  # chance is about 0.14


def test_grad_cam_uses_the_pre_softmax_score(trained, held_out):
    """A softmax head and the same Dense without activation give the same heat maps."""
    _, inputs, _, _ = held_out
    dense = trained.get_layer("predictions")
    linear = keras.layers.Dense(len(CLASSES), name="predictions")
    logits = keras.Model(trained.input, linear(trained.get_layer("avg_pool").output))
    linear.set_weights(dense.get_weights())

    for class_index in (None, 2):
        np.testing.assert_allclose(grad_cam(logits, inputs[:8], class_index),
                                   grad_cam(trained, inputs[:8], class_index), atol=1e-5)


def test_grad_cam_class_index_and_layer_choices(trained, held_out):
    _, inputs, _, _ = held_out
    batch = inputs[:4]
    top = np.argmax(trained.predict(batch, verbose=0), axis=1)
    per_image = [0, 1, 2, None]

    by_list = grad_cam(trained, batch, per_image)

    for i, index in enumerate(per_image):
        expected = top[i] if index is None else index
        np.testing.assert_allclose(by_list[i], grad_cam(trained, batch[i], expected)[0], atol=1e-6)
    np.testing.assert_allclose(grad_cam(trained, batch), grad_cam(trained, batch, list(top)), atol=1e-6)
    assert grad_cam(trained, batch, 1, layer="C2").shape == (4, 16, 16)
    np.testing.assert_array_equal(grad_cam(trained, batch, layer="C2"),
                                  grad_cam(trained, batch, layer="conv2_block1_out"))
    assert grad_cam(trained, batch, layer="conv1_relu").shape == (4, 32, 32)
    assert stage_layers(trained) == {"C2": "conv2_block1_out", "C3": "conv3_block1_out"}


def test_grad_cam_of_a_saved_keras_file(trained, held_out, tmp_path):
    _, inputs, _, _ = held_out
    trained.save(tmp_path / "tiny.keras")
    loaded = keras.saving.load_model(tmp_path / "tiny.keras", compile=False)

    np.testing.assert_allclose(grad_cam(loaded, inputs[:8]), grad_cam(trained, inputs[:8]), atol=1e-6)


@pytest.mark.parametrize("class_index, message", [
    (3, "Received: class_index=3; expected an integer from 0 to 2"),
    (-1, "Received: class_index=-1; expected an integer from 0 to 2"),
    ([0, 1], "Received: class_index with 2 entries for 4 images"),
    (1.5, "Received: class_index=1.5"),
])
def test_grad_cam_rejects_a_class_index(trained, held_out, class_index, message):
    with pytest.raises(ExplainError, match=re.escape(message)):
        grad_cam(trained, held_out[1][:4], class_index)


def test_grad_cam_rejects_a_missing_layer_listing_the_stages(trained, held_out):
    with pytest.raises(ExplainError, match=re.escape("Received: layer='C5' (no such layer in model "
                                                     "'tiny'); expected a stage name (C2, C3)")):
        grad_cam(trained, held_out[1][:2], layer="C5")
    with pytest.raises(ExplainError, match="a layer without a 4-D feature map"):
        grad_cam(trained, held_out[1][:2], layer="avg_pool")


@pytest.mark.parametrize("shape", [(2, 16, 32, 3), (2, 32, 32, 1), (32, 32), (0, 32, 32, 3)])
def test_grad_cam_rejects_a_wrong_image_shape(trained, shape):
    with pytest.raises(ExplainError, match=re.escape(f"Received: images of shape {shape}; expected "
                                                     "preprocessed images of shape (N, 32, 32, 3)")):
        grad_cam(trained, np.zeros(shape, np.float32))


def test_grad_cam_names_the_backend_it_needs(trained, held_out, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")

    with pytest.raises(NotImplementedError, match="Received: Keras backend 'jax'; expected 'tensorflow'"):
        grad_cam(trained, held_out[1][:1])


@pytest.mark.slow  # ~35 s to build keras.applications' ResNet-50
def test_grad_cam_on_keras_applications_resnet50():
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=5)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)

    heatmaps = grad_cam(model, images, class_index=4)

    assert stage_layers(model) == {f"C{s}": f"conv{s}_block{b}_out" for s, b in
                                   ((2, 3), (3, 4), (4, 6), (5, 3))}
    assert feature_layer(model).name == "conv5_block3_out"
    assert heatmaps.shape == (2, 2, 2) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert grad_cam(model, images, layer="C3").shape == (2, 8, 8)


def test_grad_cam_of_a_pre_activation_resnet_reads_the_final_relu():
    model = build_resnet(20, variant="v2", input_shape=(SIZE, SIZE, 3), classes=4)
    images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)

    assert stage_layers(model)["C4"] == "post_relu"  # as feature_extractor reads stage C4
    assert feature_layer(model).name == "post_relu"
    assert grad_cam(model, images).shape == (2, 8, 8)


def test_upsample_and_overlay(held_out):
    pictures = held_out[0]
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[2, 5] = 1

    big = upsample(heatmap, (32, 32))
    blended = overlay(pictures[0], heatmap)

    assert big.shape == (32, 32) and np.unravel_index(np.argmax(big), big.shape)[0] // 4 == 2
    assert upsample(np.stack([heatmap] * 3), (16, 24)).shape == (3, 16, 24)
    assert blended.dtype == np.uint8 and blended.shape == (32, 32, 3)
    np.testing.assert_array_equal(overlay(pictures[0], heatmap, alpha=0), pictures[0])
    assert overlay(pictures[0][..., 0], heatmap).shape == (32, 32, 3)
    with pytest.raises(ExplainError, match=re.escape("Received: image of shape (32, 32, 4)")):
        overlay(np.zeros((32, 32, 4)), heatmap)


def test_feature_grid_tiles_the_strongest_channels(trained, held_out):
    image = held_out[1][0]
    maps = keras.Model(trained.input, trained.get_layer("conv2_block1_out").output)(image[None])
    maps = np.asarray(maps)[0]
    strongest = maps[..., np.argmax(maps.mean(axis=(0, 1)))]
    strongest = (strongest - strongest.min()) / (strongest.max() - strongest.min())

    grid = feature_grid(trained, image, stage="C2", channels=16)
    everything = feature_grid(trained, image, stage="C3", channels=100)

    assert grid.dtype == np.uint8 and grid.shape == (4 * 64 + 3 * 2, 4 * 64 + 3 * 2, 3)  # 16 x 16, x4
    assert everything.shape == (6 * 64 + 5 * 2, 6 * 64 + 5 * 2, 3)  # all 32 channels, 8 x 8, x8
    np.testing.assert_array_equal(grid[:64:4, :64:4], colorize(strongest, "viridis"))  # first tile
    with pytest.raises(ExplainError, match=re.escape("Received: channels=0")):
        feature_grid(trained, image, channels=0)


def test_error_gallery_shows_the_most_confident_errors(tmp_path, held_out):
    pictures = held_out[0][:6]
    true = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 2, 2, 1, 0, 1])
    probs = np.full((6, 3), 0.1, np.float32)
    probs[np.arange(6), pred] = [0.9, 0.6, 0.8, 0.95, 0.7, 0.5]
    path = tmp_path / "errors.png"

    shown = error_gallery(pictures, true, pred, probs, CLASSES, path, count=3)
    with_maps = error_gallery(pictures, true, pred, probs, CLASSES, tmp_path / "maps.png",
                              heatmaps=np.random.default_rng(0).random((6, 8, 8)))
    none = error_gallery(pictures, true, true, probs, CLASSES, tmp_path / "none.png")

    assert shown == [3, 4, 1]
    assert with_maps == [3, 4, 1, 5]
    assert none == []
    for name in ("errors.png", "maps.png", "none.png"):
        assert Image.open(tmp_path / name).format == "PNG"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary files left
    with pytest.raises(ExplainError, match="Received: 6 true labels with 6 images, 5 pred"):
        error_gallery(pictures, true, pred[:5], probs, CLASSES, path)


# ---------------------------------------------------------------------------------------
# resnet-explain


@pytest.fixture(scope="module")
def run_folder(trained, tmp_path_factory):
    """A run folder as the trainer leaves it (best.keras, classes.txt) and image files."""
    folder = tmp_path_factory.mktemp("run")
    trained.save(folder / "best.keras")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    images_dir = tmp_path_factory.mktemp("images")
    pictures, labels, _ = patch_images(3, seed=7)
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        Image.fromarray(picture).save(images_dir / f"{i} {CLASSES[label]} patch.png")
    return folder, images_dir, [CLASSES[label] for label in labels]


def test_cli_writes_an_explanation_per_image_and_an_index(run_folder, tmp_path, capsys):
    folder, images_dir, colours = run_folder
    out = tmp_path / "out"

    status = main([str(folder), str(images_dir), "--out", str(out), "--class", "green",
                   "--features", "C2", "--top-k", "2"])

    assert status == 0
    written = sorted(os.listdir(out))
    pictures = [f for f in written if re.fullmatch(r"\d{3}_.*_patch\.png", f)]
    grids = [f for f in written if f.endswith("_features_C2.png")]
    assert len(pictures) == 3 and len(grids) == 3 and "index.html" in written
    assert not [f for f in written if f.startswith(".")]
    index = (out / "index.html").read_text()
    for name in pictures + grids:
        assert f'src="{name}"' in index
        assert Image.open(out / name).format == "PNG"
    assert index.count("<li>") == 3 * 2  # top-2 per image
    printed = capsys.readouterr().out
    for colour in colours:  # each image's top class is its patch's colour
        assert re.search(rf"{colour} patch\.png: {colour} \d\.\d{{4}} ->", printed)


def test_cli_stops_at_an_undecodable_image(run_folder, tmp_path, capsys):
    folder, images_dir, _ = run_folder
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    out = tmp_path / "out"

    status = main([str(folder), str(images_dir), str(broken), "--out", str(out)])

    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("resnet-explain: error: Received: image ") and "broken.png" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--class", "purple"], "Received: --class 'purple'; expected one of the model's classes: "
                            "red, green, blue."),
    (["--layer", "conv9"], "Received: layer='conv9' (no such layer in model 'tiny')"),
    (["--features", "C4"], "Received: layer='C4'"),
    (["--image-size", "48"], "Received: image size 48 (from --image-size or config.json); expected 32"),
])
def test_cli_user_errors_are_one_line(run_folder, tmp_path, capsys, flags, message):
    folder, images_dir, _ = run_folder

    status = main([str(folder), str(images_dir), "--out", str(tmp_path / "out"), *flags])

    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()
