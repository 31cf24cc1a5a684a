"""`resolve_weights`: one answer for every kind of weights argument, from files the test
makes itself (no network)."""

import importlib.util
import json
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from resnet_tf import build_resnet
from resnet_tf.models import registry, torch_weights
from resnet_tf.models.sources import WeightsSource, resolve_weights
from resnet_tf.models.spec import ResNetSpec

TINY = dict(input_shape=(16, 16, 3), classes=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run folder (config.json, best.keras) of a ResNet-20 with the caffe conversion, a
    `.weights.h5` of it, and the same network as main saved it (no spec) in a second run."""
    root = tmp_path_factory.mktemp("saved")
    model = build_resnet(20, stem="cifar", preprocessing="caffe", **TINY)
    (root / "run").mkdir()
    model.save(root / "run" / "best.keras")
    config = {"config": {"depth": 20, "variant": "v1.5", "stem": "cifar", "shortcut": "A",
                         "image_size": 16}}
    (root / "run" / "config.json").write_text(json.dumps(config))
    model.save_weights(root / "model.weights.h5")
    (root / "old_run").mkdir()
    keras.Model(model.inputs, model.outputs).save(root / "old_run" / "best.keras")
    (root / "old_run" / "config.json").write_text(json.dumps(config))
    return root


def test_none_is_nothing_to_load():
    assert resolve_weights(None, ResNetSpec(50)) is None


def test_imagenet_needs_no_download_to_be_known():
    source = resolve_weights("imagenet", ResNetSpec(101, variant="v1"), download=False)
    assert (source.kind, source.path, source.format, source.preprocessing) == (
        "imagenet", None, "legacy", "caffe")
    assert source.architecture == {"depth": 101, "variant": "v1"}
    assert source.entry.name == "keras:resnet101.imagenet"


def test_imagenet_for_another_variant_is_refused():
    with pytest.raises(ValueError, match="published for variant='v1' with depth 50, 101 or 152"):
        resolve_weights("imagenet", ResNetSpec(50), download=False)


def test_registered_name_picks_the_entry_of_the_spec():
    source = resolve_weights("torchvision:IMAGENET1K_V2", {"depth": 101}, download=False)
    assert source.entry is registry.WEIGHTS["torchvision:resnet101.IMAGENET1K_V2"]
    assert (source.kind, source.format, source.architecture, source.image_size) == (
        "registry", "torch", {"depth": 101}, 224)
    assert source.preprocessing.mode == "torch"


def test_registered_timm_names_have_the_format_of_their_file():
    # Pinned timm entries are timm's hash-named .pth release files; ResNetV2 stays on the Hub.
    source = resolve_weights("timm:resnet50d.a1_in1k", ResNetSpec(50, variant="d"),
                             download=False)
    assert source.format == "torch"
    assert source.architecture == {"depth": 50, "variant": "d"}
    hub = resolve_weights("timm:resnetv2_50.a1h_in1k", ResNetSpec(50, variant="v2"),
                          download=False)
    assert hub.format == "safetensors"


def test_registered_name_that_does_not_fit_the_spec():
    with pytest.raises(ValueError, match="The weights torchvision:resnet50.IMAGENET1K_V2 are "
                                         r"for build_resnet\(50\)"):
        resolve_weights("torchvision:resnet50.IMAGENET1K_V2", ResNetSpec(50, variant="d"),
                        download=False)


def test_run_folder_is_its_best_keras_with_its_spec(saved):
    source = resolve_weights(saved / "run")
    assert source.kind == "keras" and source.path == str(saved / "run" / "best.keras")
    assert source.architecture == ResNetSpec(20, classes=3).architecture()
    assert source.preprocessing == {"mode": "caffe", "mean": None, "std": None}
    assert source.image_size == 16


def test_old_keras_file_takes_the_architecture_from_its_run(saved):
    source = resolve_weights(saved / "old_run" / "best.keras")
    assert source.format == "keras"
    assert source.architecture == {"depth": 20, "variant": "v1.5", "stem": "cifar",
                                   "shortcut": "A"}


def test_keras_weights_file_tells_no_architecture(saved):
    source = resolve_weights(saved / "model.weights.h5")
    assert (source.kind, source.format, source.architecture, source.preprocessing) == (
        "file", "keras3", None, None)


def test_keras_applications_hdf5_file_is_caffe(tmp_path):
    path = tmp_path / "resnet50_weights.h5"
    with h5py.File(path, "w") as f:  # Keras 2's weights-only layout
        f.attrs["layer_names"] = np.array([b"conv1_conv"])
        f.create_group("conv1_conv").attrs["weight_names"] = np.array([], dtype="S1")
    source = resolve_weights(path)
    assert (source.format, source.preprocessing) == ("legacy", "caffe")


def _write_resnet18_safetensors(path):
    """A state dict with torchvision's resnet18 names and shapes, from our own model."""
    from safetensors.numpy import save_file

    model = build_resnet(18)
    state = {}
    for layer_name, module in torch_weights.torch_names(model).items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.BatchNormalization):
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"{module}.{name}"] = np.zeros(layer.gamma.shape, "float32")
        else:  # HWIO and (in, out) kernels are OIHW and (out, in) in torch
            shape = layer.kernel.shape
            shape = (shape[3], shape[2], *shape[:2]) if len(shape) == 4 else shape[::-1]
            state[f"{module}.weight"] = np.zeros(shape, "float32")
            if getattr(layer, "use_bias", False):
                state[f"{module}.bias"] = np.zeros(layer.bias.shape, "float32")
    save_file(state, str(path))


