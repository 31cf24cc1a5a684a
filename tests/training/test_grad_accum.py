"""Gradient accumulation: N micro-batches of B make the update one batch of N x B makes."""

import keras
import numpy as np
import pytest

from resnet_tf import build_resnet, freeze_batchnorm
from resnet_tf.training.optimizers import build_optimizer


def _model():
    keras.utils.set_random_seed(0)
    model = build_resnet(20, input_shape=(8, 8, 3), classes=3)
    # BatchNorm in inference mode: with batch statistics, a micro-batch of B normalises by
    # other numbers than the batch of N x B, and no accumulation can give the same update.
    freeze_batchnorm(model)
    return model


# Measured: SGD agrees within 1e-6; AdamW within 4e-6, as its first step moves each weight by
# about lr (0.1) whatever the gradient's size, which magnifies the float32 rounding of sums
# taken in another order.
@pytest.mark.parametrize("name, tolerance", [("sgd", 1e-6), ("adamw", 1e-5)])
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
