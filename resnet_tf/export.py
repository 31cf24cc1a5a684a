"""Export a trained classifier as a SavedModel that TensorFlow Serving loads as is.

    export_serving_model(model, "runs/x/export/resnet50", class_names=names,
                         image_size=224, preset="imagenet")   # -> ".../resnet50/1"

The export is a plain `tf.Module` with two signatures, so loading it needs TensorFlow
alone (no Keras objects, no resnet_tf layers inside):

- `serving_default`: `image_bytes`, string `[N]` of encoded JPEG, PNG, GIF, BMP or WebP
  images. Each one is checked, decoded and preprocessed in the graph by the very
  functions evaluation uses (`data.decode_image`, `data.preprocess_for_eval`).
- `serving_pixels`: `images`, uint8 `[N, S, S, 3]` RGB images already at the model's
  input size `S` (for `preset="imagenet"`: already centre-cropped); only normalized.

Both return `probabilities` float32 `[N, classes]`, and the top k as `classes` int32
`[N, k]`, `scores` float32 `[N, k]` and `class_names` string `[N, k]`.

The served network is a copy of the model with every BatchNorm that follows a
convolution folded into that convolution's kernel and bias, and its weights frozen into
the graph as constants (so oneDNN prepares each kernel once, not on every request). It
computes in float32 by default, whatever precision the model was trained in;
`precision="bfloat16"` (or "float16", for GPU servers) computes the convolutions in that
type and the classifier in float32.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from resnet_tf import data  # importing the package registers its layers for load_model

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"
# Requests past either limit fail with InvalidArgument before any decoding. 50 MP is
# 8660 x 5773; phone and DSLR photos (12-48 MP) pass. Decoding and resizing take about
# 15 bytes per pixel (uint8, then float32), 750 MB for a 50 MP image.
MAX_IMAGE_BYTES = 32 * 1024**2
MAX_IMAGE_PIXELS = 50_000_000
FORMATS = "JPEG, PNG, GIF, BMP or WebP"
# Serving precision -> the Keras dtype policy of the network's hidden layers.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

_PROG = "resnet-export"
_HEADER_BYTES = 32


class ExportError(ValueError):
    """An export cannot be written or read; the message says what was received and expected."""


def export_serving_model(
    model,
    export_base_dir,
    *,
    class_names,
    image_size,
    preset,
    version=None,
    top_k=5,
    fold_batchnorm=True,
    precision="float32",
    max_image_bytes=MAX_IMAGE_BYTES,
    max_image_pixels=MAX_IMAGE_PIXELS,
):
    """Write `model` as version `version` of a TF Serving model base path.

    Args:
        model: `keras.Model` mapping normalized float32 `[N, S, S, 3]` images to
            probabilities (a softmax head) or logits (a linear head; softmax is added).
        export_base_dir: str. The folder TF Serving's `--model_base_path` points at.
        class_names: list of str, one per output unit.
        image_size: int. The model's input height and width `S`.
        preset: str. The evaluation preprocessing, "cifar" or "imagenet" (see
            `data.preprocess_for_eval`).
        version: int or None. Version number; None takes the next free one (1 in an
            empty folder). An existing version is never overwritten.
        top_k: int. Classes returned per image, capped at the class count.
        fold_batchnorm: bool. Fold BatchNorm into the preceding convolutions.
        precision: str. "float32" (default), "bfloat16" (faster on CPUs with
            AVX512-BF16 or AMX) or "float16" (GPUs): the compute type of the network;
            the classifier and every output stay float32.
        max_image_bytes: int. Larger encoded images are rejected.
        max_image_pixels: int. Images with more pixels (read from the header) are rejected.

    Returns:
        str. The version folder that was written.
    """
    class_names = [str(c) for c in class_names]
    classes = model.output_shape[-1]
    if len(class_names) != classes:
        raise ExportError(
            f"The model has {classes} outputs but {len(class_names)} class names were given; "
            "expected one name per output."
        )
    input_size = tuple(model.input_shape[1:3])
    if None not in input_size and input_size != (image_size, image_size):
        raise ExportError(
            f"image_size={image_size} does not match the model's input size {input_size}."
        )
    if not isinstance(top_k, int) or top_k < 1:
        raise ExportError(f"top_k must be a positive integer. Received: top_k={top_k!r}")
    if preset not in data.PRESETS:
        raise ExportError(f"preset must be one of {', '.join(data.PRESETS)}. Received: preset={preset!r}")
    _check_precision(precision)

    export_base_dir = os.fspath(export_base_dir)
    os.makedirs(export_base_dir, exist_ok=True)
    if version is None:
        version = next_version(export_base_dir)
    elif isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ExportError(f"version must be a non-negative integer. Received: version={version!r}")
    final = os.path.join(export_base_dir, str(version))
    if os.path.exists(final):
        raise ExportError(
            f"Version {version} already exists in {export_base_dir}; exported versions are "
            f"never overwritten. Choose another version, or none to get {next_version(export_base_dir)}."
        )

    module = ServingModule(
        inference_model(model, fold_batchnorm=fold_batchnorm, precision=precision),
        class_names=class_names, image_size=image_size, preset=preset,
        top_k=min(top_k, classes), max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
    )
    # A server polling the base path only loads purely numeric folders, and the rename
    # is atomic, so it never sees a half-written version.
    tmp = tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=export_base_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        if os.path.exists(final):
            raise ExportError(f"Version {version} appeared in {export_base_dir} during the export.")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def next_version(export_base_dir):
    """The next free version number in a model base path: 1 + the largest numeric folder."""
    return max(_versions(export_base_dir), default=0) + 1


def latest_version_dir(path):
    """A SavedModel folder: `path` itself, or its highest numeric version (what TF Serving serves)."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [v for v in _versions(path)
                if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))]
    if not versions:
        raise ExportError(
            f"'{path}' is not a SavedModel: expected a folder with saved_model.pb or numeric "
            "version folders holding one."
        )
    return os.path.join(path, str(max(versions)))


