"""The checks every network needs, run for every network in NETWORKS.

A new depth or variant gets them by adding one line to NETWORKS: output shape, a
`.keras` round trip with identical outputs, float32 outputs under mixed precision, and
the same numbers on Keras' PyTorch backend (and JAX's, when installed) from the same
weights file.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from resnet_tf import SPECS, build_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CIFAR = {20, 32, 44, 56, 110, 164, 1001}
# (depth, build_resnet kwargs). Deep ones are slow to build: marked, out of the default run.
NETWORKS = [(depth, {}) for depth in SPECS] + [
    (50, {"variant": "v1"}),
    (50, {"variant": "v2"}),
    (50, {"variant": "d"}),
    (50, {"groups": 32, "width_per_group": 4}),
    (50, {"width_multiplier": 2}),
    (50, {"se_ratio": 0.25}),
    (18, {"stem": "cifar"}),
    (20, {"variant": "v2"}),
    (20, {"stochastic_depth_rate": 0.1}),
]
_SLOW = {152, 200, 1001, 164, 110, 101}
# Also slow: the costliest of the rest, whose blocks the default run builds at other depths
# (and whose numbers test_torch_weights checks against torchvision and timm).
_SLOW_IDS = {"32", "34", "50-variant=v2", "50-variant=d", "50-groups=32-width_per_group=4",
             "50-width_multiplier=2"}


def _id(network):
    depth, kwargs = network
    return f"{depth}" + "".join(f"-{k}={v}" for k, v in kwargs.items())


def _params(networks):
    return [pytest.param(n, id=_id(n), marks=[pytest.mark.slow]
                         if n[0] in _SLOW or _id(n) in _SLOW_IDS else [])
            for n in networks]


def _size(depth):
    return 16 if depth in _CIFAR else 32


def _build(depth, kwargs, classes=5):
    keras.utils.set_random_seed(0)
    size = _size(depth)
    return build_resnet(depth, input_shape=(size, size, 3), classes=classes, **kwargs)


def _images(depth, n=2):
    return np.random.default_rng(0).normal(size=(n, _size(depth), _size(depth), 3)).astype("float32")


@pytest.mark.parametrize("network", _params(NETWORKS))
def test_shape_and_keras_round_trip(network, tmp_path):
    depth, kwargs = network
    model = _build(depth, kwargs)
    x = _images(depth)
    out = model(x, training=False)
    assert tuple(out.shape) == (2, 5)
    np.testing.assert_allclose(np.sum(out, axis=1), 1, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x, training=False), out)


@pytest.mark.parametrize("network", _params(NETWORKS[:6] + NETWORKS[-6:]))
def test_mixed_precision_gives_float32_probabilities(network):
    depth, kwargs = network
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _build(depth, kwargs)
        out = model(_images(depth), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == "float32"
    assert np.all(np.isfinite(out))


_BACKEND_SCRIPT = """
import json, sys
import keras, numpy as np
import resnet_tf
assert keras.backend.backend() == sys.argv[2], keras.backend.backend()
cases = json.load(open(sys.argv[1]))
result = {}
for case in cases:
    keras.utils.set_random_seed(0)
    model = resnet_tf.build_resnet(case["depth"], input_shape=tuple(case["shape"]), classes=5,
                                   **case["kwargs"])
    model.load_weights(case["weights"])
    x = np.load(case["images"])
    out = keras.ops.convert_to_numpy(model(x, training=False))
    result[case["id"]] = float(np.max(np.abs(out - np.load(case["expected"]))))
print(json.dumps(result))
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends_give_the_same_outputs(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"Keras' {backend} backend needs the {backend} package")
    cases = []
    # One network of each kind keeps the other-backend subprocess short: the CIFAR stem and
    # basic blocks, the ImageNet stem and pre-activation bottlenecks, the deep stem and
    # average-pool shortcuts, squeeze-and-excitation.
    for depth, kwargs in [(20, {}), (50, {"variant": "v2"}), (50, {"variant": "d"}),
                          (50, {"se_ratio": 0.25})]:
        name = _id((depth, kwargs))
        model = _build(depth, kwargs)
        x = _images(depth)
        model.save_weights(tmp_path / f"{name}.weights.h5")
        np.save(tmp_path / f"{name}.x.npy", x)
        np.save(tmp_path / f"{name}.y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
        cases.append(dict(id=name, depth=depth, kwargs=kwargs, shape=[_size(depth)] * 2 + [3],
                          weights=str(tmp_path / f"{name}.weights.h5"),
                          images=str(tmp_path / f"{name}.x.npy"),
                          expected=str(tmp_path / f"{name}.y.npy")))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _BACKEND_SCRIPT, str(tmp_path / "cases.json"),
                             backend], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(diffs) == {c["id"] for c in cases}
    worst = {k: v for k, v in diffs.items() if v > 1e-4}
    assert not worst, f"{backend} outputs differ from TensorFlow's: {worst}"
