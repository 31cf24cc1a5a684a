"""How an image becomes a network's input at evaluation: one `EvalTransform`.

torchvision's `weights.transforms()` and timm's `pretrained_cfg` are what make published
accuracies reproducible: resize, centre crop, interpolation and normalisation travel with
the weights. Here they are one frozen object, kept by the model it belongs to (the
`ResNet`'s config, so its `.keras` file) and by the run folder (config.json), and applied
by evaluation, prediction, Grad-CAM, the SavedModel and a run's validation
(`resnet_tf.data.preprocessing.preprocess_for_eval`).

- A registered weights name carries its source's transform (`registry.WEIGHTS[name]
  .preprocessing` is one).
- A model trained by `train.py` carries its run's: the preset's ("cifar": the whole image
  resized to the crop; "imagenet": the shorter side resized to `round(S / 0.875)`, the
  central `S x S` crop), or, with `--weights`, the weights' own at the run's size.

The arithmetic is torchvision's: the shorter side becomes `resize` and the longer
`int(resize * long / short)`; the crop's offset is `round((side - crop) / 2)`.
"""

import dataclasses
import math

from resnet_tf.models.normalization import MEAN, STD
from resnet_tf.models.spec import find_resnet

INTERPOLATIONS = ("bilinear", "bicubic")
MODES = ("torch", "caffe")
# The "imagenet" preset's centre crop: 87.5 % of the resized shorter side.
CENTER_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Resize, centre crop, interpolation and normalisation of evaluation, as one object.

    Attributes:
        mode: str. "torch" (RGB on [0, 1], then `(x - mean) / std`) or "caffe" (BGR,
            0..255, `mean` subtracted: keras.applications' `preprocess_input`).
        mean: tuple of 3 floats, per channel in the order and scale of `mode`.
        std: tuple of 3 floats, or None for "caffe".
        resize: int or None. The shorter side before the centre crop; None resizes the
            whole image to `crop x crop` (the "cifar" preset: no crop).
        crop: int. Side of the square the network sees.
        interpolation: str. "bilinear" or "bicubic" (antialiased, as PIL resizes).
    """

    mode: str
    mean: tuple
    std: tuple | None
    resize: int | None
    crop: int
    interpolation: str = "bilinear"

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode={self.mode!r} (expected one of {', '.join(MODES)})")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation={self.interpolation!r} (expected one of "
                            f"{', '.join(INTERPOLATIONS)})")
        for key in ("crop", "resize"):
            value = getattr(self, key)
            if value is None and key == "resize":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key}={value!r} (expected a positive integer)")
        if not problems and self.resize is not None and self.resize < self.crop:
            problems.append(f"resize={self.resize} smaller than crop={self.crop} "
                            "(expected resize >= crop)")
        if problems:
            raise ValueError(f"Invalid evaluation transform. Received: {'; '.join(problems)}.")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        if self.std is not None:
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def for_preset(cls, preset, size):
        """The transform of a resnet_tf preset ("cifar" or "imagenet") at `size` px,
        normalised with resnet_tf's standard `MEAN` and `STD`."""
        if preset not in ("cifar", "imagenet"):
            raise ValueError(f"Unknown preset. Received: preset={preset!r}; expected 'cifar' "
                             "or 'imagenet'.")
        resize = None if preset == "cifar" else round(size / CENTER_CROP_FRACTION)
        return cls("torch", MEAN, STD, resize, int(size))

    @property
    def preset(self):
        """The resnet_tf preset whose geometry this is closest to: "cifar" without a crop,
        "imagenet" with one (what earlier versions recorded)."""
        return "cifar" if self.resize is None else "imagenet"

    @property
    def crop_fraction(self):
        """`crop / resize` (timm's `crop_pct`), 1.0 without a resize."""
        return 1.0 if self.resize is None else self.crop / self.resize

    @property
    def normalization(self):
        """What `normalization.preprocessing_layer` takes: `{"mode", "mean", "std"}`."""
        return {"mode": self.mode, "mean": self.mean, "std": self.std}

    def at_size(self, crop):
        """The same transform for a `crop` px network input: the crop fraction and
        interpolation kept, the resize `floor(crop / crop_fraction)` as timm scales it."""
        crop = int(crop)
        if crop == self.crop:
            return self
        resize = None if self.resize is None else max(crop, math.floor(
            crop * self.resize / self.crop + 1e-9))
        return dataclasses.replace(self, resize=resize, crop=crop)

    def describe(self):
        """One line: "resize 232 (bilinear), centre crop 224, (x/255 - mean) / std"."""
        geometry = (f"resize to {self.crop}x{self.crop} ({self.interpolation})"
                    if self.resize is None else
                    f"resize {self.resize} ({self.interpolation}), centre crop {self.crop}")
        scale = ("BGR 0..255 minus the Caffe means" if self.mode == "caffe" else
                 f"(x/255 - {_triple(self.mean)}) / {_triple(self.std)}")
        return f"{geometry}, {scale}"

    def get_config(self):
        """JSON-serialisable; `from_config` makes the same transform from it."""
        config = dataclasses.asdict(self)
        config["mean"] = list(self.mean)
        config["std"] = None if self.std is None else list(self.std)
        return config

    @classmethod
    def from_config(cls, config):
        """The transform of a `get_config` dict (or a transform, returned as it is).

        Raises:
            ValueError: not a transform's config.
        """
        if isinstance(config, cls):
            return config
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(config, dict) or not {"mode", "mean", "crop"} <= set(config):
            raise ValueError(f"Not an evaluation transform. Received: {config!r}; expected a "
                             f"dict with the keys {', '.join(sorted(names))}.")
        return cls(**{k: config.get(k) for k in names if k in config})


def _triple(values):
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def transform_of(model):
    """The `EvalTransform` a model carries, or None (a model that was not given one, or
    saved before models carried one). A model holding a ResNet as one of its layers
    answers with that ResNet's (`find_resnet`)."""
    found = getattr(find_resnet(model), "transform", None)
    return found if isinstance(found, EvalTransform) else None


def set_transform(model, transform):
    """Makes `model` (or the ResNet inside it) carry `transform` into its `.keras` file.

    Returns the model that carries it, or None when `model` holds no `ResNet` built by
    `build_resnet` (nothing else can store it)."""
    target = find_resnet(model)
    if target is None or not hasattr(target, "transform"):
        return None
    target.transform = None if transform is None else EvalTransform.from_config(transform)
    return target