def _versions(base):
    if not os.path.isdir(base):
        return []
    return [int(name) for name in os.listdir(base)
            if name.isdigit() and os.path.isdir(os.path.join(base, name))]


# ---------------------------------------------------------------------------------------
# The served network: BatchNorm folded, float32 unless asked otherwise.


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}. "
                          f"Received: precision={precision!r}")


def inference_model(model, fold_batchnorm=True, precision="float32"):
    """A copy of `model` for inference, each conv->BatchNorm pair folded into one conv.

    Layers are rebuilt from their configs with the dtype policy of `precision`
    ("float32", "bfloat16" or "float16"), whatever policy the model was trained
    under; Dense layers (the classifier) always compute in float32. Weights (always
    stored in float32) are copied. A BatchNorm is folded when its input comes from a
    linear Conv2D whose output feeds nothing else: the conv gets kernel `W * g` and
    bias `(b - mean) * g + beta` with `g = gamma / sqrt(var + eps)`, computed in
    float64, and the BatchNorm becomes an identity. The original model is not modified.
    """
    _check_precision(precision)
    policy = PRECISIONS[precision]
    pairs = _conv_bn_pairs(model) if fold_batchnorm else {}
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        if layer.name in folded_bns:
            # Lambda accepts the `training`/`mask` arguments the graph passes to a BN.
            return keras.layers.Lambda(lambda x: x, name=layer.name, dtype=policy)
        dtype = "float32" if isinstance(layer, keras.layers.Dense) else policy
        config = {**layer.get_config(), "dtype": dtype}
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bns or not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(_fold(layer, pairs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return copy


def _conv_bn_pairs(model):
    """{conv layer name: BatchNormalization layer} for every foldable pair."""
    consumers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers[id(producer)] = consumers.get(id(producer), 0) + 1
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if getattr(layer, "renorm", False) or getattr(layer, "synchronized", False):
            continue
        producer = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        conv_axis = -1 if getattr(producer, "data_format", None) == "channels_last" else 1
        if (
            type(producer) is keras.layers.Conv2D
            and consumers[id(producer)] == 1
            and producer.activation is keras.activations.linear
            and layer.axis % 4 == conv_axis % 4
        ):
            pairs[producer.name] = layer
    return pairs


def _fold(conv, bn):
    kernel = conv.kernel.numpy().astype(np.float64)
    bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else 0.0
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else 1.0
    beta = bn.beta.numpy().astype(np.float64) if bn.center else 0.0
    mean = bn.moving_mean.numpy().astype(np.float64)
    scale = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    # The kernel's last axis is the output channel, whatever the data format.
    return [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]


# ---------------------------------------------------------------------------------------
# The SavedModel.


class ServingModule(tf.Module):
    """The exported object: the two serving functions and the metadata evaluation reads.

    The network is traced once with its weights frozen into graph constants
    (`frozen_network`), so the SavedModel holds traced graphs but no Keras objects and
    no network variables.
    """

    def __init__(self, model, *, class_names, image_size, preset, top_k,
                 max_image_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_IMAGE_PIXELS):
        super().__init__(name="resnet_serving")
        network = frozen_network(model, image_size)
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        self.image_size = tf.Variable(image_size, trainable=False, name="image_size")
        self.preset = tf.Variable(preset, trainable=False, name="preset")
        head = model.layers[-1]
        logits = getattr(head, "activation", None) is keras.activations.linear
        names = tf.constant(class_names)

        def outputs(images):
            (scores,) = network(images)  # a frozen function returns a list of outputs
            scores = tf.cast(scores, tf.float32)
            scores = tf.nn.softmax(scores) if logits else scores
            top_scores, top_classes = tf.math.top_k(scores, k=top_k)
            return {
                "probabilities": scores,
                "classes": top_classes,
                "scores": top_scores,
                "class_names": tf.gather(names, top_classes),
            }

        def prepare(contents):
            image = checked_decode(contents, max_image_bytes, max_image_pixels)
            return data.preprocess_for_eval(image, image_size, preset)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        def serve_bytes(image_bytes):
            images = tf.map_fn(
                prepare, image_bytes,
                fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
            )
            return outputs(images)

        @tf.function(input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name=PIXELS_INPUT)])
        def serve_pixels(images):
            return outputs(data.normalize(images))

        self.serve_bytes = serve_bytes
        self.serve_pixels = serve_pixels

    def signatures(self):
        return {
            SERVING_SIGNATURE: self.serve_bytes.get_concrete_function(),
            PIXELS_SIGNATURE: self.serve_pixels.get_concrete_function(),
        }


