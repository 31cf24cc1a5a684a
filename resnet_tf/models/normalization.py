"""The input scale of every model, and the layer that carries pretrained weights' own.

Every resnet_tf model takes RGB images normalised as `(pixel / 255 - MEAN) / STD`
(`resnet_tf.data.preprocessing.normalize`): the trainer, evaluation, the SavedModel and
TFLite all feed that. Weights trained on another input scale (keras.applications'
"caffe" BGR mean subtraction, or other mean/std) get a `WeightsNormalization` layer right
after the input that converts the standard scale into theirs. The preprocessing thus
travels inside the model and its `.keras` file, and every path that feeds the standard
scale computes what the weights expect.
"""

import keras
from keras import ops

# ImageNet statistics on [0, 1] RGB: the standard input scale of resnet_tf models.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# keras.applications' "caffe" mode: BGR, 0..255, these means subtracted, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="resnet_tf")
class WeightsNormalization(keras.layers.Layer):
    """Converts the standard input scale into the one pretrained weights were trained on.

    Args:
        mode: str. "caffe" (BGR, 0..255, `CAFFE_MEAN_BGR` subtracted) or "torch"
            (RGB, `(x / 255 - mean) / std` with the given `mean` and `std`).
        mean: 3 floats on the [0, 1] scale, for "torch".
        std: 3 floats on the [0, 1] scale, for "torch".
    """

    def __init__(self, mode="caffe", mean=None, std=None, **kwargs):
        # Caffe-scale values reach +-150: float32 even under mixed precision.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch"):
            raise ValueError(f"Unknown mode. Received: mode={mode!r}; expected 'caffe' or 'torch'.")
        if mode == "torch" and (mean is None or std is None or len(mean) != 3 or len(std) != 3):
            raise ValueError("mode='torch' needs 3 means and 3 standard deviations. Received: "
                             f"mean={mean!r}, std={std!r}; expected e.g. mean=(0.5, 0.5, 0.5).")
        self.mode = mode
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def call(self, x):
        x = ops.cast(x, "float32")
        pixels01 = x * ops.array(STD, "float32") + ops.array(MEAN, "float32")
        if self.mode == "caffe":
            return ops.flip(pixels01, axis=-1) * 255.0 - ops.array(CAFFE_MEAN_BGR, "float32")
        return (pixels01 - ops.array(self.mean, "float32")) / ops.array(self.std, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "mean": self.mean, "std": self.std}


def preprocessing_layer(preprocessing):
    """The `WeightsNormalization` for a preprocessing description, or None for the standard.

    `preprocessing`: None or "imagenet" (the standard scale), "caffe", or a dict / object
    with `mode` ("torch" or "caffe"), `mean` and `std` (a registry `Preprocessing`).
    """
    if preprocessing is None or preprocessing == "imagenet":
        return None
    if preprocessing == "caffe":
        return WeightsNormalization("caffe", name="weights_normalization")
    get = preprocessing.get if isinstance(preprocessing, dict) else (
        lambda key, default=None: getattr(preprocessing, key, default))
    mode = get("mode", "torch")
    if mode == "caffe":
        return WeightsNormalization("caffe", name="weights_normalization")
    mean, std = tuple(get("mean")), tuple(get("std"))
    if _close(mean, MEAN) and _close(std, STD):
        return None
    return WeightsNormalization("torch", mean, std, name="weights_normalization")


def _close(a, b):
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b))
