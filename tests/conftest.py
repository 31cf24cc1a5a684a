"""Fixtures every test folder shares: generated image folders (with bad files on request)
and tiny models with non-trivial BatchNorm statistics."""

import os

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


def write_class_images(root, classes=("cat", "dog", "fish"), per_class=8, size=12, *,
                       suffix=".png", bad=0, seed=0):
    """One sub-folder per class of noisy images dominated by the class's colour channel.

    Learnable in a few steps. `bad` adds that many undecodable `.jpg` files to the first
    class. Returns `root` as a str.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3))
            pixels[..., c % 3] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, name, f"{i:03d}{suffix}"))
    for i in range(bad):
        with open(os.path.join(root, classes[0], f"broken{i}.jpg"), "wb") as f:
            f.write(b"\xff\xd8 not a jpeg")
    return str(root)


def randomise_batchnorm(model, seed=0):
    """Gives every BatchNorm random gamma, beta and running statistics, so tests of
    folding, conversion and export compare more than identities."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
    return model


@pytest.fixture(scope="session")
def image_folder_factory(tmp_path_factory):
    """`make(classes=..., per_class=..., size=..., bad=...)` -> path of a new image folder."""
    def make(**kwargs):
        return write_class_images(tmp_path_factory.mktemp("images"), **kwargs)
    return make


@pytest.fixture(scope="session")
def tiny_resnet():
    """`make(classes=3, size=16, **build_resnet kwargs)`: a ResNet-20 with random BN stats."""
    def make(classes=3, size=16, seed=0, **kwargs):
        import keras

        from resnet_tf import build_resnet

        keras.utils.set_random_seed(seed)
        model = build_resnet(20, input_shape=(size, size, 3), classes=classes, **kwargs)
        return randomise_batchnorm(model, seed)
    return make


TRAIN = os.path.join(REPO_ROOT, "train.py")


def train_env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.pop("RESNET_TF_KILL_AT", None)
    for name, value in extra.items():  # None removes a variable
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_train(*args, timeout=300, **env):
    """`python train.py ARGS` in a fresh process; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, TRAIN, *map(str, args)], env=train_env(**env),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def train_in_process(*args):
    """`train.py ARGS` as `resnet_tf.cli.train.main(argv)` in this process, for commands that
    stop at an error before training: what a subprocess adds is only TensorFlow's start-up.
    With `--cpu-config tf-defaults`, so the command never restarts itself (`os.execv`).
    Returns a CompletedProcess with the exit status and what it printed."""
    import contextlib
    import io
    import subprocess
    import sys
    from unittest import mock

    import keras

    from resnet_tf.cli import train as train_cli

    argv = [*map(str, args), "--cpu-config", "tf-defaults"]
    policy = keras.mixed_precision.global_policy()  # a run sets its precision process-wide
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            mock.patch.object(sys, "argv", [TRAIN, *argv]):  # the name messages give
        try:
            status = train_cli.main(argv)
        except SystemExit as exit_:  # argparse's errors
            status = exit_.code
        finally:
            keras.mixed_precision.set_global_policy(policy)
    return subprocess.CompletedProcess(["train.py", *argv], status, stdout.getvalue(),
                                       stderr.getvalue())


def error_line(result, prog="train.py"):
    """The one `<prog>: error: ...` line of a failed command (TF's start-up lines aside)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]
