"""Export a trained classifier as a SavedModel that TensorFlow Serving loads as is.

    export_serving_model(model, "runs/x/export/resnet50", class_names=names)
    # -> ".../resnet50/1", serving the transform the model carries (or image_size=,
    # preset= / transform= to choose)

The export is a plain `tf.Module` with two signatures, so loading it needs TensorFlow
alone (no Keras objects, no resnet_tf layers inside):

- `serving_default`: `image_bytes`, string `[N]` of encoded JPEG, PNG, GIF, BMP or WebP
  images. Each one is checked, decoded and preprocessed in the graph by the very
  functions evaluation uses (`decode_image`, `preprocess_for_eval` of `resnet_tf.data.preprocessing`).
- `serving_pixels`: `images`, uint8 `[N, S, S, 3]` RGB images already at the model's
  input size `S` (for `preset="imagenet"`: already centre-cropped); only normalized.
  Any other shape fails with InvalidArgument.

Both return `probabilities` float32 `[N, classes]`, and the top k as `classes` int32
`[N, k]`, `scores` float32 `[N, k]` and `class_names` string `[N, k]`.

The served network is a copy of the model with every BatchNorm that follows a
convolution folded into that convolution's kernel and bias, and its weights frozen into
the graph as constants (so oneDNN prepares each kernel once, not on every request). It
computes in float32 by default, whatever precision the model was trained in;
`precision="bfloat16"` (or "float16", for GPU servers) computes the convolutions in that
type and the classifier in float32.
"""

import json
import os
import shutil
import tempfile
import warnings

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from resnet_tf.data.headers import MAX_IMAGE_PIXELS, header_shape
from resnet_tf.data.preprocessing import (
    decode_image,
    eval_transform,
    normalize,
    preprocess_for_eval,
)
from resnet_tf.errors import ExportError
from resnet_tf.export.inference import (
    check_precision,
    check_serving_args,
    has_linear_head,
    inference_model,
)
from resnet_tf.files import current_umask, fault_point
from resnet_tf.metrics import TTA, TTA_DESCRIPTIONS, tta_views, view_plan
from resnet_tf.runs import EXPORT_MARKER

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_pixels"
BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"
# Requests past either limit fail with InvalidArgument before any decoding; the pixel
# limit is the one of every decode (`resnet_tf.data.headers`).
MAX_IMAGE_BYTES = 32 * 1024**2
FORMATS = "JPEG, PNG, GIF, BMP or WebP"
MAX_VERSION = 2**63 - 1  # TF Serving parses version folder names as int64
_PARTIAL_PREFIX = ".tmp-export-"
# Inside a version folder (TF Serving ignores assets.extra): how the graph serves.
SERVING_INFO = os.path.join("assets.extra", "resnet_tf_serving.json")


