"""Backbones for dense prediction: `feature_extractor(model, out_indices, output_stride)`.

A dilated network (output stride 16 or 8) must hold the same weights as the network it
comes from and compute what torchvision's `replace_stride_with_dilation` and timm's
`output_stride` compute with those weights. The references run in a separate process:
importing torchvision or timm after TensorFlow crashes the process (see
test_torch_weights.py).
"""

import importlib.util
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from torch_reference import reference_env

from resnet_tf import build_resnet, feature_extractor
from resnet_tf.models.blocks import bottleneck_block, residual_block

HEIGHT, WIDTH = 48, 40  # odd sizes on the way down check the padding of every stride
TOLERANCE = 1e-4  # relative to the largest |value|

# Builds each reference with random weights and BatchNorm statistics, saves its state
# dict and the outputs of layer1..layer4 (NHWC) on the given images.
_REFERENCE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import timm, torch, torchvision
    from torch_reference import randomise_batchnorm

    torch.set_num_threads(1)
    jobs = json.loads(sys.argv[1])
    x = torch.from_numpy(np.load(jobs["images"]))
    for job in jobs["jobs"]:
        torch.manual_seed(0)
        if job["library"] == "torchvision":
            net = getattr(torchvision.models, job["architecture"])(
                replace_stride_with_dilation=job["dilate"])
        else:
            net = timm.create_model(job["architecture"], pretrained=False,
                                    output_stride=job["output_stride"])
        randomise_batchnorm(net, 0)
        net.eval()
        torch.save(net.state_dict(), job["path"])
        outputs = {}
        for i in range(1, 5):
            getattr(net, f"layer{i}").register_forward_hook(
                lambda module, args, out, key=f"C{i + 1}":
                outputs.__setitem__(key, out.permute(0, 2, 3, 1).numpy()))
        with torch.no_grad():
            net(x)
        np.savez(job["outputs"], **outputs)
    """
)

REFERENCES = {
    # name: (library, architecture, torchvision's dilate or timm's output_stride,
    #        build_resnet arguments, our output_stride)
    "torchvision_resnet50_os8": ("torchvision", "resnet50", [False, True, True],
                                 dict(depth=50), 8),
    "timm_resnet18_os8": ("timm", "resnet18", 8, dict(depth=18), 8),
    "timm_resnet50d_os16": ("timm", "resnet50d", 16, dict(depth=50, variant="d"), 16),
}


def images(batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, HEIGHT, WIDTH, 3)).astype("float32")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """{name: (checkpoint path, {"C2".."C5": NHWC array})}, made in one torch process."""
    # find_spec, not importorskip: importing torchvision here would crash (see above).
    if any(importlib.util.find_spec(name) is None for name in ("torch", "torchvision", "timm")):
        pytest.skip("torch, torchvision and timm make the references")
    folder = tmp_path_factory.mktemp("dilated_reference")
    np.save(folder / "images.npy", images().transpose(0, 3, 1, 2))
    jobs = []
    for name, (library, architecture, dilation, _, _) in REFERENCES.items():
        job = dict(library=library, architecture=architecture, path=str(folder / f"{name}.pth"),
                   outputs=str(folder / f"{name}.npz"))
        job["dilate" if library == "torchvision" else "output_stride"] = dilation
        jobs.append(job)
    result = subprocess.run(
        [sys.executable, "-c", _REFERENCE,
         json.dumps({"images": str(folder / "images.npy"), "jobs": jobs})],
        capture_output=True, text=True, env=reference_env(),
    )
    if result.returncode != 0:
        pytest.fail(f"the torch reference process failed: {result.stderr[-3000:]}")
    return {name: (job["path"], dict(np.load(job["outputs"])))
            for name, job in zip(REFERENCES, jobs)}


def numpy_dict(outputs):
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert error < TOLERANCE, f"max |difference| is {error:.2e} of the largest |value|"


@pytest.fixture(scope="module")
def resnet50():
    return build_resnet(50, include_top=False, input_shape=(None, None, 3))


@pytest.mark.parametrize("name", list(REFERENCES))
def test_dilated_features_equal_torchvision_and_timm(references, name):
    path, theirs = references[name]
    _, _, _, kwargs, output_stride = REFERENCES[name]
    kwargs = dict(kwargs)
    model = build_resnet(kwargs.pop("depth"), include_top=False, input_shape=(None, None, 3),
                         weights=path, **kwargs)
    ours = numpy_dict(feature_extractor(model, output_stride=output_stride)(images()))
    assert sorted(ours) == ["C2", "C3", "C4", "C5"]
    for key in ours:
        assert_close(ours[key], theirs[key])


@pytest.mark.parametrize("output_stride, strides", [(32, (4, 8, 16, 32)), (16, (4, 8, 16, 16)),
                                                    (8, (4, 8, 8, 8))])
def test_output_stride_sets_the_size_of_every_map(resnet50, output_stride, strides):
    features = feature_extractor(resnet50, output_stride=output_stride)
    outputs = features(np.zeros((1, 64, 96, 3), "float32"))
    assert [info["stride"] for info in features.feature_info] == list(strides)
    for info, stride in zip(features.feature_info, strides):
        assert tuple(outputs[info["name"]].shape) == (1, 64 // stride, 96 // stride,
                                                      info["channels"])
    assert [info["channels"] for info in features.feature_info] == [256, 512, 1024, 2048]


def test_dilated_network_holds_copies_of_the_same_weights(resnet50):
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    plain = feature_extractor(resnet50)
    dilated = feature_extractor(resnet50, output_stride=8)
    ours = {layer.name: layer for layer in resnet50.layers}
    copied = [layer for layer in dilated.layers if layer.weights]
    assert len(copied) == len([layer for layer in resnet50.layers if layer.weights])
    for layer in copied:
        for a, b in zip(layer.weights, ours[layer.name].weights):
            assert a is not b  # copies: training the dilated network leaves the model
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    a, b = numpy_dict(plain(x)), numpy_dict(dilated(x))
    np.testing.assert_allclose(b["C2"], a["C2"], rtol=1e-6, atol=1e-6)  # before any dilation
    np.testing.assert_allclose(b["C3"], a["C3"], rtol=1e-6, atol=1e-6)
    assert b["C5"].shape == (1, 8, 8, 2048) and a["C5"].shape == (1, 2, 2, 2048)


def test_the_default_call_is_unchanged_and_shares_weights(resnet50):
    features = feature_extractor(resnet50)
    assert sorted(features.output) == ["C2", "C3", "C4", "C5"]
    assert {id(w) for w in features.weights} == {id(w) for w in resnet50.weights}


def test_out_indices_pick_maps_in_order_with_the_stem_as_zero(resnet50):
    features = feature_extractor(resnet50, out_indices=(0, 2, 4))
    assert [info["name"] for info in features.feature_info] == ["C1", "C3", "C5"]
    assert [info["stride"] for info in features.feature_info] == [2, 8, 32]
    assert [info["layer"] for info in features.feature_info] == [
        "conv1_relu", "conv3_block4_out", "conv5_block3_out"]
    outputs = features(np.zeros((1, 64, 64, 3), "float32"))
    assert tuple(outputs["C1"].shape) == (1, 32, 32, 64)


def test_cifar_network_dilates_its_last_stages():
    model = build_resnet(20, include_top=False, input_shape=(32, 32, 3))
    features = feature_extractor(model, output_stride=1)
    assert [info["stride"] for info in features.feature_info] == [1, 1, 1]
    outputs = features(np.zeros((1, 32, 32, 3), "float32"))
    assert tuple(outputs["C4"].shape) == (1, 32, 32, 64)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_dilation_keeps_every_variant_buildable(variant):
    model = build_resnet(50, variant=variant, include_top=False, input_shape=(64, 64, 3))
    outputs = feature_extractor(model, output_stride=16)(np.zeros((1, 64, 64, 3), "float32"))
    assert tuple(outputs["C5"].shape) == (1, 4, 4, 2048)


@pytest.mark.parametrize("kwargs, message", [
    (dict(out_indices=(1, 5)), "out_indices must be distinct stage indices of 'resnet50', "
                               "0 (stem) to 4. Received: out_indices=(1, 5)"),
    (dict(out_indices=()), "Received: out_indices=()"),
    (dict(out_indices=(-1,)), "Received: out_indices=(-1,)"),
    (dict(out_indices=(2, 2)), "Received: out_indices=(2, 2)"),
    (dict(output_stride=4), "'resnet50' cannot reach output_stride=4: its own stride is 32 "
                            "and only its last two stages can be dilated. Received: "
                            "output_stride=4; expected one of (32, 16, 8)."),
    (dict(output_stride=64), "Received: output_stride=64"),
])
def test_bad_arguments_are_one_clear_line(resnet50, kwargs, message):
    with pytest.raises(ValueError) as error:
        feature_extractor(resnet50, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_cifar_network_cannot_reach_stride_8():
    model = build_resnet(20, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"its own stride is 4 .* expected one of \(4, 2, 1\)"):
        feature_extractor(model, output_stride=8)


def test_dilation_needs_a_spec():
    model = build_resnet(18, include_top=False, input_shape=(64, 64, 3))
    plain = keras.Model(model.inputs, model.outputs, name="no_spec")  # no ResNetSpec
    assert len(feature_extractor(plain).feature_info) == 4
    with pytest.raises(ValueError, match="rebuilt from the model's ResNetSpec and 'no_spec' "
                                         "has none"):
        feature_extractor(plain, output_stride=16)


@pytest.mark.parametrize("block", [residual_block, bottleneck_block])
def test_blocks_refuse_stride_and_dilation_together(block):
    with pytest.raises(ValueError, match="stride must be 1 when dilation > 1"):
        block(keras.Input((8, 8, 16)), 16, 2, dilation=2, name="b")


def test_dilated_feature_model_survives_a_keras_file(tmp_path):
    model = build_resnet(18, variant="d", include_top=False, input_shape=(None, None, 3))
    features = feature_extractor(model, output_stride=8)
    features.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras")
    x = images(batch=1)
    ours, theirs = numpy_dict(loaded(x)), numpy_dict(features(x))
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert ours["C5"].shape[1:3] == (HEIGHT // 8, WIDTH // 8)
