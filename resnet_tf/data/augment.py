"""Training augmentation beyond crop and flip: RandAugment, AugMix, MixUp, CutMix and random
erasing, applied per batch inside `tf.data` (issue 13).

`load_data(augment=..., mixup=..., cutmix=..., random_erasing=...)` builds one
`BatchAugmenter` from these arguments. The pipeline hands it each batch after the basic
crop and flip, as float32 pixels in 0..255 (or normalized, on the per-image path), and it
returns normalized float32 images and, when MixUp or CutMix is on, float32 one-hot labels
`[B, classes]` whose rows are the mixing weights (sum 1). Order, as timm and torchvision
apply them: crop/flip -> RandAugment or AugMix (0..255 pixels) -> normalize -> random
erasing -> MixUp or CutMix (one of the two per batch, probability 0.5 each, when both
are on).

The pixel operations are Keras' own layers (`keras.layers.RandomShear`, ...,
`Equalization`, `MixUp`, `CutMix`, `RandomErasing`), called through their
`get_random_transformation` / `transform_images` methods with a seed derived from the
batch's own `[2]` seed, so that the same seed gives the same batch even from a parallel
`map` (each layer's built-in seed generator is a variable that parallel calls race on:
two runs of `keras.layers.MixUp(seed=1)` in a `map(num_parallel_calls=AUTOTUNE)` differ,
sequential ones agree). What is not Keras' and why (measured on a 2-core EPYC, batches
of 128 CIFAR images; `benchmarks/pipeline_overhead.py`, results in
`benchmarks/results/pipeline.json`):

- RandAugment: `keras.layers.RandAugment` applies all 11 operations twice to every batch
  and keeps the chosen one with `where`: 1.12 CPU ms per image on top of the basic
  pipeline, 41 % of what ResNet-20 itself takes to train (2.74 ms), about 30 % overhead
  when both share the cores. It also picks the operations once per batch rather than
  per image, and with its default `factor=0.5` rotates by 0 to +180 degrees, translates
  by 0 to +50 % in one direction only and only brightens. `RandAugment` below picks 2
  operations per image, runs each operation on just the images that drew it (0.087 CPU
  ms per image, 13 x less; 4.8 % overhead) and draws symmetric strengths at half of
  torchvision's maxima.
- AugMix: `keras.layers.AugMix` draws its chains with Python's `random.choice`, which
  inside `tf.data` runs once, at tracing: every batch of the whole run gets the same
  operation chain (9 draws for 32 batches). `AugMix` below draws the chains, depths
  (1 to 3) and the Dirichlet and Beta mixing weights per image.
- CutMix: Keras' label weight is the continuous box area, not the pasted pixels (off by
  1.1 points on average and up to 6 points at 32 px); the weight here is the exact
  fraction of pasted pixels, as timm's `correct_lam`. Keras also caps its `factor`
  (the Beta alpha range) at 1; alphas above 1 are set directly.
"""

import dataclasses
import math
import numbers

import keras
import tensorflow as tf

from resnet_tf.data.preprocessing import CIFAR_PAD, MEAN, STD, normalize
from resnet_tf.errors import DataError

POLICIES = ("none", "basic", "randaugment", "augmix", "trivialaugment")

RANDAUGMENT_OPS = 2
RANDAUGMENT_MAGNITUDE = 0.5  # keras.layers.RandAugment's default `factor`
AUGMIX_MAGNITUDE = 0.3  # keras.layers.AugMix's default `factor` (the paper's severity 3)
AUGMIX_CHAINS = 3
AUGMIX_MAX_DEPTH = 3
AUGMIX_ALPHA = 1.0

# The value range of normalized pixels, for random erasing's noise fill.
_NORMALIZED_RANGE = (
    min(-m / s for m, s in zip(MEAN, STD)),
    max((1 - m) / s for m, s in zip(MEAN, STD)),
)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A validated training augmentation.

    Attributes:
        policy: `"none"`, `"basic"` (crop and flip), `"randaugment"`, `"augmix"` or
            `"trivialaugment"` (each after the basic crop and flip).
        mixup: MixUp's Beta alpha; 0 is off.
        cutmix: CutMix's Beta alpha; 0 is off.
        random_erasing: probability of erasing a rectangle of each image; 0 is off.
        crop_padding: the "cifar" preset's zero padding (pixels per side) before its
            random crop; the "imagenet" preset's random-resized crop ignores it.
    """

    policy: str = "basic"
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0
    crop_padding: int = CIFAR_PAD

    @property
    def crop_flip(self):
        """Whether the basic random crop and flip run (every policy but `"none"`)."""
        return self.policy != "none"

    @property
    def one_hot_labels(self):
        """Whether the training labels are one-hot float32 (MixUp or CutMix on)."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def per_batch(self):
        """Whether anything runs after the crop and flip."""
        pixels = self.policy in ("randaugment", "augmix", "trivialaugment")
        return pixels or self.random_erasing > 0 or self.one_hot_labels