def frozen_network(model, image_size):
    """`model(images, training=False)` on float32 `[N, S, S, 3]`, weights as graph constants.

    Constant kernels let TensorFlow's oneDNN convolutions reorder each kernel into
    their blocked layout once and cache it (a variable's value is re-read, and
    reordered, on every call), and let grappler fold the float32->bfloat16 casts of a
    bfloat16 export away.
    """
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    traced = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(traced)


def checked_decode(contents, max_image_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_IMAGE_PIXELS):
    """`data.decode_image` behind checks that fail the request with InvalidArgument.

    Empty input, more than `max_image_bytes` bytes, a format other than JPEG, PNG,
    GIF, BMP or WebP, and more than `max_image_pixels` pixels according to the header
    (read before decoding, and checked again after it) each raise an error whose
    message names the problem.
    """
    size = tf.strings.length(contents)
    checks = [
        tf.debugging.assert_positive(size, message="image_bytes is empty; expected an encoded image"),
        tf.debugging.assert_less_equal(
            size, max_image_bytes,
            message=f"image_bytes is larger than the limit of {max_image_bytes} bytes"),
    ]
    with tf.control_dependencies(checks):
        height, width = header_shape(contents)
    known = tf.greater_equal(height, 0)
    checks = [
        tf.debugging.Assert(known, [f"image_bytes is not a {FORMATS} image (unrecognised header)"]),
        tf.debugging.Assert(
            tf.less_equal(height * width, max_image_pixels),
            [f"image is larger than the limit of {max_image_pixels} pixels: height x width =",
             height, width]),
    ]
    with tf.control_dependencies(checks):
        image = data.decode_image(contents)
    # Again after decoding, before the float32 resize: a GIF frame can exceed its header.
    shape = tf.shape(image, out_type=tf.int64)
    with tf.control_dependencies([tf.debugging.Assert(
            tf.less_equal(shape[0] * shape[1], max_image_pixels),
            [f"image is larger than the limit of {max_image_pixels} pixels: height x width =",
             shape[0], shape[1]])]):
        return tf.identity(image)


