"""Generated image folders for examples and tests: patterns that differ only in shape.

    from resnet_tf.data.patterns import make_pattern_folder
    make_pattern_folder("train/", ["disc", "stripes_h"], per_class=80)

Every image has random colours (foreground and a contrasting background) and noise, so a
network must learn the shape: small enough to train in seconds, hard enough that the
accuracy means something.
"""

import os

import numpy as np
from PIL import Image

from resnet_tf.errors import DataError

PATTERNS = ("checkerboard", "cross", "disc", "dots", "ring", "stripes_d", "stripes_h", "stripes_v")


def pattern_mask(name, x, y, rng):
    """A boolean image of pattern `name` with a random frequency, phase and position.

    Args:
        name: str. One of `PATTERNS`.
        x, y: float arrays. Pixel coordinates in [0, 1), as from `np.mgrid`.
        rng: `np.random.Generator`.
    """
    f, phase = rng.uniform(2, 4), rng.uniform(0, 1)
    cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)

    def wave(t, level=0.0):
        return np.sin(2 * np.pi * (f * t + phase)) > level

    masks = {
        "stripes_h": lambda: wave(y),
        "stripes_v": lambda: wave(x),
        "stripes_d": lambda: wave((x + y) / 1.4),
        "checkerboard": lambda: wave(x) ^ wave(y),
        "disc": lambda: (x - cx) ** 2 + (y - cy) ** 2 < r**2,
        "ring": lambda: np.abs(np.hypot(x - cx, y - cy) - r) < 0.06,
        "cross": lambda: (np.abs(x - cx) < 0.08) | (np.abs(y - cy) < 0.08),
        "dots": lambda: wave(x, 0.6) & wave(y, 0.6),
    }
    if name not in masks:
        raise DataError(f"Unknown pattern. Received: name={name!r}; expected one of {', '.join(PATTERNS)}.")
    return masks[name]()


def make_pattern_folder(root, classes, per_class, size=32, seed=0):
    """Writes `per_class` JPEG images of each pattern to `root/<class>/`.

    Args:
        root: str. Folder to write into (created if missing).
        classes: list of str. Pattern names from `PATTERNS`, one sub-folder each.
        per_class: int. Images per class.
        size: int. Height and width in pixels.
        seed: int. The same seed writes the same images.

    Returns:
        str. `root`, ready for `--data-dir`.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            mask = pattern_mask(name, x, y, rng)[..., None]
            foreground = rng.integers(0, 256, 3)
            background = (foreground + rng.integers(80, 177, 3)) % 256  # always contrasting
            image = np.where(mask, foreground, background) + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                os.path.join(root, name, f"{i:04d}.jpg"), quality=90)
    return root