def export_serving_model(
    model,
    export_base_dir,
    *,
    class_names=None,
    image_size=None,
    preset=None,
    transform=None,
    version=None,
    top_k=5,
    fold_batchnorm=True,
    precision="float32",
    max_image_bytes=MAX_IMAGE_BYTES,
    max_image_pixels=MAX_IMAGE_PIXELS,
    marker=None,
    tta="none",
    temperature=None,
):
    """Write `model` as version `version` of a TF Serving model base path.

    Args:
        model: `keras.Model` mapping normalized float32 `[N, S, S, 3]` images to
            probabilities (a softmax head) or logits (a linear head; softmax is added).
        export_base_dir: str. The folder TF Serving's `--model_base_path` points at.
        class_names: list of str, one per output unit; None: "class_0", "class_1", ...
        image_size: int or None. The input height and width `S` to serve; None: the
            size of the transform the model carries, else its input size.
        preset: str or None. "cifar" or "imagenet": serve that preset's transform
            instead of the model's own (see `preprocess_for_eval`).
        transform: `EvalTransform` or None. The resize, crop and interpolation to serve;
            None: the one the model carries (`transform_of`: its weights' or its run's),
            else `preset` at `image_size` (`export.serving_transform`). Recorded in the
            SavedModel (`transform`) and in `assets.extra/resnet_tf_serving.json`.
        version: int or None. Version number; None takes the next free one (1 in an
            empty folder). An existing version is never overwritten.
        top_k: int. Classes returned per image, capped at the class count.
        fold_batchnorm: bool. Fold BatchNorm into the preceding convolutions.
        precision: str. "float32" (default), "bfloat16" (faster on CPUs with
            AVX512-BF16 or AMX) or "float16" (GPUs): the compute type of the network;
            the classifier and every output stay float32.
        max_image_bytes: int. Larger encoded images are rejected.
        max_image_pixels: int. Images with more pixels (read from the header) are rejected.
        marker: optional JSON-able dict written to `assets.extra/resnet_tf_run.json` in
            the version (TF Serving ignores it); `export_run` uses it to export a run once.
        tta: str. Test-time augmentation inside the serving graph, as `resnet-evaluate
            --tta` computes it (`resnet_tf.metrics.tta_views`): "none" (one view per image),
            "flip" (2 views) or "flip-shift" (10 views). The views are made from the
            preprocessed image in the graph and their outputs averaged before the top k;
            signatures and outputs stay the same. Recorded in the SavedModel (`tta`) and
            in `assets.extra/resnet_tf_serving.json`.
        temperature: optional float > 0. Calibrated probabilities: the log-probabilities
            (or logits) are divided by it before the softmax (`train.py --calibrate`).
            The ranking, and so the classes returned, is unchanged.

    Returns:
        str. The version folder that was written.
    """
    class_names, transform = check_serving_args(
        model, class_names=class_names, image_size=image_size, preset=preset,
        transform=transform)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ExportError(f"top_k must be a positive integer. Received: top_k={top_k!r}")
    classes = len(class_names)
    check_precision(precision)
    if tta not in TTA:
        raise ExportError(f"Unknown tta. Received: tta={tta!r}; expected one of "
                          f"{', '.join(TTA)}.")
    if temperature is not None and not (isinstance(temperature, (int, float))
                                        and 0 < temperature < float("inf")):
        raise ExportError(f"temperature must be a positive number. Received: "
                          f"temperature={temperature!r}; expected e.g. 1.3, or None.")

    export_base_dir = os.fspath(export_base_dir)
    check_output_folder(export_base_dir, "export_base_dir")
    os.makedirs(export_base_dir, exist_ok=True)
    if version is None:
        version = next_version(export_base_dir)
    elif (isinstance(version, bool) or not isinstance(version, int)
          or not 0 <= version <= MAX_VERSION):
        raise ExportError(f"version must be an integer from 0 to {MAX_VERSION} (TF Serving "
                          f"reads versions as int64). Received: version={version!r}")
    final = os.path.join(export_base_dir, str(version))
    if os.path.exists(final):
        raise ExportError(
            f"Version {version} already exists in {export_base_dir}; exported versions are "
            f"never overwritten. Choose another version, or none to get {next_version(export_base_dir)}."
        )

    module = ServingModule(
        inference_model(model, fold_batchnorm=fold_batchnorm, precision=precision),
        class_names=class_names, transform=transform,
        top_k=min(top_k, classes), max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels, tta=tta, temperature=temperature,
    )
    # A server polling the base path only loads purely numeric folders, and the rename
    # is atomic, so it never sees a half-written version.
    tmp = tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{version}-", dir=export_base_dir)
    try:
        # mkdtemp makes the folder 0700; a TF Serving process of another user must read it.
        os.chmod(tmp, 0o777 & ~current_umask())
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, SERVING_INFO), "w") as f:
            json.dump({"tta": tta, "views": len(view_plan(tta)),
                       "transform": transform.get_config(),
                       "transform_description": transform.describe(),
                       "description": TTA_DESCRIPTIONS[tta], "precision": precision,
                       "temperature": temperature}, f)
        if marker is not None:
            with open(os.path.join(tmp, EXPORT_MARKER), "w") as f:
                json.dump(marker, f)
        if os.path.exists(final):
            raise ExportError(f"Version {version} appeared in {export_base_dir} during the export.")
        fault_point("before export rename")
        os.rename(tmp, final)
        fault_point("after export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def check_export_dir(path, argument="--export-dir"):
    """Raises `ExportError` unless `path` is, or can become, a folder this process can write.

    Writes nothing: an existing folder, or else the nearest existing parent folder, gets
    a temporary file that is deleted at once. For checks before a long job (training),
    so that a file in the way or a read-only folder is found before, not after it.
    """
    check_output_folder(path, argument, ExportError)


def check_output_folder(path, argument, error=ExportError):
    """`check_export_dir` for any output folder: raises `error` naming `argument`."""
    path = os.fspath(path)
    shown = f"{argument}='{path}'"
    if os.path.exists(path) and not os.path.isdir(path):
        raise error(f"{argument} is a file. Received: {shown}; expected a folder or a path "
                    "where one can be created.")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise error(f"{argument} lies inside a file. Received: {shown} ('{existing}' is a "
                    "file); expected a folder or a path where one can be created.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as problem:
        raise error(f"{argument} is not writable. Received: {shown} "
                    f"({problem.strerror or problem} in '{existing}'); expected a folder "
                    "this user can write to.") from None


def next_version(export_base_dir):
    """The next free version number in a model base path: 1 + the largest numeric folder."""
    return max(_versions(export_base_dir), default=0) + 1


def latest_version_dir(path):
    """A SavedModel folder: `path` itself, or its highest complete numeric version.

    Complete: `is_complete_saved_model` (a version copied in by hand and cut short is
    passed over, with a warning, as TF Serving would fail on it).
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        if not is_complete_saved_model(path):
            raise ExportError(f"SavedModel '{path}' is incomplete (saved_model.pb cut short, or "
                              "variables/ missing or empty); expected a complete folder written "
                              "by resnet-export.")
        return path
    found = _versions(path)
    versions = [v for v in found if is_complete_saved_model(os.path.join(path, str(v)))]
    if not versions:
        raise ExportError(
            f"'{path}' is not a SavedModel: expected a folder with saved_model.pb or numeric "
            "version folders holding a complete one."
        )
    newer = sorted(v for v in found if v > max(versions))
    if newer:
        warnings.warn(f"Skipped incomplete version(s) {', '.join(map(str, newer))} in '{path}' "
                      f"(saved_model.pb cut short, or variables/ missing or empty); using "
                      f"version {max(versions)}.", stacklevel=2)
    return os.path.join(path, str(max(versions)))


def is_complete_saved_model(folder):
    """saved_model.pb is whole (`saved_model_pb_is_whole`), and variables.index and every
    variables data shard exist and are not empty."""
    def nonempty(name):
        try:
            return os.path.getsize(os.path.join(folder, name)) > 0
        except OSError:
            return False

    if not nonempty(os.path.join("variables", "variables.index")):
        return False
    try:
        shards = [n for n in os.listdir(os.path.join(folder, "variables")) if ".data-" in n]
    except OSError:
        return False
    return (bool(shards) and all(nonempty(os.path.join("variables", n)) for n in shards)
            and saved_model_pb_is_whole(os.path.join(folder, "saved_model.pb")))


def saved_model_pb_is_whole(path):
    """True when the file's top-level protobuf fields end exactly at its end and include a
    meta graph (field 2 of `SavedModel`).

    A file cut short ends inside a field, so this finds it by reading a few bytes per
    field (the meta graph, with the frozen weights, is skipped by its length, not parsed).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            meta_graphs = 0
            while f.tell() < size:
                key = _read_varint(f)
                if key is None:
                    return False
                field, wire_type = key >> 3, key & 7
                if wire_type == 0:
                    if _read_varint(f) is None:
                        return False
                elif wire_type in (1, 5):
                    f.seek(8 if wire_type == 1 else 4, os.SEEK_CUR)
                elif wire_type == 2:
                    length = _read_varint(f)
                    if length is None:
                        return False
                    f.seek(length, os.SEEK_CUR)
                    meta_graphs += field == 2
                else:
                    return False
            return meta_graphs > 0 and f.tell() == size
    except OSError:
        return False


def _read_varint(f):
    value = shift = 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None


def remove_partial_exports(export_base_dir):
    """Deletes the `.tmp-export-*` folders an interrupted export leaves behind."""
    if not os.path.isdir(export_base_dir):
        return
    for name in os.listdir(export_base_dir):
        if name.startswith(_PARTIAL_PREFIX):
            shutil.rmtree(os.path.join(export_base_dir, name), ignore_errors=True)


def _versions(base):
    if not os.path.isdir(base):
        return []
    return [int(name) for name in os.listdir(base)
            if name.isdigit() and os.path.isdir(os.path.join(base, name))]


# ---------------------------------------------------------------------------------------
# The SavedModel.


class ServingModule(tf.Module):
    """The exported object: the two serving functions and the metadata evaluation reads.

    The network is traced once with its weights frozen into graph constants
    (`frozen_network`), so the SavedModel holds traced graphs but no Keras objects and
    no network variables.
    """

    def __init__(self, model, *, class_names, top_k, transform=None, image_size=None,
                 preset=None, max_image_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_IMAGE_PIXELS,
                 tta="none", temperature=None):
        super().__init__(name="resnet_serving")
        # `transform`, or as earlier versions took it, a preset at an image size.
        transform = eval_transform(image_size, preset, transform)
        image_size = transform.crop
        network = frozen_network(model, image_size)
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")
        self.image_size = tf.Variable(image_size, trainable=False, name="image_size")
        # What earlier readers know (image_size, preset), and the whole transform as JSON.
        self.preset = tf.Variable(transform.preset, trainable=False, name="preset")
        self.transform = tf.Variable(json.dumps(transform.get_config()), trainable=False,
                                     name="transform")
        self.tta = tf.Variable(tta, trainable=False, name="tta")
        logits = has_linear_head(model)
        names = tf.constant(class_names)

        def scores_of(images):
            # All views go through the network as one batch; their outputs (probabilities,
            # or logits of a linear head) are averaged as `evaluate_model` averages them.
            views = tta_views(images, tta)
            (scores,) = network(tf.concat([view for view, _ in views], axis=0))
            scores = tf.reshape(tf.cast(scores, tf.float32),
                                [len(views), tf.shape(images)[0], len(class_names)])
            weights = tf.constant([w for _, w in views], tf.float32) / sum(w for _, w in views)
            scores = tf.tensordot(weights, scores, axes=1)
            if temperature:  # calibrated: log-probabilities (or logits) over T
                scores = scores if logits else tf.math.log(tf.maximum(scores, 1e-30))
                return tf.nn.softmax(scores / temperature)
            return tf.nn.softmax(scores) if logits else scores

        def outputs(images):
            # An empty batch never reaches the network: oneDNN's convolutions fail on it.
            scores = tf.cond(tf.shape(images)[0] > 0, lambda: scores_of(images),
                             lambda: tf.zeros([0, len(class_names)], tf.float32))
            top_scores, top_classes = tf.math.top_k(scores, k=top_k)
            return {
                "probabilities": scores,
                "classes": top_classes,
                "scores": top_scores,
                "class_names": tf.gather(names, top_classes),
            }

        def prepare(contents):
            image = checked_decode(contents, max_image_bytes, max_image_pixels)
            return preprocess_for_eval(image, transform=transform)

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
            return outputs(normalize(checked_pixels(images, image_size)))

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


@tf.autograph.experimental.do_not_convert
def checked_pixels(images, image_size):
    """`images` behind a check that they are `[N, image_size, image_size, 3]`.

    The signature declares that shape, but neither a restored signature nor TF Serving
    enforces it, and a fully convolutional network would answer any size; the check
    fails such a request with InvalidArgument instead.
    """
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # indexable for any rank
    fits = tf.logical_and(tf.equal(tf.size(shape), 4),
                          tf.reduce_all(tf.equal(padded[1:4], [image_size, image_size, 3])))
    with tf.control_dependencies([tf.debugging.Assert(
            fits, [f"images must have the shape (N, {image_size}, {image_size}, 3) of the "
                   "images the model was trained on; received shape", shape], summarize=8)]):
        return tf.identity(images)


@tf.autograph.experimental.do_not_convert
def checked_decode(contents, max_image_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_IMAGE_PIXELS):
    """`decode_image` behind checks that fail the request with InvalidArgument.

    Empty input, more than `max_image_bytes` bytes, a format other than JPEG, PNG,
    GIF, BMP or WebP, and more than `max_image_pixels` pixels according to the headers
    (`decode_image`'s check, every GIF frame counted) each raise an error whose message
    names the problem, before anything is decoded.
    """
    size = tf.strings.length(contents)
    checks = [
        tf.debugging.assert_positive(size, message="image_bytes is empty; expected an encoded image"),
        tf.debugging.assert_less_equal(
            size, max_image_bytes,
            message=f"image_bytes is larger than the limit of {max_image_bytes} bytes"),
    ]
    with tf.control_dependencies(checks):
        height, _ = header_shape(contents)
    with tf.control_dependencies([tf.debugging.Assert(
            tf.greater_equal(height, 0),
            [f"image_bytes is not a {FORMATS} image (unrecognised header)"])]):
        return decode_image(contents, max_image_pixels)