def check_augmentation(augment=True, mixup=0.0, cutmix=0.0, random_erasing=0.0,
                       crop_padding=CIFAR_PAD):
    """Validates `load_data`'s augmentation arguments into an `Augmentation`.

    `augment`: `True` (= `"basic"`), `False` (= `"none"`) or one of `POLICIES`.
    """
    if augment is True or augment is False:
        policy = "basic" if augment else "none"
    elif isinstance(augment, str) and augment in POLICIES:
        policy = augment
    else:
        raise DataError(
            f"Unknown augmentation policy. Received: augment={augment!r}; expected True, "
            f"False or one of {', '.join(repr(p) for p in POLICIES)}."
        )
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if not _is_number(value) or not 0 <= value < math.inf:
            raise DataError(
                f"{name} is a Beta-distribution alpha. Received: {name}={value!r}; expected "
                f"a finite number >= 0 (0 turns it off), e.g. {name}=1.0."
            )
    if not _is_number(random_erasing) or not 0 <= random_erasing <= 1:
        raise DataError(
            f"random_erasing is a probability. Received: random_erasing={random_erasing!r}; "
            "expected a number in [0, 1] (0 turns it off), e.g. random_erasing=0.25."
        )
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, numbers.Integral) or crop_padding < 0:
        raise DataError(
            f"crop_padding is a number of pixels. Received: crop_padding={crop_padding!r}; "
            "expected an integer >= 0 (0: no random crop, only the flip), e.g. crop_padding=4."
        )
    return Augmentation(policy, float(mixup), float(cutmix), float(random_erasing),
                        int(crop_padding))


def check_classes(augmentation, class_names):
    """MixUp and CutMix mix two classes: refuses them for a dataset of one class."""
    if augmentation.one_hot_labels and len(class_names) < 2:
        raise DataError(
            f"MixUp and CutMix mix the labels of two classes. Received: "
            f"mixup={augmentation.mixup:g}, cutmix={augmentation.cutmix:g} for a dataset of "
            f"{len(class_names)} class ({', '.join(map(repr, class_names))}); expected "
            "mixup=0 and cutmix=0, or at least 2 classes."
        )


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Seeds(keras.random.SeedGenerator):
    """Hands Keras' random ops a fresh stateless seed per draw, derived from one `[2]` seed.

    Keras' random functions take a `keras.random.SeedGenerator` and call its `next()`;
    this one folds a trace-time counter into the batch's seed instead of reading and
    updating a variable, so a parallel `map` stays reproducible.
    """

    def __init__(self, seed):  # No variable, unlike the base class: nothing to race on.
        self._seed, self._count = seed, 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._count)