def test_safetensors_checkpoint_architecture_is_inferred(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "resnet18.safetensors"
    _write_resnet18_safetensors(path)
    source = resolve_weights(path)
    assert (source.kind, source.format, source.architecture) == (
        "file", "safetensors", {"depth": 18})


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision (the test extra) is not installed")
def test_torchvision_pth_architecture_is_inferred(tmp_path):
    path = tmp_path / "resnext.pth"
    # torchvision and TensorFlow in one process can crash: another process writes it.
    code = ("import torch, torchvision, sys; torch.manual_seed(0); torch.save("
            "torchvision.models.resnext50_32x4d(num_classes=10).state_dict(), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    source = resolve_weights(path)
    assert (source.format, source.preprocessing) == ("torch", None)
    assert source.architecture == {"depth": 50, "groups": 32, "width_per_group": 4,
                                   "classes": 10}


@pytest.mark.parametrize("weights, message", [
    ("/no/such/file.pth", "weights file not found. Received: weights='/no/such/file.pth'; "
                          "expected None, 'imagenet' or a path"),
    (3, "Unknown weights. Received: weights=3; expected None, 'imagenet' or a path"),
])
def test_arguments_that_name_nothing(weights, message):
    with pytest.raises(ValueError) as error:
        resolve_weights(weights)
    assert str(error.value).startswith(message)


def test_file_of_no_known_format(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not weights")
    with pytest.raises(ValueError, match="is neither a keras.applications HDF5 file nor"):
        resolve_weights(path)


def test_run_folder_without_best_keras(tmp_path):
    with pytest.raises(ValueError, match="The run folder has no best.keras"):
        resolve_weights(tmp_path)


def test_a_resolved_source_is_not_resolved_again(saved):
    source = resolve_weights(saved / "model.weights.h5")
    assert resolve_weights(source, ResNetSpec(50)) is source
    assert isinstance(source, WeightsSource)


def test_build_resnet_loads_a_run_folder_with_its_conversion(saved):
    model = build_resnet(20, weights=saved / "run", **TINY)
    source = keras.saving.load_model(saved / "run" / "best.keras")
    assert "weights_normalization" in {layer.name for layer in model.layers}
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(images, verbose=0),
                                  source.predict(images, verbose=0))
