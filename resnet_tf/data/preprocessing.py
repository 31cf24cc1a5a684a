"""Image preprocessing shared by training, evaluation and the exported serving graph.

Pure TF ops on one image (or a batch, for the CIFAR augmentation), so the SavedModel
applies exactly the preprocessing the model was trained and evaluated with:

- `decode_image`: JPEG, PNG, BMP or GIF bytes to uint8 RGB.
- `preprocess_for_eval` / `preprocess_for_train`: the "cifar" and "imagenet" presets.
- `normalize`: pixels 0..255 to `(x/255 - MEAN)/STD`, the one definition of the input scale.

The public functions are plain TF ops with no Python control flow on tensors, so AutoGraph
is told not to convert them (`do_not_convert`): converting their source cost every
command 0.5-1 s of start-up (a short training run: 15.2 -> 14.6 s, median of 4).
"""

import tensorflow as tf

from resnet_tf.data.headers import MAX_IMAGE_PIXELS, decoded_pixels
from resnet_tf.errors import DataError
from resnet_tf.models.normalization import MEAN, STD  # the models' input scale: one home
from resnet_tf.models.transform import EvalTransform

PRESETS = ("cifar", "imagenet")

# The "cifar" preset's zero padding before its random crop, in pixels (`crop_padding`).
CIFAR_PAD = 4


@tf.autograph.experimental.do_not_convert
def normalize(images):
    """Maps pixel values in 0..255 (any dtype, last dim RGB) to float32 `(x/255 - MEAN)/STD`."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape[-1] not in (None, 3):
        raise DataError(
            f"normalize expects RGB images with a last dimension of 3; "
            f"received shape {images.shape}."
        )
    images = tf.cast(images, tf.float32)
    rank = images.shape.rank
    width = images.shape[-2] if rank is not None and rank >= 3 and images.shape[-1] == 3 else None
    if width is None:
        mean, std = _channel_scale()
        return (images - mean) / std
    # The mean and std tiled along an image row: broadcasting a [3] vector over the last
    # axis is about 3x slower on the CPU (0.62 vs 0.21 ms per 224 px image), same values.
    mean, std = _channel_scale(width)
    rows = tf.reshape(images, [-1, width * 3])
    return tf.reshape((rows - mean) / std, tf.shape(images))


def _channel_scale(repeat=1):
    """`normalize`'s per-channel mean and std on the 0..255 scale, float32 `[3 * repeat]`."""
    mean = tf.constant([255.0 * m for m in MEAN] * repeat, tf.float32)
    std = tf.constant([255.0 * s for s in STD] * repeat, tf.float32)
    return mean, std


def default_preset(image_size):
    """`"cifar"` (pad-and-crop) for images up to 64 px, else `"imagenet"` (random-resized crop)."""
    return "cifar" if image_size <= 64 else "imagenet"


