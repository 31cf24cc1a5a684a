"""Export a trained classifier to TensorFlow Lite: float32, float16 or full-integer int8.

    export_tflite(model, "resnet20_int8.tflite", quantization="int8",
                  representative_images=train_images, class_names=names)

Every file holds the same network as the SavedModel (`export.inference_model`: float32,
BatchNorm folded into the convolutions) and takes one batch of images `[N, S, S, 3]`
(converted with `N = 1`; the batch dimension can be resized) already preprocessed like
evaluation (`data.preprocess_for_eval`: RGB, resized, `(pixel / 255 - mean) / std`). It
returns class probabilities `[N, classes]` (a softmax is added to a linear head).

- `float32`: float32 in and out; the SavedModel's numbers within float rounding.
- `float16`: weights stored as float16 (half the file), dequantized to float32 on load;
  float32 in and out.
- `int8`: full-integer. Weights are int8 (per output channel), activations int8, biases
  int32, and every op is a TFLITE_BUILTINS_INT8 kernel, so no float op is left and the file
  runs on integer-only accelerators. Input and output are int8 too: a client quantizes the
  normalized image with `q = clip(round(x / scale) + zero_point, -128, 127)` and reads
  probabilities as `(q - zero_point) * scale`. Activation ranges are calibrated on
  `representative_images`, which should be training images (never the ones accuracy is
  measured on) through the evaluation preprocessing; `calibration_images` draws them.

Beside each `name.tflite` a `name.json` records what a client needs to prepare inputs and
read outputs: class names, image size, preset, mean and std, and the input and output
tensors' names, shapes, dtypes and quantization parameters.
"""

import os
import time
import warnings

import numpy as np
import tensorflow as tf

from resnet_tf.data import MEAN, STD, load_data
from resnet_tf.data.preprocessing import eval_transform
from resnet_tf.errors import ExportError
from resnet_tf.export.inference import check_serving_args, has_linear_head, inference_model
from resnet_tf.files import write_bytes, write_json

QUANTIZATIONS = ("float32", "float16", "int8")
NUM_CALIBRATION = 200
_INPUT_NAME = "images"


