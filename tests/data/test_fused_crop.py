"""The fused JPEG decode-and-crop of the imagenet preset: the crop that decoding the whole
image gives, without decoding what the crop throws away.

The window is drawn by the same op from the same (header) shape with the same seed, so the
crop distribution is not just alike but the same window; the tests compare the pixels.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf.data.preprocessing import (
    decode_image,
    normalize,
    preprocess_encoded_for_train,
    preprocess_for_train,
)

SIZE = 32
# Measured over these 36 crops: 32 identical; at most 0.053 on the normalized scale (about
# 3.1 of 255 grey levels) on a few pixels at the window's edge, where libjpeg upsamples the
# chroma of a window differently from the whole image's (the plain bilinear resize passes
# such a pixel on unaveraged); mean difference at most 3.2e-4.
TOLERANCE = 0.06


def _photo(height, width, seed, fmt="JPEG"):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (97, 211)])
def test_jpeg_crop_window_equals_the_crop_of_the_decoded_image(shape):
    encoded = tf.constant(_photo(*shape, seed=shape[0]))
    worst = 0.0
    for s in range(12):
        seed = tf.constant([s, 7], tf.int64)
        fused = preprocess_encoded_for_train(encoded, SIZE, "imagenet", seed).numpy()
        whole = preprocess_for_train(decode_image(encoded), SIZE, "imagenet", seed).numpy()
        difference = np.abs(fused - whole)
        worst = max(worst, float(difference.max()))
        assert difference.mean() < 1e-3, (s, difference.mean())
    assert worst < TOLERANCE, worst


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_other_formats_take_the_whole_image_path(fmt):
    encoded = tf.constant(_photo(120, 90, seed=1, fmt=fmt))
    seed = tf.constant([3, 4], tf.int64)
    # The same ops, run as a graph (a call the branch makes): float32 rounding may differ.
    np.testing.assert_allclose(
        preprocess_encoded_for_train(encoded, SIZE, "imagenet", seed).numpy(),
        preprocess_for_train(decode_image(encoded), SIZE, "imagenet", seed).numpy(), atol=1e-6)


def test_same_seed_same_crop_and_crops_vary_with_the_seed():
    encoded = tf.constant(_photo(375, 500, seed=2))
    outputs = [preprocess_encoded_for_train(encoded, SIZE, "imagenet",
                                            tf.constant([s, 0], tf.int64)).numpy()
               for s in (0, 0, 1)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.abs(outputs[0] - outputs[2]).mean() > 0.05


def test_a_jpeg_declaring_too_many_pixels_is_refused_before_decoding():
    from resnet_tf.data.headers import MAX_IMAGE_PIXELS

    encoded = bytearray(_photo(64, 64, seed=5))
    # Rewrite the frame header (SOF0: FF C0, length, precision, height, width) to 15000^2.
    sof = encoded.index(b"\xff\xc0")
    encoded[sof + 5:sof + 9] = (15000).to_bytes(2, "big") * 2
    assert 15000 * 15000 > MAX_IMAGE_PIXELS
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the limit"):
        preprocess_encoded_for_train(tf.constant(bytes(encoded)), SIZE, "imagenet",
                                     tf.constant([0, 0], tf.int64))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_training_crops_are_on_the_evaluation_input_scale(fmt):
    # One colour everywhere: whatever the crop, resize and flip, every output pixel is the
    # colour normalized as evaluation normalizes it.
    colour = np.array([200, 30, 120], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(colour, (60, 80, 3)).copy()).save(buffer, fmt)
    encoded = tf.constant(buffer.getvalue())
    decoded = decode_image(encoded)
    expected = normalize(decoded[:1, :1]).numpy()[0, 0]
    for s in range(3):
        seed = tf.constant([s, 1], tf.int64)
        for image in (preprocess_encoded_for_train(encoded, SIZE, "imagenet", seed),
                      preprocess_for_train(decoded, SIZE, "imagenet", seed)):
            np.testing.assert_allclose(image.numpy().reshape(-1, 3),
                                       np.broadcast_to(expected, (SIZE * SIZE, 3)), atol=1e-5)


def test_a_streamed_folder_of_jpegs_and_pngs_repeats_with_its_seed(tmp_path):
    from resnet_tf.data import load_data

    for i in range(8):  # JPEGs take the fused crop, PNGs the whole-image branch
        fmt = "JPEG" if i % 4 else "PNG"
        folder = tmp_path / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i}.{fmt.lower()}").write_bytes(_photo(90 + 7 * i, 120, seed=i, fmt=fmt))

    def batches(seed):
        data = load_data(data_dir=tmp_path, image_size=72, preset="imagenet", batch_size=4,
                         cache=False, deterministic=True, seed=seed)
        return [images.numpy() for images, _ in data.train]

    first, second, other = batches(3), batches(3), batches(4)
    assert len(first) == 2 and first[0].shape == (4, 72, 72, 3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