def header_shape(contents):
    """(height, width) as int64 scalars read from an image's header; (-1, -1) for other formats.

    JPEG via `tf.io.extract_jpeg_shape` (which walks to the SOF marker); PNG, GIF, BMP
    and WebP (lossy, lossless and extended) from fixed header offsets. For a GIF this is
    the logical screen, which a frame may exceed.
    """
    head = tf.strings.substr(contents, 0, _HEADER_BYTES)
    head = tf.strings.substr(tf.strings.join([head, "\0" * _HEADER_BYTES]), 0, _HEADER_BYTES)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def starts(offset, magic):
        return tf.reduce_all(tf.equal(b[offset:offset + len(magic)], list(magic)))

    def le(offset, n):  # little-endian unsigned integer
        return sum(b[offset + i] * (1 << (8 * i)) for i in range(n))

    def be(offset, n):
        return sum(b[offset + i] * (1 << (8 * (n - 1 - i))) for i in range(n))

    is_jpeg = starts(0, b"\xff\xd8\xff")
    is_webp = tf.logical_and(starts(0, b"RIFF"), starts(8, b"WEBP"))
    bmp_height = le(22, 4)
    bmp_height = tf.where(bmp_height >= 2**31, 2**32 - bmp_height, bmp_height)  # top-down BMPs
    vp8l = le(21, 4)
    cases = [
        (starts(0, b"\x89PNG\r\n\x1a\n"), (be(20, 4), be(16, 4))),
        (starts(0, b"GIF8"), (le(8, 2), le(6, 2))),
        (starts(0, b"BM"), (bmp_height, le(18, 4))),
        (tf.logical_and(is_webp, starts(12, b"VP8 ")),
         (tf.bitwise.bitwise_and(le(28, 2), 0x3FFF), tf.bitwise.bitwise_and(le(26, 2), 0x3FFF))),
        (tf.logical_and(is_webp, starts(12, b"VP8L")),
         (tf.bitwise.bitwise_and(tf.bitwise.right_shift(vp8l, 14), 0x3FFF) + 1,
          tf.bitwise.bitwise_and(vp8l, 0x3FFF) + 1)),
        (tf.logical_and(is_webp, starts(12, b"VP8X")), (le(27, 3) + 1, le(24, 3) + 1)),
    ]
    height = width = tf.constant(-1, tf.int64)
    for match, (h, w) in cases:  # at most one matches
        height, width = tf.where(match, h, height), tf.where(match, w, width)

    def jpeg_shape():
        shape = tf.io.extract_jpeg_shape(contents, output_type=tf.int64)
        return shape[0], shape[1]

    return tf.cond(is_jpeg, jpeg_shape, lambda: (height, width))


# ---------------------------------------------------------------------------------------
# Loading checkpoints, and the command line (resnet-export / python -m resnet_tf export).


