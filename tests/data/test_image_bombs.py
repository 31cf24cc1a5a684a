"""Issue 30: one image-safety check for every path that decodes.

A decompression bomb is a small file whose header declares a huge image. Every decode
(`decode_image`: image folders in memory and streamed, evaluation, prediction, Grad-CAM,
the serving export) reads the pixel count from the headers first (`decoded_pixels`,
every GIF frame counted) and refuses more than `MAX_IMAGE_PIXELS` before decoding.
"""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from resnet_tf.data import decode_image, load_data
from resnet_tf.data.headers import MAX_IMAGE_PIXELS, decoded_pixels

LIMIT = f"image is larger than the limit of {MAX_IMAGE_PIXELS} pixels"


def png_bomb(width=15000, height=15000):
    """A valid grey PNG of `width` x `height` zeros: about 220 KB for 15000 x 15000."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def gif_bomb(screen=(1, 1), frame=(20000, 20000)):
    """A GIF whose logical screen is `screen` but whose one frame is `frame`."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x4c\x01\x00"
    return out + b"\x3b"


@pytest.fixture(scope="module")
def bombs():
    return {"png_15000x15000.png": png_bomb(), "gif_1x1_screen_20000x20000_frame.gif": gif_bomb()}


def test_png_declaring_15000x15000_is_refused_before_decoding(bombs):
    encoded = bombs["png_15000x15000.png"]
    assert len(encoded) < 300_000
    assert int(decoded_pixels(tf.constant(encoded))) == 15000 * 15000
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{LIMIT}; decoding it needs "
                                                             "225000000"):
        decode_image(encoded)


def test_gif_with_a_1x1_screen_and_a_20000x20000_frame_is_refused(bombs):
    encoded = bombs["gif_1x1_screen_20000x20000_frame.gif"]
    assert int(decoded_pixels(tf.constant(encoded))) == 20000 * 20000
    with pytest.raises(tf.errors.InvalidArgumentError, match=LIMIT):
        decode_image(encoded)


def test_every_gif_frame_counts_as_tensorflow_decodes_it():
    frames = [Image.fromarray(np.full((30, 20, 3), v, np.uint8)) for v in (0, 120, 250)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    encoded = buffer.getvalue()
    decoded = tf.io.decode_gif(encoded)
    assert int(decoded_pixels(tf.constant(encoded))) == int(np.prod(decoded.shape[:3]))
    assert decode_image(encoded).shape == (30, 20, 3)  # a real GIF still decodes


def test_limit_holds_in_graphs_as_in_eager_code(bombs):
    decode = tf.function(decode_image, input_signature=[tf.TensorSpec([], tf.string)])
    for encoded in bombs.values():
        with pytest.raises(tf.errors.InvalidArgumentError, match=LIMIT):
            decode(tf.constant(encoded))


@pytest.mark.parametrize("cache", [True, False], ids=["in-memory", "streamed"])
def test_bombs_in_a_training_folder_are_skipped_and_named(image_folder_factory, bombs, cache):
    import os

    root = image_folder_factory(classes=("a", "b"), per_class=3, size=8)
    for name, encoded in bombs.items():
        with open(os.path.join(root, "a", name), "wb") as f:
            f.write(encoded)
    if cache:
        with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image files in .*\(corrupt, "
                          r"or larger than 50000000 pixels\): .*gif_1x1_screen.*png_15000"):
            result = load_data(data_dir=root, batch_size=2, augment=False, val_split=0)
        assert (result.skipped_files, result.train_examples) == (2, 6)
    else:
        result = load_data(data_dir=root, batch_size=2, augment=False, val_split=0, cache=False)
    images = [x for x, _ in result.train.unbatch()]
    assert len(images) == 6 and all(tuple(x.shape) == (8, 8, 3) for x in images)


def test_serving_refuses_the_bombs_before_decoding(tmp_path, tiny_resnet, bombs):
    from resnet_tf.export import export_serving_model

    path = export_serving_model(tiny_resnet(classes=2, size=8), str(tmp_path), top_k=1,
                                class_names=["a", "b"], image_size=8, preset="cifar")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    for encoded in bombs.values():
        with pytest.raises(tf.errors.InvalidArgumentError, match=LIMIT):
            serve(image_bytes=tf.constant([encoded]))