def export_tflite(
    model,
    path,
    *,
    quantization="float32",
    representative_images=None,
    num_calibration=NUM_CALIBRATION,
    class_names=None,
    image_size=None,
    preset=None,
    transform=None,
    fold_batchnorm=True,
    overwrite=False,
):
    """Write `model` as a TFLite file and its `.json` sidecar; see the module docstring.

    Args:
        model: `keras.Model` mapping normalized float32 `[N, S, S, 3]` images to
            probabilities (a softmax head) or logits (a linear head).
        path: str. The `.tflite` file to write; the sidecar replaces the suffix with `.json`.
        quantization: str. One of "float32", "float16", "int8".
        representative_images: normalized float32 images for int8 calibration: an array
            `[N, S, S, 3]`, or a `tf.data.Dataset` of images or `(images, labels)`, batched
            or not. Required for "int8", ignored otherwise.
        num_calibration: int. At most this many representative images are used.
        class_names: list of str, one per output unit (default "class_0", "class_1", ...).
        image_size: int. Input height and width `S` (default: the model's input size).
        preset: str. "cifar" or "imagenet", the evaluation preprocessing (default:
            the transform the model carries, else `data.default_preset(image_size)`).
        transform: `EvalTransform` or None, instead of `image_size` and `preset`
            (`export.serving_transform` decides when None).
        fold_batchnorm: bool. Fold BatchNorm into the preceding convolutions.
        overwrite: bool. Replace existing files instead of refusing.

    Returns:
        str. `path`.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"quantization must be one of {', '.join(QUANTIZATIONS)}. "
            f"Received: quantization={quantization!r}")
    class_names, transform = check_serving_args(
        model, class_names=class_names, image_size=image_size, preset=preset,
        transform=transform)
    image_size = transform.crop
    path = os.fspath(path)
    sidecar = sidecar_path(path)
    if not overwrite:
        refuse_existing(path, sidecar, hint="pass overwrite=True to replace it")

    calibration = None
    if quantization == "int8":
        if representative_images is None:
            raise ExportError(
                "int8 quantization needs representative_images: training images through the "
                "evaluation preprocessing (see calibration_images).")
        calibration = _take_images(representative_images, num_calibration, image_size)

    content = _convert(inference_model(model, fold_batchnorm=fold_batchnorm), image_size,
                       quantization, calibration)
    interpreter = _interpreter(model_content=content)
    metadata = {
        "quantization": quantization,
        "class_names": class_names,
        "image_size": int(image_size),
        "preset": transform.preset,
        "transform": transform.get_config(),
        "mean": list(MEAN),
        "std": list(STD),
        # The model converts this standard scale to its weights' own inside.
        "preprocessing": f"RGB, {transform.describe().split(', (')[0]} as "
                         "data.preprocess_for_eval does, (pixel / 255 - mean) / std",
        "input": _tensor_metadata(interpreter.get_input_details()[0],
                                  "q = clip(round(x / scale) + zero_point, -128, 127)"),
        "output": _tensor_metadata(interpreter.get_output_details()[0],
                                   "probability = (q - zero_point) * scale"),
        "calibration_images": 0 if calibration is None else len(calibration),
        "fold_batchnorm": bool(fold_batchnorm),
        "tensorflow": tf.__version__,
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_bytes(path, content, exclusive=not overwrite)
    write_json(sidecar, metadata, exclusive=not overwrite)
    return path


def sidecar_path(path):
    """The `.json` beside a `.tflite` file."""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def calibration_images(data_dir=None, *, dataset=None, image_size=None, preset=None,
                       transform=None, val_split=None, seed=0, count=NUM_CALIBRATION,
                       tfds_dir=None):
    """`count` training images, eval-preprocessed, as float32 `[count, S, S, 3]`.

    The images are a seeded random sample of `load_data`'s training split (so with the
    run's `val_split` and the `seed` of its hold-out, never a validation image), without
    augmentation. Files are streamed, so only about `count` of them are decoded.
    """
    transform = eval_transform(image_size, preset, transform)
    image_size = transform.crop
    loaded = load_data(
        dataset or "cifar10", data_dir=data_dir, val_split=val_split, image_size=image_size,
        preset=transform.preset, batch_size=1, seed=seed, deterministic=True, augment=False,
        cache=False, tfds_dir=tfds_dir, eval_transform=transform)
    return _take_images(loaded.train, count, image_size)


def _take_images(images, count, image_size):
    if isinstance(images, tf.data.Dataset):
        chunks, total = [], 0
        for element in images:
            batch = element[0] if isinstance(element, (tuple, list)) else element
            batch = np.asarray(batch, np.float32)
            chunks.append(batch[None] if batch.ndim == 3 else batch)
            total += len(chunks[-1])
            if total >= count:
                break
        images = np.concatenate(chunks) if chunks else np.zeros((0, image_size, image_size, 3))
    images = np.asarray(images, np.float32)[:count]
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or not len(images):
        raise ExportError(
            f"representative_images must hold normalized images [N, {image_size}, {image_size}, 3] "
            f"with N >= 1; received shape {images.shape}.")
    return images


def _convert(model, image_size, quantization, calibration):
    linear_head = has_linear_head(model)

    @tf.function(input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=_INPUT_NAME)])
    def probabilities(images):
        scores = model(images, training=False)
        return tf.nn.softmax(scores) if linear_head else scores

    # The converter freezes only variables it can reach from this object; Keras 3 layers
    # are not tf.Modules, so without the list it keeps them as resource variables.
    holder = tf.Module()
    holder.variables_to_freeze = [w.value for w in model.weights]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [probabilities.get_concrete_function()], holder)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def _tensor_metadata(detail, conversion):
    scale, zero_point = detail["quantization"]
    metadata = {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }
    if np.dtype(detail["dtype"]).kind != "f":
        metadata["conversion"] = conversion
    return metadata


def refuse_existing(*paths, hint):
    """Raises `ExportError` when one of `paths` exists: exports are never overwritten."""
    for existing in paths:
        if os.path.exists(existing):
            raise ExportError(f"'{existing}' already exists and exports are never overwritten; "
                              f"remove it, choose another path or {hint}.")


# ---------------------------------------------------------------------------------------
# Running exported files: predictions, top-1, latency.


def load_interpreter(path, num_threads=None):
    """A TFLite interpreter for `path`, tensors allocated for batch 1.

    LiteRT's (`ai_edge_litert`) when installed, else `tf.lite.Interpreter`.
    """
    interpreter = _interpreter(model_path=os.fspath(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _interpreter(**kwargs):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    # tf.lite.Interpreter warns on every construction that it moves to ai_edge_litert, an
    # extra package; TF 2.21's still works, and the warning would bury the user's output.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return Interpreter(**kwargs)


def predict_tflite(path_or_interpreter, images, *, batch_size=256, num_threads=None):
    """float32 probabilities `[N, classes]` for normalized float32 images `[N, S, S, 3]`.

    int8 inputs are quantized and int8 outputs dequantized with the file's parameters.
    """
    interpreter = path_or_interpreter
    if not hasattr(interpreter, "invoke"):
        interpreter = load_interpreter(path_or_interpreter, num_threads)
    input_detail = interpreter.get_input_details()[0]
    images = np.asarray(images, np.float32)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        if tuple(interpreter.get_input_details()[0]["shape"]) != batch.shape:
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], quantize_input(batch, input_detail))
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        outputs.append(dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs)


def quantize_input(images, detail):
    """Normalized float32 images as the input tensor `detail` takes them."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_output(values, detail):
    """An output tensor's values as float32."""
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def evaluate_tflite(path, dataset, *, batch_size=256, num_threads=None):
    """Top-1 accuracy (a fraction) of a TFLite file.

    Args:
        path: str. The `.tflite` file.
        dataset: `(images, labels)` batches, e.g. `load_data(...).val`, or one
            `(images, labels)` pair of arrays.
    """
    interpreter = load_interpreter(path, num_threads)
    pairs = [dataset] if isinstance(dataset, tuple) else dataset
    correct = total = 0
    for images, labels in pairs:
        probabilities = predict_tflite(interpreter, images, batch_size=batch_size)
        correct += int(np.sum(np.argmax(probabilities, -1) == np.asarray(labels)))
        total += len(probabilities)
    if not total:
        raise ExportError("evaluate_tflite received an empty dataset.")
    return correct / total


def single_image_runner(path, num_threads=1):
    """A function running the file once on one fixed image: what `latency_ms` times."""
    interpreter = load_interpreter(path, num_threads)
    detail = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).normal(size=detail["shape"]).astype(np.float32)
    interpreter.set_tensor(detail["index"], quantize_input(image, detail))
    return interpreter.invoke


def latency_ms(path, runs=200, *, warmup=20, num_threads=1):
    """Median single-image latency in milliseconds over `runs` invocations after `warmup`."""
    return median_ms(single_image_runner(path, num_threads), runs, warmup=warmup)


def median_ms(run, runs, *, warmup=20):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