@tf.autograph.experimental.do_not_convert
def decode_image(data, max_pixels=MAX_IMAGE_PIXELS):
    """Decodes JPEG, PNG, BMP or GIF (first frame) bytes to a uint8 `[H, W, 3]` RGB image.

    Grayscale and RGBA become RGB; JPEG is decoded as PIL decodes it (accurate DCT).
    Truncated or corrupt data, and an image whose header declares more than `max_pixels`
    pixels (`headers.decoded_pixels`, every GIF frame counted), raise `tf.errors.InvalidArgumentError` before anything is decoded: TF's
    JPEG decoder rejects a file cut short (`try_recover_truncated` is off) rather than
    returning a half-grey image. Image folders skip such files as unreadable.
    """
    pixels = decoded_pixels(data)
    message = f"image is larger than the limit of {max_pixels} pixels; decoding it needs"
    if tf.executing_eagerly():  # the same error, without graph-mode Assert's wrapping
        if int(pixels) > max_pixels:
            raise tf.errors.InvalidArgumentError(None, None, f"{message} {int(pixels)}")
        checks = []
    else:
        checks = [tf.debugging.Assert(tf.less_equal(pixels, max_pixels), [message, pixels])]
    with tf.control_dependencies(checks):
        # JPEG with the accurate integer DCT, libjpeg's and PIL's default: the same pixels
        # as PIL (TF's own default, the fast DCT, is off by up to 8 grey levels), so a
        # source's published transform gives the numbers it gives in PyTorch.
        image = tf.cond(
            is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


@tf.autograph.experimental.do_not_convert
def preprocess_for_eval(image, image_size=None, preset=None, *, transform=None):
    """Deterministic preprocessing of one uint8 `[H, W, 3]` image to normalized float32 `[S, S, 3]`.

    Args:
        image: uint8 tensor `[H, W, 3]`, any height and width.
        image_size: int. Output height and width `S` of a preset's transform.
        preset: str. `"cifar"` resizes to `S` when the size differs; `"imagenet"` resizes
            the shorter side to `round(S / 0.875)` and takes the central `S x S` crop.
        transform: an `EvalTransform` (or its config) instead of `image_size` and
            `preset`: the resize, crop and interpolation a model or its weights carry
            (`transform_of`). Its normalisation is applied by the model itself
            (`WeightsNormalization`): every model takes the standard scale made here.

    The geometry is torchvision's (`Resize(resize)` + `CenterCrop(crop)` on a PIL image):
    the shorter side becomes `resize` and the longer `int(resize * long / short)`, the
    antialiased resize is rounded to 0..255 as an 8-bit image is, and the crop's offset is
    `round((side - crop) / 2)`.
    """
    transform = eval_transform(image_size, preset, transform)
    size = transform.crop
    image = tf.convert_to_tensor(image)
    if transform.resize is None:
        image = _resize(image, size, size, transform.interpolation)
    else:
        image = _resize_shorter_side(image, transform.resize, transform.interpolation)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        top, left = _centre_offset(height, size), _centre_offset(width, size)
        image = image[top : top + size, left : left + size]
    image.set_shape([size, size, 3])
    return normalize(image)


@tf.autograph.experimental.do_not_convert
def eval_transform(image_size=None, preset=None, transform=None):
    """The `EvalTransform` that `preprocess_for_eval`'s arguments name: `transform`, else
    `preset` (`default_preset` when None) at `image_size`."""
    if transform is not None:
        return EvalTransform.from_config(transform)
    if image_size is None:
        raise DataError("preprocess_for_eval needs an image size or a transform. Received: "
                        "image_size=None, transform=None; expected e.g. image_size=224.")
    preset = preset or default_preset(image_size)
    check_preset(preset)
    return EvalTransform.for_preset(preset, image_size)


def _centre_offset(side, crop):
    """torchvision's `int(round((side - crop) / 2))`: halves round to the even integer."""
    extra = side - crop
    half = extra // 2
    return half + (extra % 2) * (half % 2)


@tf.autograph.experimental.do_not_convert
def preprocess_for_train(image, image_size, preset, seed=None, crop_padding=CIFAR_PAD,
                         pixels=False):
    """Random augmentation of one uint8 `[H, W, 3]` image to normalized float32 `[S, S, 3]`.

    Args:
        image: uint8 tensor `[H, W, 3]`.
        image_size: int. Output height and width `S`.
        preset: str. `"cifar"`: resize to `S` if needed, zero-pad `crop_padding` px (4),
            random `S x S` crop,
            random horizontal flip. `"imagenet"`: random-resized crop (8-100% of the area,
            aspect ratio 3/4-4/3) resized to `S` (bilinear, not antialiased), random
            horizontal flip.
        seed: optional int tensor of shape `[2]`. The same seed gives the same
            augmentation; `None` draws one from TF's global generator.
        pixels: bool. `"imagenet"` only: return the crop as uint8 pixels (the resize
            rounded), not normalized, for a model step that normalizes on the accelerator
            (`normalize` of them is the normalized image to within half a grey level).
    """
    check_pixels(preset, pixels)
    image = tf.convert_to_tensor(image)
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if preset == "cifar":
        image = pad_crop_flip(image[tf.newaxis], image_size, seed, crop_padding)[0]
        image.set_shape([image_size, image_size, 3])
        return normalize(image)
    begin, size, flip_seed = _random_resized_crop_box(tf.shape(image), seed)
    return _finish_random_resized_crop(tf.slice(image, begin, size), image_size, flip_seed,
                                       pixels)


def check_pixels(preset, pixels):
    """The preset is known, and uint8 pixels are asked of the "imagenet" preset only."""
    check_preset(preset)
    if pixels and preset != "imagenet":
        raise DataError(f"Training images as uint8 pixels come from the imagenet preset's "
                        f"random-resized crop only. Received: preset={preset!r}; expected "
                        "'imagenet', or normalized images.")


@tf.autograph.experimental.do_not_convert
def preprocess_encoded_for_train(encoded, image_size, preset, seed=None, crop_padding=CIFAR_PAD,
                                 pixels=False):
    """`preprocess_for_train(decode_image(encoded), ...)`, decoding only what it keeps.

    For the "imagenet" preset and JPEG bytes, the random-resized crop's window is drawn from
    the size in the JPEG header (`extract_jpeg_shape`) and only that window is decoded
    (`decode_and_crop_jpeg`), as TensorFlow's reference ImageNet pipelines do: the same
    window as decoding the whole image with the same seed, without decoding the pixels the
    crop throws away. Other formats, and the "cifar" preset, decode the whole image.
    `pixels`: as `preprocess_for_train`'s.
    """
    check_pixels(preset, pixels)
    if preset == "cifar":
        return preprocess_for_train(decode_image(encoded), image_size, preset, seed, crop_padding)
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)

    def fused():
        height_width = tf.image.extract_jpeg_shape(encoded)[:2]
        # The limit of every decode (`decode_image`), from the same header.
        count = tf.reduce_prod(tf.cast(height_width, tf.int64))
        within = tf.debugging.Assert(count <= MAX_IMAGE_PIXELS, [
            f"image is larger than the limit of {MAX_IMAGE_PIXELS} pixels; decoding it needs",
            count])
        with tf.control_dependencies([within]):
            height_width = tf.identity(height_width)
        begin, size, flip_seed = _random_resized_crop_box(tf.concat([height_width, [3]], 0), seed)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        # The DCT `decode_image` uses, so the window holds the whole decode's pixels.
        image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3,
                                              dct_method="INTEGER_ACCURATE")
        return _finish_random_resized_crop(image, image_size, flip_seed, pixels)

    def whole():
        return _decode_whole_for_train(encoded, image_size, preset, seed, crop_padding, pixels)

    return tf.cond(is_jpeg(encoded), fused, whole)


