"""How many pixels decoding an image will allocate, read from its header before decoding.

`decode_image` refuses images above `MAX_IMAGE_PIXELS` with it, so training, evaluation,
prediction, Grad-CAM and the serving export share one limit against decompression bombs
(a small file that declares a huge image). Pure TF ops, so the SavedModel carries them.
Like `preprocessing`'s, these functions are not converted by AutoGraph (`do_not_convert`).
"""

import tensorflow as tf

# 50 MP is 8660 x 5773; phone and DSLR photos (12-48 MP) pass. Decoding and resizing take
# about 15 bytes per pixel (uint8, then float32), 750 MB for a 50 MP image.
MAX_IMAGE_PIXELS = 50_000_000
_HEADER_BYTES = 32


@tf.autograph.experimental.do_not_convert
def header_shape(contents):
    """(height, width) as int64 scalars read from an image's header; (-1, -1) for other formats.

    JPEG via `tf.io.extract_jpeg_shape` (which walks to the SOF marker); PNG, GIF, BMP
    and WebP (lossy, lossless and extended) from fixed header offsets. For a GIF this is
    the logical screen, which a frame may exceed (`decoded_pixels` counts the frames).
    """
    b = _bytes_at(contents, 0, _HEADER_BYTES)

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


@tf.autograph.experimental.do_not_convert
def decoded_pixels(contents):
    """The pixels decoding `contents` allocates (int64 scalar), from headers only; -1
    for an unrecognised format.

    height x width for JPEG, PNG, BMP and WebP. A GIF is decoded whole, every frame at
    the screen's size after giflib held each frame at its own size, so for a GIF this
    is the sum over its frames of the larger of the two: a 1 x 1 screen with one
    20000 x 20000 frame counts 400 million, as do 400 frames of a 1000 x 1000 screen.
    """
    height, width = header_shape(contents)
    is_gif = tf.equal(tf.strings.substr(contents, 0, 4), "GIF8")
    return tf.cond(is_gif, lambda: _gif_pixels(contents, height * width),
                   lambda: tf.where(height < 0, tf.constant(-1, tf.int64), height * width))


def _bytes_at(contents, offset, n):
    """`n` bytes of `contents` from `offset` as int64, zeros past its end."""
    head = tf.strings.substr(contents, offset, n)
    head = tf.strings.substr(tf.strings.join([head, "\0" * n]), 0, n)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


@tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)],
             autograph=False)
def _gif_pixels(contents, screen):
    """Walks a GIF's blocks (skipping data by the sub-block lengths) and sums, per image
    descriptor, max(frame width x height, `screen`); `screen` when it holds no frame."""
    size = tf.cast(tf.strings.length(contents), tf.int64)
    padded = tf.strings.join([contents, "\0" * 16])
    packed = _bytes_at(contents, 10, 1)[0]
    colour_table = _colour_table_bytes(packed)

    def step(pos, in_data, total, frames, done):
        b = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, pos, 10), tf.uint8), tf.int64)
        is_image = tf.logical_and(tf.logical_not(in_data), tf.equal(b[0], 0x2C))
        is_extension = tf.logical_and(tf.logical_not(in_data), tf.equal(b[0], 0x21))
        local = _colour_table_bytes(b[9])
        frame = (b[5] + 256 * b[6]) * (b[7] + 256 * b[8])
        new_pos = tf.where(in_data, pos + 1 + b[0],
                           tf.where(is_image, pos + 11 + local, pos + 2))
        ends = tf.logical_and(tf.logical_not(in_data), tf.logical_not(
            tf.logical_or(is_image, is_extension)))  # the trailer, or not a GIF block
        total += tf.cast(is_image, tf.int64) * tf.maximum(frame, screen)
        frames += tf.cast(is_image, tf.int64)
        in_data = tf.logical_or(tf.logical_and(in_data, b[0] > 0),
                                tf.logical_or(is_image, is_extension))
        return (new_pos, in_data, total, frames,
                tf.logical_or(ends, new_pos >= size))

    zero = tf.constant(0, tf.int64)
    _, _, total, frames, _ = tf.while_loop(
        lambda pos, in_data, total, frames, done: tf.logical_not(done), step,
        (13 + colour_table, tf.constant(False), zero, zero, 13 + colour_table >= size))
    return tf.where(frames > 0, total, screen)


def _colour_table_bytes(packed):
    """The size of the colour table a GIF descriptor's packed byte announces (or 0)."""
    entries = tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(packed, 7))
    return tf.cast(packed >= 128, tf.int64) * 3 * entries