def load_checkpoint(source, *, image_size=None, preset=None, classes_file=None):
    """A `.keras` file, or a run folder's best.keras, with what serving it needs.

    Class names come from `classes_file`, else classes.txt beside the model, else
    "class_0", "class_1", ...; the image size and preset from the arguments, else the
    run's config.json, else the model's input size and `data.default_preset`.

    Returns:
        `(model, class_names, image_size, preset, run folder or None)`.
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise ExportError(f"'{source}' does not exist; expected a .keras file or a run folder.")
    run_dir = source if os.path.isdir(source) else None
    path = os.path.join(source, "best.keras") if run_dir else source
    if run_dir and not os.path.isfile(path):
        raise ExportError(f"Run folder '{source}' has no best.keras.")
    if not path.endswith(".keras"):
        raise ExportError(f"'{source}' is not a .keras file or a run folder.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ExportError(f"Could not load '{path}': {error}") from error

    folder = os.path.dirname(os.path.abspath(path))
    class_names = read_class_names(classes_file or os.path.join(folder, "classes.txt"))
    if class_names is None and classes_file:
        raise ExportError(f"Class names file '{classes_file}' does not exist.")
    if class_names is None:
        class_names = [f"class_{i}" for i in range(model.output_shape[-1])]  # as data.py names them
    config = {}
    if os.path.isfile(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f).get("config", {})  # the trainer's resolved settings
    image_size = image_size or config.get("image_size") or model.input_shape[1]
    if image_size is None:
        raise ExportError(f"'{path}' accepts any input size and has no config.json beside it; "
                          "pass --image-size.")
    preset = preset or config.get("preset") or data.default_preset(image_size)
    return model, class_names, int(image_size), preset, run_dir


def read_class_names(path):
    """Class names, one per line, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def main(argv=None):
    """`resnet-export SOURCE [--export-dir DIR] [--version N] ...`. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Export a .keras checkpoint or a training run folder as a TF Serving "
                    "SavedModel (a new numeric version folder under --export-dir).",
    )
    parser.add_argument("source", help="a .keras file, or a run folder (best.keras, classes.txt, config.json)")
    parser.add_argument("--export-dir", help="model base path (default: <run>/export/<model name>)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--top-k", type=int, default=5, help="classes returned per image (default: 5)")
    parser.add_argument("--classes", help="class names file, one per line (default: classes.txt beside the model)")
    parser.add_argument("--image-size", type=int, help="input size (default: config.json, else the model's)")
    parser.add_argument("--preset", choices=data.PRESETS, help="evaluation preprocessing (default: config.json)")
    parser.add_argument("--no-fold-batchnorm", action="store_true",
                        help="keep BatchNorm separate from the convolutions")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="compute type of the served network (default: float32); "
                             "bfloat16 is faster on CPUs with AVX512-BF16 or AMX, float16 on "
                             "GPUs; the classifier and the outputs stay float32")
    from resnet_tf import tflite

    parser.add_argument("--tflite", action="append", type=tflite.parse_quantizations,
                        metavar="{float32,float16,int8}",
                        help="also write <export dir>/<model name>_<quantization>.tflite (and .json); "
                             "repeatable or a comma list")
    parser.add_argument("--data-dir", help="training images for --tflite int8 calibration "
                        "(default: the run's config.json)")
    args = parser.parse_args(argv)
    from resnet_tf.cli import fail as _fail

    try:
        model, class_names, image_size, preset, run_dir = load_checkpoint(
            args.source, image_size=args.image_size, preset=args.preset, classes_file=args.classes)
        export_dir = args.export_dir or os.path.join(
            run_dir or os.path.dirname(os.path.abspath(args.source)), "export", model.name)
        write_tflite = tflite.prepare_cli_export(
            args.tflite or [], source=args.source, model=model, export_dir=export_dir,
            class_names=class_names, image_size=image_size, preset=preset,
            data_dir=args.data_dir, fold_batchnorm=not args.no_fold_batchnorm)
        path = export_serving_model(
            model, export_dir, class_names=class_names, image_size=image_size, preset=preset,
            version=args.version, top_k=args.top_k, fold_batchnorm=not args.no_fold_batchnorm,
            precision=args.precision,
        )
        print(path)
        for written in write_tflite():
            print(written)
    except ValueError as error:  # ExportError, data.DataError: messages written for the user
        return _fail(_PROG, error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