@tf.function(autograph=False, experimental_attributes={"_noinline": True})
def _decode_whole_for_train(encoded, image_size, preset, seed, crop_padding, pixels=False):
    """`preprocess_for_train(decode_image(encoded), ...)` as one call node in the caller's
    graph. tf.data lowers `tf.cond` to Switch/Merge, so every op of the branch not taken
    still passes a dead tensor on: inlined, the ~460 ops of this branch (most of them
    `decode_image`'s header check) cost every JPEG about 0.14 ms on one thread."""
    return preprocess_for_train(decode_image(encoded), image_size, preset, seed, crop_padding,
                                pixels)


def is_jpeg(encoded):
    """Whether encoded image bytes are a JPEG (its SOI marker and the next marker's 0xFF)."""
    return tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")


def _random_resized_crop_box(shape, seed):
    """The "imagenet" preset's random crop of an image of `shape` [H, W, C]: 8-100 % of the
    area, aspect ratio 3/4-4/3, as `(begin, size, seed left for the flip)`."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size, flip_seed


def _finish_random_resized_crop(crop, image_size, flip_seed, pixels=False):
    """The random-resized crop's uint8 window resized to `image_size`, flipped, normalized
    (or, with `pixels`, rounded to uint8 and flipped: a quarter of the bytes, and no
    normalization on the CPU).

    The resize is plain bilinear (`antialias=False`), as in the Model Garden's and
    TensorFlow's reference ImageNet pipelines: on a ~500x375 photo it costs 0.27 ms where
    the antialiased one costs 1.07 ms, the largest cost after decoding. torchvision's
    `RandomResizedCrop` antialiases; without it a window shrunk by more than 2x skips
    some pixels (mild aliasing, another augmentation). Evaluation keeps antialiasing.

    The window is cast to float32 before the resize: the same pixels bit for bit, but
    TensorFlow's bilinear kernel reads float32 at about half the cost of uint8 (0.15 ms
    against 0.27 ms on one thread, `benchmarks/imagenet_input.py`'s step costs).
    """
    image = tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size], antialias=False)
    if pixels:  # a bilinear mix of 0..255 values stays in 0..255
        image = tf.cast(tf.round(image), tf.uint8)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image.set_shape([image_size, image_size, 3])
    return image if pixels else normalize(image)


def pad_crop_flip(images, image_size, seed, crop_padding=CIFAR_PAD):
    """The "cifar" augmentation of a uint8 `[B, H, W, 3]` batch, as float32 in 0..255:
    zero-pad `crop_padding` pixels on every side, crop `image_size` at random, flip half.

    One gather per axis crops and flips the whole batch: per-image ops cost more in
    tf.data overhead than in arithmetic at 32 x 32, and the input must outrun the GPU.
    """
    images = _resize(images, image_size, image_size)
    pad = crop_padding
    images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    batch = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, maxval=2 * pad + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([batch, 1], flip_seed, maxval=2, dtype=tf.int32) > 0
    steps = tf.range(image_size)
    rows = offsets[:, :1] + steps
    cols = offsets[:, 1:] + tf.where(flip, image_size - 1 - steps, steps)
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def resize_to(images, size):
    """`[..., H, W, C]` images (float32) resized to `size` x `size`; as they are when they
    have that size already (checked when the graph is built)."""
    if tuple(images.shape[-3:-1]) == (size, size):
        return images
    resized = tf.image.resize(images, [size, size], antialias=True)
    resized.set_shape([*images.shape[:-3], size, size, images.shape[-1]])
    return resized


def _resize(image, height, width, method="bilinear"):
    """Antialiased resize of `[..., H, W, 3]` to float32, skipped when the size already matches."""
    if isinstance(height, int) and tuple(image.shape[-3:-1]) == (height, width):
        return tf.cast(image, tf.float32)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[-3], height), tf.equal(shape[-2], width))
    return tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, [height, width], method=method, antialias=True),
    )


def _resize_shorter_side(image, size, method="bilinear"):
    """The shorter side resized to `size`, the longer to `int(size * long / short)` (as
    torchvision's `Resize(size)`), rounded to whole 0..255 values like an 8-bit image."""
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    scaled = tf.cast(tf.floor(float(size) * shape / tf.reduce_min(shape)), tf.int32)
    resized = _resize(image, tf.maximum(scaled[0], size), tf.maximum(scaled[1], size), method)
    return tf.round(tf.clip_by_value(resized, 0.0, 255.0))


def check_preset(preset):
    if preset not in PRESETS:
        raise DataError(f"preset must be one of {', '.join(PRESETS)}. Received: preset={preset!r}; expected one of them.")
