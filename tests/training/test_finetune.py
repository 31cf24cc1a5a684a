"""Issue 12: `train.py --weights NAME|PATH` fine-tunes: backbone from the weights, a new
classifier for the data's classes, the head trained alone for --freeze-epochs first."""

import importlib.util
import json

import keras
import numpy as np
import pytest
from conftest import error_line, run_train, train_in_process
from torch_reference import save_torchvision_resnet18

import resnet_tf  # noqa: F401  (registers the layers and the schedule)

FAST = ["--batch-size", "8", "--precision", "float32", "--no-export"]


@pytest.fixture(scope="module")
def pretrained(image_folder_factory, tmp_path_factory):
    """A 1-epoch run on three classes, the source of the fine-tuning tests."""
    images = image_folder_factory(classes=("cat", "dog", "fish"), per_class=10, size=8)
    out = tmp_path_factory.mktemp("runs") / "source"
    result = train_in_process("--data-dir", images, "--epochs", "1", *FAST, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def target(image_folder_factory):
    return image_folder_factory(classes=("ant", "bee"), per_class=10, size=8, seed=1)


def _convs(model):
    return {layer.name: layer.get_weights()[0] for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)}


def test_head_phase_keeps_the_backbone_then_fine_tuning_resumes(pretrained, target, tmp_path):
    out = tmp_path / "finetuned"
    args = ["--data-dir", target, "--weights", pretrained, "--freeze-epochs", "1",
            "--epochs", "2", *FAST, "--out", out]
    killed = run_train(*args, RESNET_TF_KILL_AT="start of epoch 2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    source = keras.saving.load_model(pretrained / "best.keras")
    after_head = keras.saving.load_model(out / "last.keras")
    assert after_head.output_shape == (None, 2)  # a new classifier for the new classes
    theirs = _convs(source)
    for name, kernel in _convs(after_head).items():
        np.testing.assert_array_equal(kernel, theirs[name])  # frozen during the head phase
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["depth"], config["image_size"], config["stem"]) == (20, 8, "cifar")

    resumed = train_in_process(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/2" not in resumed.stdout and "Epoch 2/2" in resumed.stdout
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    final = keras.saving.load_model(out / "last.keras")
    assert any(not np.array_equal(k, theirs[n]) for n, k in _convs(final).items())


def test_both_phases_in_one_process(pretrained, target, tmp_path):
    out = tmp_path / "run"
    result = train_in_process("--data-dir", target, "--weights", pretrained, "--freeze-epochs",
                              "1", "--epochs", "2", *FAST, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("args, message", [
    (["--freeze-epochs", "1"], "Received: no --weights"),
    (["--weights", "/no/such/file.pth"], "--weights names nothing that exists"),
])
def test_fine_tuning_errors(target, tmp_path, args, message):
    result = train_in_process("--data-dir", target, "--epochs", "2", *FAST, "--out",
                              tmp_path / "r", *args)
    assert result.returncode == 2
    assert message in error_line(result)


def test_weights_of_another_architecture_name_the_layer(pretrained, target, tmp_path):
    result = train_in_process("--data-dir", target, "--weights", pretrained, "--depth", "32",
                              "--epochs", "1", *FAST, "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "does not fit the network at layer" in error_line(result)


# What the weights decide, in-process ---------------------------------------------------


@pytest.mark.parametrize("weights, depth, found", [
    ("torchvision:IMAGENET1K_V2", 50, {"depth": 50, "image_size": 224, "stem": "imagenet"}),
    ("timm:resnet50d.a1_in1k", None,
     {"depth": 50, "variant": "d", "image_size": 224, "stem": "deep"}),
])
def test_registered_weights_decide_architecture_and_size(weights, depth, found):
    from resnet_tf.training.finetune import weights_defaults, weights_kind

    assert weights_kind(weights) == "registry"
    assert weights_defaults(weights, depth) == found


def test_a_keras_file_without_run_decides_by_its_spec(tmp_path):
    from resnet_tf import build_resnet
    from resnet_tf.training.finetune import weights_defaults, weights_kind

    build_resnet(20, variant="d", stem="cifar", classes=3).save(tmp_path / "m.keras")
    assert weights_kind(str(tmp_path / "m.keras")) == "keras"
    # The defaults of ResNet-20 (shortcut "A", groups 1, ...) stay unset, as flags leave them.
    assert weights_defaults(str(tmp_path / "m.keras")) == {"depth": 20, "variant": "d",
                                                           "stem": "cifar"}


def test_weights_that_name_nothing_are_a_config_error():
    from resnet_tf.errors import ConfigError
    from resnet_tf.training.finetune import weights_defaults

    with pytest.raises(ConfigError, match="--weights names nothing that exists"):
        weights_defaults("imagenet")


def test_build_from_model_keeps_the_input_conversion_and_the_backbone(tmp_path):
    from resnet_tf import build_resnet
    from resnet_tf.training.finetune import build_from_model

    build_resnet(20, input_shape=(16, 16, 3), classes=3, preprocessing="caffe").save(
        tmp_path / "m.keras")
    source = keras.saving.load_model(tmp_path / "m.keras")
    model = build_from_model(source, str(tmp_path / "m.keras"), depth=20,
                             input_shape=(16, 16, 3), classes=2, classifier_activation=None)
    assert model.get_layer("weights_normalization").mode == "caffe"
    assert model.output_shape == (None, 2)
    for name, kernel in _convs(model).items():
        np.testing.assert_array_equal(kernel, _convs(source)[name])


# The weights' evaluation transform (issue 29) -------------------------------------------


@pytest.mark.parametrize("size, expected", [
    # Images of more than 64 px: the weights' own transform (timm a1: bicubic, crop 0.95)
    # at the run's size, floor(96 / 0.95...) as timm scales it.
    (96, dict(resize=100, crop=96, interpolation="bicubic")),
    # Small images keep the cifar preset: a centre crop of 32 px would lose their border.
    (32, dict(resize=None, crop=32, interpolation="bilinear")),
])
def test_validation_uses_the_weights_transform_at_the_run_size(size, expected):
    from resnet_tf.data import DataFacts
    from resnet_tf.training import TrainConfig, resolve_config

    resolved = resolve_config(TrainConfig(weights="timm:resnet18.a1_in1k", image_size=size),
                              DataFacts(["a", "b"], size))
    assert {k: resolved.eval_transform[k] for k in expected} == expected


def test_a_published_file_fine_tunes_and_its_run_keeps_the_transform(target, tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision (the test extra) is not installed")
    from resnet_tf.models.transform import transform_of

    # The name torchvision publishes it under: the entry's transform (resize 256 for 224).
    path = save_torchvision_resnet18(tmp_path / "resnet18-f37072fd.pth")
    out = tmp_path / "run"
    result = train_in_process("--data-dir", target, "--weights", path, "--image-size", "72",
                              "--epochs", "1", *FAST, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = dict(mode="torch", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                    resize=82, crop=72, interpolation="bilinear")  # floor(72 * 256 / 224)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["depth"] == 18 and config["weights"] == str(path)
    assert config["eval_transform"] == expected
    model = keras.saving.load_model(out / "best.keras")
    assert model.output_shape == (None, 2)
    assert transform_of(model).get_config() == expected
