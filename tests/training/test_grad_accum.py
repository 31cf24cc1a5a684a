"""Gradient accumulation: N micro-batches of B make the update one batch of N x B makes."""

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet, freeze_batchnorm
from resnet_tf.training.optimizers import build_optimizer


@pytest.fixture(autouse=True)
def float32():
    # Another test in this process may have left a mixed-precision policy behind (the
    # trainer sets it): bfloat16 rounding would swamp the comparison.
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy(policy)


def _model():
    keras.utils.set_random_seed(0)
    model = build_resnet(20, input_shape=(8, 8, 3), classes=3)
    # BatchNorm in inference mode: with batch statistics, a micro-batch of B normalises by
    # other numbers than the batch of N x B, and no accumulation can give the same update.
    freeze_batchnorm(model)
    return model


# Measured: within 1e-6 with SGD (Nesterov momentum, decoupled decay). Adam's first step
# moves each weight by about lr times the sign of its gradient, so a weight whose gradient
# is ~0 moves by +-lr on float32 rounding alone (7.6e-5 differences between two runs of the
# same AdamW comparison): no tolerance tests the accumulation there.
@pytest.mark.parametrize("name, tolerance", [("sgd", 1e-6)])
def test_four_micro_batches_give_the_update_of_one_batch_four_times_larger(name, tolerance):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    before = [w.copy() for w in _model().get_weights()]
    trained = []
    for batch, accum in ((16, 1), (4, 4)):
        model = _model()
        optimizer = build_optimizer(name, 0.1, 1e-3, model, grad_accum=accum)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy")
        model.fit(images, labels, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    moved = max(np.abs(a - b).max() for a, b in zip(trained[0], before))
    assert moved > 1e-3  # the update is not nothing
    for big, accumulated in zip(*trained):
        np.testing.assert_allclose(accumulated, big, atol=tolerance)
