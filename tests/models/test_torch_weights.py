"""torchvision and timm checkpoints: equal logits for every architecture, or one refusal.

Each reference network gets random weights and random BatchNorm statistics, is saved
the way its library publishes it (torch.save of the state dict; safetensors for timm),
and the model `build_resnet` makes for it must give its eval-mode logits once the file
is loaded (through `build_resnet(..., weights=path)` or `load_weights`, one dispatch).

The references run in a separate process: importing torchvision or timm after
TensorFlow crashes the process (triton's LLVM, which torch._dynamo loads, clashes with
TensorFlow's). Reading a checkpoint needs only torch itself, which is safe here.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
if importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("timm") is None:
    pytest.skip("torchvision and timm (the test extra) are not installed",
                allow_module_level=True)

from torch_reference import reference_env  # noqa: E402

from resnet_tf import build_resnet  # noqa: E402
from resnet_tf.models import torch_weights  # noqa: E402
from resnet_tf.models.layers import PaddedMaxPooling2D  # noqa: E402
from resnet_tf.models.weights import load_weights  # noqa: E402

# Odd sizes on the way down (48 -> 24 -> 12 -> 6 -> 3 -> 2, 40 -> ... -> 5 -> 3 -> 2)
# check the padding of every stride; height != width catches transposed kernels.
HEIGHT, WIDTH = 48, 40
TOLERANCE = 1e-4  # relative to the largest |value|

# (library, architecture, build_resnet arguments); the same arguments side by side, so
# consecutive cases share one Keras model.
ARCHITECTURES = [
    ("torchvision", "resnet18", dict(depth=18)),
    ("timm", "resnet18", dict(depth=18)),
    ("torchvision", "resnet34", dict(depth=34)),
    ("timm", "resnet34", dict(depth=34)),
    ("torchvision", "resnet50", dict(depth=50)),
    ("timm", "resnet50", dict(depth=50)),
    ("torchvision", "resnet101", dict(depth=101)),
    ("timm", "resnet101", dict(depth=101)),
    ("torchvision", "resnet152", dict(depth=152)),
    ("timm", "resnet152", dict(depth=152)),
    ("torchvision", "resnext50_32x4d", dict(depth=50, groups=32, width_per_group=4)),
    ("timm", "resnext50_32x4d", dict(depth=50, groups=32, width_per_group=4)),
    ("torchvision", "resnext101_32x8d", dict(depth=101, groups=32, width_per_group=8)),
    ("torchvision", "resnext101_64x4d", dict(depth=101, groups=64, width_per_group=4)),
    ("torchvision", "wide_resnet50_2", dict(depth=50, width_multiplier=2)),
    ("torchvision", "wide_resnet101_2", dict(depth=101, width_multiplier=2)),
    ("timm", "resnet50d", dict(depth=50, variant="d")),
    ("timm", "resnet101d", dict(depth=101, variant="d")),
    ("timm", "seresnet50", dict(depth=50, se_ratio=1 / 16)),
    ("timm", "resnetv2_50", dict(depth=50, variant="v2")),
    ("timm", "resnetv2_101", dict(depth=101, variant="v2")),
]

# Reads one JSON job a line: builds the network with random weights and BatchNorm
# statistics, saves its state dict, and saves its outputs on the job's images.
_REFERENCE_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import timm, torch, torchvision
    from torch_reference import randomise_batchnorm
    from safetensors.torch import save_file

    torch.set_num_threads(2)
    for line in sys.stdin:
        job = json.loads(line)
        torch.manual_seed(job["seed"])
        if job["library"] == "torchvision":
            net = getattr(torchvision.models, job["architecture"])()
        else:
            net = timm.create_model(job["architecture"], pretrained=False)
        if job["classes"] != 1000:  # a fine-tuned network
            net.fc = torch.nn.Linear(net.fc.in_features, job["classes"])
        randomise_batchnorm(net, job["seed"])
        net.eval()
        state = net.state_dict()
        if job["path"].endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in state.items()}, job["path"])
        else:
            torch.save(state, job["path"])
        x = torch.from_numpy(np.load(job["images"]))
        with torch.no_grad():
            if job["library"] == "torchvision":
                features = torch.nn.Sequential(*list(net.children())[:-2])(x)
            else:
                features = net.forward_features(x)
            outputs = {
                "logits": net(x).numpy(),
                "features": features.permute(0, 2, 3, 1).numpy(),  # NHWC, before pooling
            }
        shapes = {key: list(value.shape) for key, value in state.items()}
        np.savez(job["outputs"], shapes=json.dumps(shapes), **outputs)
        print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    """`make(library, architecture, path)`: writes the checkpoint, returns its outputs."""
    folder = tmp_path_factory.mktemp("torch_reference")
    log = open(folder / "worker.log", "w+")
    worker = subprocess.Popen(
        [sys.executable, "-c", _REFERENCE_WORKER], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=log, text=True,
        env=reference_env(),
    )

    def make(library, architecture, path, *, seed=0, classes=1000):
        x = images(seed=seed)
        np.save(folder / "images.npy", x.transpose(0, 3, 1, 2))
        job = dict(library=library, architecture=architecture, path=str(path), seed=seed,
                   classes=classes, images=str(folder / "images.npy"),
                   outputs=str(folder / "outputs.npz"))
        worker.stdin.write(json.dumps(job) + "\n")
        worker.stdin.flush()
        if worker.stdout.readline().strip() != "done":
            log.seek(0)
            pytest.fail(f"the torch reference process failed: {log.read()[-3000:]}")
        outputs = dict(np.load(folder / "outputs.npz"))
        outputs["shapes"] = {k: SimpleNamespace(shape=tuple(v))
                             for k, v in json.loads(str(outputs["shapes"])).items()}
        return x, outputs

    yield make
    worker.stdin.close()
    worker.wait(timeout=60)
    log.close()


def images(batch=2, seed=0):
    """NHWC float32 images."""
    return np.random.default_rng(seed).normal(size=(batch, HEIGHT, WIDTH, 3)).astype("float32")


def run_keras(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert error < TOLERANCE, f"max |difference| is {error:.2e} of the largest |value|"


def build(kwargs, **extra):
    kwargs = dict(kwargs)
    depth = kwargs.pop("depth")
    return build_resnet(depth, input_shape=(None, None, 3), **kwargs, **extra)


@pytest.fixture(scope="module")
def resnet18_file(torch_reference, tmp_path_factory):
    """(outputs, path) of a torchvision ResNet-18 .pth file."""
    path = tmp_path_factory.mktemp("resnet18") / "resnet18.pth"
    x, outputs = torch_reference("torchvision", "resnet18", path)
    return dict(outputs, x=x), str(path)


@pytest.fixture(scope="module")
def shared_model():
    """`get(kwargs)`: the model for these build_resnet arguments, kept while they repeat."""
    last = {}

    def get(kwargs):
        if last.get("kwargs") != kwargs:
            last.clear()  # one model at a time: the largest hold 127M parameters
            last.update(kwargs=kwargs, model=build(kwargs, classifier_activation=None))
        return last["model"]

    return get


# The deepest and widest networks take most of the time; the default run keeps one of
# each layout (basic, bottleneck, ResNeXt, D, SE, v2) and `-m slow` runs them all.
_DEFAULT_RUN = {("torchvision", "resnet18"), ("timm", "resnet34"), ("torchvision", "resnet50"),
                ("timm", "resnext50_32x4d"), ("timm", "resnet50d"), ("timm", "seresnet50"),
                ("timm", "resnetv2_50")}


@pytest.mark.parametrize(
    "library, architecture, kwargs",
    [pytest.param(*case, marks=[] if case[:2] in _DEFAULT_RUN else [pytest.mark.slow])
     for case in ARCHITECTURES],
    ids=[f"{library}-{architecture}" for library, architecture, _ in ARCHITECTURES],
)
def test_logits_equal_the_reference(torch_reference, shared_model, library, architecture,
                                    kwargs, tmp_path):
    path = tmp_path / (architecture + (".safetensors" if library == "timm" else ".pth"))
    x, reference = torch_reference(library, architecture, path)
    model = shared_model(kwargs)  # every weight is overwritten: a load is all or nothing
    load_weights(model, str(path), depth=kwargs["depth"], variant=kwargs.get("variant", "v1.5"))
    assert_close(run_keras(model, x), reference["logits"])
    # The tensor shapes alone say which build_resnet arguments the file needs.
    assert torch_weights.infer_architecture(reference["shapes"]) == kwargs
    os.remove(path)  # up to 500 MB each


def test_timm_pth_files_load_too(torch_reference, tmp_path):
    x, reference = torch_reference("timm", "resnet50d", tmp_path / "r50d.pth", seed=1)
    model = build(dict(depth=50, variant="d"), weights=str(tmp_path / "r50d.pth"),
                  classifier_activation=None)
    assert_close(run_keras(model, x), reference["logits"])


def test_include_top_false_gives_the_features_before_pooling(resnet18_file):
    reference, path = resnet18_file
    model = build(dict(depth=18), include_top=False, weights=path)
    assert_close(run_keras(model, reference["x"]), reference["features"])


def test_include_top_false_v2_features_include_the_final_norm(torch_reference, tmp_path):
    path = tmp_path / "resnetv2_50.safetensors"
    x, reference = torch_reference("timm", "resnetv2_50", path)
    model = build(dict(depth=50, variant="v2"), include_top=False, weights=str(path))
    assert_close(run_keras(model, x), reference["features"])
def test_other_classes_need_include_top_false(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError) as error:
        build(dict(depth=18), classes=10, weights=path)
    message = str(error.value)
    assert "has a 1000-class classifier but resnet18 (variant='v1.5') was built with " \
           "classes=10" in message
    assert message.endswith("expected classes=1000, or include_top=False to load only "
                            "the backbone.")
    assert f"Received: classes=10, weights='{path}'" in message


def test_fine_tuned_checkpoint_with_other_classes_loads(torch_reference, tmp_path):
    path = tmp_path / "ten.pth"
    x, reference = torch_reference("torchvision", "resnet18", path, classes=10)
    model = build(dict(depth=18), classes=10, classifier_activation=None, weights=str(path))
    assert_close(run_keras(model, x), reference["logits"])


def test_other_architecture_is_refused_before_any_weight_changes(torch_reference, tmp_path):
    path = tmp_path / "resnet34.pth"
    torch_reference("torchvision", "resnet34", path)
    model = build(dict(depth=18))
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError) as error:
        load_weights(model, path, depth=18, variant="v1.5")
    assert str(error.value) == (
        "weights file 'resnet34.pth' does not match resnet18 (variant='v1.5'): the file has "
        "80 tensor(s) that the model lacks, first 'layer1.2.conv1.weight'. "
        f"Received: weights='{path}'; expected a torchvision or timm checkpoint of the "
        "same architecture (this file fits build_resnet(34))."
    )
    after = [keras.ops.convert_to_numpy(w) for w in model.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_shape_mismatch_names_the_tensor_in_torch_layout(resnet18_file):
    _, path = resnet18_file
    model = build(dict(depth=18), stem="cifar")  # a 3x3 stem conv, not 7x7
    with pytest.raises(ValueError) as error:
        torch_weights.load_torch_weights(model, path)
    message = str(error.value)
    assert ": 'conv1.weight' has shape (64, 3, 7, 7) in the file where layer 'conv1_conv' " \
           "needs (64, 3, 3, 3)" in message
    assert "(this file fits build_resnet(18))" in message


def test_variant_mismatch_names_the_missing_tensor(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError) as error:
        build(dict(depth=18, variant="v2"), weights=path)
    assert "resnet18v2 (variant='v2'): the file has no 'stem.conv.weight' for layer " \
           "'conv1_conv'" in str(error.value)


def test_keras_applications_layout_is_refused(resnet18_file):
    _, path = resnet18_file
    with pytest.raises(ValueError) as error:
        torch_weights.load_torch_weights(build(dict(depth=50, variant="v1")), path)
    assert "Received: variant='v1'" in str(error.value)
    assert "expected variant 'v1.5' (torchvision, timm resnet)" in str(error.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_one_clear_error(torch_reference, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    torch_reference("torchvision", "resnet18", whole)
    path = tmp_path / f"truncated{suffix}"
    with open(whole, "rb") as f:
        path.write_bytes(f.read()[: 2_000_000])
    with pytest.raises(ValueError) as error:
        build(dict(depth=18), weights=str(path))
    message = str(error.value)
    kind = "a PyTorch checkpoint" if suffix == ".pth" else "a safetensors file"
    assert message.startswith(f"weights file '{path}' cannot be read as {kind} (")
    assert message.endswith(f"Received: weights='{path}'; expected a complete "
                            + ("torchvision or timm ResNet checkpoint (.pth, .pt or "
                               ".safetensors) holding a state dict." if suffix == ".pth"
                               else ".safetensors file."))
    assert "\n" not in message


def test_non_checkpoint_file_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not weights\n")
    with pytest.raises(ValueError) as error:
        torch_weights.load_torch_weights(build(dict(depth=18)), path)
    assert str(error.value) == (
        f"weights file '{path}' is neither a PyTorch checkpoint nor a safetensors file. "
        f"Received: weights='{path}'; expected a torchvision or timm ResNet checkpoint "
        "(.pth, .pt or .safetensors)."
    )
    with pytest.raises(ValueError) as error:  # through build_resnet: the general loader
        build(dict(depth=18), weights=str(path))
    assert "\n" not in str(error.value) and f"weights='{path}'" in str(error.value)


def test_pickled_model_is_refused_with_advice(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError) as error:
        torch_weights.read_state_dict(path)
    assert str(error.value).startswith(f"weights file '{path}' cannot be read as a PyTorch "
                                       "checkpoint (")


def test_training_checkpoints_and_ddp_prefixes_are_unwrapped(resnet18_file, tmp_path):
    _, path = resnet18_file
    state = {f"module.{k}": v for k, v in torch.load(path, weights_only=True).items()}
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    assert torch_weights.read_state_dict(wrapped).keys() == \
        torch_weights.read_state_dict(path).keys()


def test_legacy_torch_format_loads(resnet18_file, tmp_path):
    reference, path = resnet18_file
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert torch_weights.checkpoint_format(legacy) == "torch"
    model = build(dict(depth=18), weights=str(legacy), classifier_activation=None)
    assert_close(run_keras(model, reference["x"]), reference["logits"])


def test_keras_archive_is_not_taken_for_torch(tmp_path):
    path = tmp_path / "m.keras"
    build(dict(depth=18)).save(path)
    assert torch_weights.checkpoint_format(path) is None


def test_without_torch_pth_files_ask_for_it(resnet18_file, monkeypatch):
    _, path = resnet18_file
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError) as error:
        torch_weights.read_state_dict(path)
    assert str(error.value) == (
        f"Reading the PyTorch checkpoint '{path}' needs torch: pip install torch."
    )


def test_padded_max_pooling_pads_with_minus_infinity():
    x = -np.random.default_rng(0).uniform(1, 2, size=(2, 3, 7, 6)).astype("float32")
    theirs = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, stride=2, padding=1).numpy()
    layer = PaddedMaxPooling2D(3, strides=2, pad=1)
    ours = keras.ops.convert_to_numpy(layer(x.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(ours, theirs.transpose(0, 2, 3, 1))
    assert layer.compute_output_shape((2, 7, 6, 3)) == (2, 4, 3, 3)
    clone = PaddedMaxPooling2D.from_config(layer.get_config())
    assert (clone.pad, clone.pool_size, clone.strides) == (1, (3, 3), (2, 2))
