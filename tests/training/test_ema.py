"""The weight EMA averages every weight, BatchNorm statistics included, with the
warmed-up decay it documents, and swaps in and out without losing the training weights."""

import keras
import numpy as np
import pytest

from resnet_tf.errors import ConfigError
from resnet_tf.training.callbacks import ModelEMA


class _Recorder(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = [[w.copy() for w in self.model.get_weights()]]

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([w.copy() for w in self.model.get_weights()])


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(keras.optimizers.SGD(0.5), keras.losses.MeanSquaredError())
    return model


def test_average_follows_every_weight_with_warmed_up_decay(tmp_path):
    model = _model()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 6, 6, 3)), rng.normal(size=(12, 2))
    recorder, ema = _Recorder(), ModelEMA(0.8, str(tmp_path))
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[recorder, ema])

    expected = recorder.seen[0]
    for t, weights in enumerate(recorder.seen[1:]):
        d = min(0.8, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    names = [w.path for w in model.weights]
    moving = names.index(next(n for n in names if "moving_mean" in n))
    assert not np.allclose(expected[moving], model.get_weights()[moving])  # BN stats averaged
    for name, want, got in zip(names, expected, ema._average):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
    # One state file per epoch end, named by optimizer step; the older ones pruned past two.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema-3.npz", "ema-6.npz"]

    training = model.get_weights()
    with ema.swapped():
        for got, want in zip(model.get_weights(), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.get_weights(), training):
        np.testing.assert_array_equal(got, want)
    ema.apply()
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resume_without_the_average_of_the_backup_is_refused(tmp_path):
    model = _model()
    x, y = np.zeros((4, 6, 6, 3)), np.zeros((4, 2))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # optimizer at step 1, no EMA file
    with pytest.raises(ConfigError, match="The run's EMA weights are missing. Received: a "
                       "backup at optimizer step 1"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                  callbacks=[ModelEMA(0.9, str(tmp_path))])