def _fold(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


# --- RandAugment and AugMix: Keras' pixel operations, drawn per image ----------------------


class _PixelOps:
    """Keras' 11 RandAugment/AugMix operations, with symmetric strengths.

    `magnitude` scales torchvision's maxima (shear 0.3, translation 45 % of the size,
    rotation 30 degrees, contrast/colour/sharpness 0.9, posterize to 4 bits, solarize from
    threshold 0); brightness shifts by up to 0.4 x 255 x magnitude. Each image draws its
    strength uniformly up to the maximum, in either direction, as Keras' layers do.
    """

    def __init__(self, magnitude):
        layers, m = keras.layers, magnitude
        # float32 whatever the global (mixed) precision policy: these run in tf.data.
        geometric = dict(dtype="float32")
        pixels = dict(value_range=(0, 255), dtype="float32")
        self.magnitude = m
        self.layers = [
            layers.RandomShear(x_factor=0.3 * m, y_factor=0.3 * m, **geometric),
            layers.RandomTranslation(0.45 * m, 0.45 * m, **geometric),
            layers.RandomRotation(30 * m / 360, **geometric),
            layers.RandomBrightness(0.4 * m, **pixels),
            layers.RandomColorDegeneration(0.9 * m, **pixels),
            layers.RandomContrast(0.9 * m, **pixels),
            # Keras' sharpness factor is 2 x the draw: 1 is the identity.
            layers.RandomSharpness((0.5 - 0.45 * m, 0.5 + 0.45 * m), **pixels),
            layers.RandomPosterization((8 - max(1, round(4 * m)), 8), **pixels),
            layers.Solarization(**pixels),
            layers.AutoContrast(**pixels),
            layers.Equalization(**pixels),
        ]
        for layer in self.layers:
            # The layers run in tf.data whatever Keras' backend (DataLayer does this per call).
            layer.backend.set_backend("tensorflow")

    def __len__(self):
        return len(self.layers)

    def _apply(self, index, images, seed):
        """Operation `index` on a batch (which may be empty) of float32 0..255 images."""
        layer, seeds = self.layers[index], _Seeds(seed)

        def run():
            if isinstance(layer, str):  # torchvision's multiplicative brightness, saturation
                return _scale_op(layer, images, self.magnitude, seeds.next())
            if isinstance(layer, keras.layers.Solarization):
                # Keras' Solarization draws thresholds from [0, threshold_factor x 255];
                # RandAugment's solarize inverts the pixels above 255 x (1 - m) .. 255.
                shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
                low = getattr(self, "solarize_from", 255.0 * (1.0 - self.magnitude))
                transform = {
                    "additions": tf.zeros(shape),
                    "thresholds": tf.random.stateless_uniform(shape, seeds.next(), low, 255.0),
                }
            else:
                transform = layer.get_random_transformation(images, training=True, seed=seeds)
            return tf.cast(layer.transform_images(images, transform, training=True), tf.float32)

        # Equalization fails on an empty batch; the others need not run on one.
        return tf.cond(tf.size(images) > 0, run, lambda: images)

    def apply(self, images, choices, seed):
        """Applies operations `choices[0, i]`, `choices[1, i]`, ... to image `i`.

        `choices`: int32 `[steps, B]`; `len(self)` means "no operation". Each step runs
        each operation once, on just the images that drew it, inside a `tf.while_loop`:
        the graph holds the 11 operations once whatever the number of steps (unrolled,
        AugMix's 9 steps took 10-20 s to set up at every epoch's first batch).
        """
        count = len(self) + 1

        def step(i, images):
            choice, step_seed = choices[i], _fold(seed, i)
            indices = tf.dynamic_partition(tf.range(tf.shape(images)[0]), choice, count)
            parts = tf.dynamic_partition(images, choice, count)
            done = [self._apply(k, part, _fold(step_seed, k)) for k, part in enumerate(parts[:-1])]
            stitched = tf.dynamic_stitch(indices, done + parts[-1:])
            return i + 1, tf.ensure_shape(stitched, images.shape)

        _, images = tf.while_loop(lambda i, _: i < tf.shape(choices)[0], step, (tf.constant(0), images))
        return images


def _scale_op(name, images, magnitude, seed):
    """torchvision's `adjust_brightness` / `adjust_saturation` by a factor 1 +- magnitude
    drawn per image: a blend with black or with the image's grey."""
    shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
    factor = 1.0 + tf.random.stateless_uniform(shape, seed, -magnitude, magnitude)
    base = 0.0 if name == "brightness" else tf.image.rgb_to_grayscale(images)
    return tf.clip_by_value(base + factor * (images - base), 0.0, 255.0)


class _WidePixelOps(_PixelOps):
    """TrivialAugmentWide's 13 operations at torchvision's "wide" maxima (`num_bins=31`):
    shear 0.99 and rotation 135 degrees (nearest pixel, black fill, as torchvision),
    translation 32 pixels, brightness, saturation, contrast and sharpness by a factor of
    1 +- 0.99, posterize to 2-8 bits, solarize from any threshold, autocontrast, equalize.
    X and Y shears and translations are separate operations, as in torchvision."""

    def __init__(self, image_size):
        layers = keras.layers
        geometric = dict(dtype="float32", fill_mode="constant", fill_value=0.0,
                         interpolation="nearest")
        pixels = dict(value_range=(0, 255), dtype="float32")
        shift = min(32.0 / image_size, 1.0)
        self.magnitude = 0.99
        self.solarize_from = 0.0  # thresholds 0..255, torchvision's linspace(255, 0)
        self.layers = [
            layers.RandomShear(x_factor=0.99, y_factor=0.0, **geometric),
            layers.RandomShear(x_factor=0.0, y_factor=0.99, **geometric),
            layers.RandomTranslation(0.0, shift, **geometric),
            layers.RandomTranslation(shift, 0.0, **geometric),
            layers.RandomRotation(135 / 360, **geometric),
            "brightness",
            "saturation",
            layers.RandomContrast(0.99, **pixels),
            layers.RandomSharpness((0.005, 0.995), **pixels),  # Keras doubles the draw
            layers.RandomPosterization((2, 8), **pixels),
            layers.Solarization(**pixels),
            layers.AutoContrast(**pixels),
            layers.Equalization(**pixels),
        ]
        for layer in self.layers:
            if not isinstance(layer, str):
                layer.backend.set_backend("tensorflow")


class TrivialAugmentWide:
    """TrivialAugmentWide (Müller and Hutter 2021), as torchvision's `TrivialAugmentWide`:
    per image, one of 14 operations (the 13 of `_WidePixelOps` or the identity) with a
    strength drawn uniformly up to the wide maximum, in either direction where signed.
    torchvision draws the strength from 31 bins; here it is continuous."""

    def __init__(self):
        self._ops = {}

    def __call__(self, images, seed):
        size = images.shape[2]
        if size not in self._ops:
            self._ops[size] = _WidePixelOps(size)
        ops = self._ops[size]
        # len(ops) is "no operation": the identity, the 14th choice.
        choices = tf.random.stateless_uniform([1, tf.shape(images)[0]], _fold(seed, 1), 0,
                                              len(ops) + 1, tf.int32)
        return ops.apply(images, choices, _fold(seed, 2))


class RandAugment:
    """RandAugment (Cubuk et al. 2020): `num_ops` operations per image, each drawn uniformly
    from Keras' 11, per image, at `magnitude` (see `_PixelOps`)."""

    def __init__(self, num_ops=RANDAUGMENT_OPS, magnitude=RANDAUGMENT_MAGNITUDE):
        self.num_ops = num_ops
        self.ops = _PixelOps(magnitude)

    def __call__(self, images, seed):
        """float32 `[B, H, W, 3]` pixels in 0..255 -> the same, augmented."""
        shape = [self.num_ops, tf.shape(images)[0]]
        choices = tf.random.stateless_uniform(shape, _fold(seed, 1), 0, len(self.ops), tf.int32)
        return self.ops.apply(images, choices, _fold(seed, 2))


class AugMix:
    """AugMix (Hendrycks et al. 2020), without its Jensen-Shannon consistency loss: per
    image, `chains` chains of 1 to `max_depth` operations (Keras' 11, at `magnitude`),
    mixed with Dirichlet(alpha) weights, then blended with the image by Beta(alpha, alpha).
    """

    def __init__(
        self,
        chains=AUGMIX_CHAINS,
        max_depth=AUGMIX_MAX_DEPTH,
        magnitude=AUGMIX_MAGNITUDE,
        alpha=AUGMIX_ALPHA,
    ):
        self.chains, self.max_depth, self.alpha = chains, max_depth, alpha
        self.ops = _PixelOps(magnitude)

    def __call__(self, images, seed):
        batch = tf.shape(images)[0]
        # The chains run side by side as one batch of `chains x B` images.
        rows = self.chains * batch
        choices = tf.random.stateless_uniform(
            [self.max_depth, rows], _fold(seed, 1), 0, len(self.ops), tf.int32
        )
        depth = tf.random.stateless_uniform([rows], _fold(seed, 2), 1, self.max_depth + 1, tf.int32)
        past_depth = tf.range(self.max_depth)[:, None] >= depth
        choices = tf.where(past_depth, len(self.ops), choices)
        chained = self.ops.apply(tf.tile(images, [self.chains, 1, 1, 1]), choices, _fold(seed, 3))
        chained = tf.reshape(chained, tf.concat([[self.chains, batch], tf.shape(images)[1:]], 0))
        weights = _dirichlet([batch, self.chains], self.alpha, _fold(seed, 4))
        mixed = tf.einsum("bc,cbhwk->bhwk", weights, chained)
        keep = _dirichlet([batch, 2], self.alpha, _fold(seed, 5))[:, :1, None, None]  # Beta(a, a)
        return tf.clip_by_value(keep * images + (1.0 - keep) * mixed, 0.0, 255.0)


def _dirichlet(shape, alpha, seed):
    gamma = tf.random.stateless_gamma(shape, seed, alpha=alpha)
    return gamma / tf.reduce_sum(gamma, axis=-1, keepdims=True)


# --- The batch augmenter -------------------------------------------------------------------


class BatchAugmenter:
    """Everything after the crop and flip, for one `Augmentation` and number of classes.

    `augmenter(images, labels, seed, normalized=False)`: float32 `[B, S, S, 3]` images
    (pixels in 0..255, or already normalized), int `[B]` labels and a `[2]` seed ->
    normalized float32 images and labels: int `[B]` as given, or float32 `[B, classes]`
    mixed one-hot when MixUp or CutMix is on. The same seed gives the same result.
    """

    def __init__(self, augmentation, classes):
        self.augmentation, self.classes = augmentation, classes
        policy = augmentation.policy
        self.pixels = {"randaugment": RandAugment, "augmix": AugMix,
                       "trivialaugment": TrivialAugmentWide}.get(policy, lambda: None)()
        self.erasing = None
        if augmentation.random_erasing:
            p = augmentation.random_erasing
            # `factor=(p, p)`: a single float p would draw each image's probability from
            # [0, p]. The fill is Keras' noise (a normal scaled to the range), clipped to the
            # range of normalized pixels.
            self.erasing = keras.layers.RandomErasing(
                factor=(p, p), value_range=_NORMALIZED_RANGE, dtype="float32"
            )
        self.mixup = self.cutmix = None
        if augmentation.mixup:
            self.mixup = keras.layers.MixUp(alpha=augmentation.mixup, dtype="float32")
        if augmentation.cutmix:
            self.cutmix = keras.layers.CutMix(dtype="float32")
            # CutMix draws its alpha from `factor`, which Keras caps at 1: set it directly.
            self.cutmix.factor = (augmentation.cutmix, augmentation.cutmix)
        for layer in (self.erasing, self.mixup, self.cutmix):
            if layer is not None:
                layer.backend.set_backend("tensorflow")

    def __call__(self, images, labels, seed, normalized=False):
        images = tf.cast(images, tf.float32)
        if self.pixels is not None:
            if normalized:
                images = _denormalize(images)
            images, normalized = self.pixels(images, _fold(seed, 1)), False
        if not normalized:
            images = normalize(images)
        if self.erasing is not None:
            transform = self.erasing.get_random_transformation(
                images, training=True, seed=_Seeds(_fold(seed, 2))
            )
            images = self.erasing.transform_images(images, transform, training=True)
        if self.augmentation.one_hot_labels:
            labels = tf.one_hot(labels, self.classes, dtype=tf.float32)
            images, labels = self._mix(images, labels, _fold(seed, 3))
        return images, labels

    def _mix(self, images, labels, seed):
        def mixup():
            seeds = _Seeds(_fold(seed, 1))
            transform = self.mixup.get_random_transformation(images, training=True, seed=seeds)
            return (
                self.mixup.transform_images(images, transform, training=True),
                self.mixup.transform_labels(labels, transform, training=True),
            )

        def cutmix():
            seeds = _Seeds(_fold(seed, 2))
            transform = self.cutmix.get_random_transformation(images, training=True, seed=seeds)
            # The weight of the own label is the fraction of pixels not pasted over.
            pasted = tf.cast(transform["batch_masks"], tf.float32)
            transform["mix_weight"] = 1.0 - tf.reduce_mean(pasted, axis=[1, 2, 3])
            return (
                self.cutmix.transform_images(images, transform, training=True),
                self.cutmix.transform_labels(labels, transform, training=True),
            )

        if self.mixup is None:
            return cutmix()
        if self.cutmix is None:
            return mixup()
        use_mixup = tf.random.stateless_uniform([], _fold(seed, 0)) < 0.5
        return tf.cond(use_mixup, mixup, cutmix)

    def map_batches(self, dataset, seed):
        """Applies itself to a dataset of normalized `(images, labels)` batches.

        Each batch draws its own `[2]` seed from `seed` (`None`: random), as the
        per-image augmentation does, so a parallel map stays reproducible.
        """
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, batch_seed: self(*batch, batch_seed, normalized=True),
            num_parallel_calls=tf.data.AUTOTUNE,
        )


def batch_augmenter(augmentation, classes):
    """A `BatchAugmenter`, or `None` when nothing runs after the crop and flip."""
    return BatchAugmenter(augmentation, classes) if augmentation.per_batch else None


def _denormalize(images):
    """The inverse of `normalize`: normalized float32 back to pixels in 0..255."""
    mean = tf.constant([255.0 * m for m in MEAN], tf.float32)
    std = tf.constant([255.0 * s for s in STD], tf.float32)
    return tf.clip_by_value(images * std + mean, 0.0, 255.0)
