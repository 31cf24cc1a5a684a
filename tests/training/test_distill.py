"""`train.py --distill W` (issue 32 item 5's arm): the target is the labels mixed with the
EMA teacher's predictions on the batch and its mirror images."""

import keras
import numpy as np
import pytest
from conftest import error_line, train_in_process

from resnet_tf import build_resnet
from resnet_tf.training.distill import install_distillation


class _Average:
    """A `ModelEMA` stand-in whose average is a fixed copy of other weights."""

    def __init__(self, model, values):
        self.model = model
        self._values = [keras.Variable(v) for v in values]

    def averaged_weights(self):
        return self.model.weights

    def average_values(self):
        return self._values


def test_the_loss_learns_from_the_teachers_flip_averaged_predictions():
    keras.utils.set_random_seed(0)
    student = build_resnet(20, input_shape=(8, 8, 3), classes=3)
    teacher = build_resnet(20, input_shape=(8, 8, 3), classes=3)  # other random weights
    student.compile(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    y_pred = student(x, training=False)
    plain = float(student.compute_loss(x, y, y_pred, training=True))

    install_distillation(student, _Average(student, teacher.get_weights()), 0.25)
    distilled = float(student.compute_loss(x, y, y_pred, training=True))
    views = (teacher(x, training=False) + teacher(x[:, :, ::-1], training=False)) / 2
    target = 0.75 * y + 0.25 * keras.ops.convert_to_numpy(views)
    expected = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(target, y_pred))
    assert distilled == pytest.approx(expected, rel=1e-5) and distilled != pytest.approx(plain)
    # Evaluation (training=False) compares with the labels alone.
    assert float(student.compute_loss(x, y, y_pred, training=False)) == pytest.approx(plain)


@pytest.mark.parametrize("flags, message", [
    (["--distill", "0.5", "--ema", "0"], "--distill learns from the weight average (--ema)"),
    (["--distill", "0.5", "--loss", "bce"], "expected --loss ce"),
    (["--distill", "1.5"], "--distill"),
])
def test_distillation_without_its_teacher_is_refused(flags, message, tmp_path):
    result = train_in_process("--dataset", "synthetic", "--depth", "20", "--epochs", "1",
                              "--out", tmp_path / "r", *flags)
    assert result.returncode == 2 and message in error_line(result)
    assert not (tmp_path / "r").exists()
