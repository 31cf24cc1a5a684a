"""Named pretrained weights: where each file lives, its hash, and how it was evaluated.

A name is "<source>:<architecture>.<tag>", the architecture and tag as the source
spells them: "torchvision:resnet50.IMAGENET1K_V2", "timm:resnet50.a1_in1k",
"keras:resnet50.imagenet". With the build_resnet arguments at hand the architecture
may be left out: "torchvision:IMAGENET1K_V2" with depth=50 is the first of those.

Every fact is the source's own, one source per family:
- torchvision: its `Weights` enums (models/resnet.py): file, hash, transform, acc@1.
- timm: the pretrained configs of timm 1.0.31 (models/resnet.py, models/resnetv2.py
  `default_cfgs`) for file and transform. Top-1 at the test size (`test_top1`, crop_pct
  1.0) is timm's results table, results/results-imagenet.csv of
  github.com/huggingface/pytorch-image-models at commit
  0173a139a2c66db3a41ebfe1d8ac4fb02483642e, which evaluates each model at its test
  size only; top-1 at the train size (`top1`) is therefore the model card's
  (huggingface.co/timm/<name>, "Model Comparison"), None where the card has none.
- keras.applications: its resnet.py (file, md5) and keras.io's accuracy table.

`download_weights` downloads a file once into the Keras cache and checks it before
use; `imagenet_file` fetches keras.applications' own files, the notop ones included,
into the same cache.
"""

import dataclasses
import difflib
import hashlib
import json
import os
import re
import struct
import tempfile
import zipfile

import keras

from resnet_tf.errors import WeightsDownloadError
from resnet_tf.files import socket_timeout
from resnet_tf.models.normalization import CAFFE_MEAN_BGR
from resnet_tf.models.normalization import MEAN as IMAGENET_MEAN
from resnet_tf.models.normalization import STD as IMAGENET_STD
from resnet_tf.models.spec import SPECS, STAGE_FILTERS, ResNetSpec
from resnet_tf.models.transform import EvalTransform

# keras.applications' published ResNet files (keras/src/applications/resnet.py,
# BASE_WEIGHTS_PATH and WEIGHTS_HASHES): md5 of the include_top and the notop file.
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_HASHES = {
    50: ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    152: ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}
_SAFETENSORS_MAX_HEADER = 100 * 2**20
_NAME = re.compile(r"^(?P<source>[a-z]+):(?:(?P<architecture>[\w]+)\.)?(?P<tag>[\w.]+)$")


# How the published accuracy was measured: resize, centre crop, interpolation and
# normalisation, the transform that travels with the weights (`transform.EvalTransform`).
Preprocessing = EvalTransform


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One published weights file and the facts that travel with it.

    Attributes:
        name: str. "<source>:<architecture>.<tag>".
        build: dict. The `build_resnet` arguments the file fits, "depth" included.
        url: str. Where the source publishes the file.
        file_name: str. Its name in the Keras cache (`$KERAS_HOME/models`).
        file_hash: str or None. Hex digest the file must have: a full SHA-256 (64
            characters), an MD5 (32; keras.applications publishes those) or the first
            8 characters of the SHA-256, all torchvision publishes (in the file name),
            checked as a prefix (torchvision's and timm's release files carry it in
            their name). None: the source publishes no hash (see `unpinned`); the
            file is then only checked to be complete.
        source: str. "torchvision", "timm" or "keras".
        licence: str. The licence the source states for the weights.
        top1: float or None. Published ImageNet-1k validation top-1 (%) with
            `preprocessing`; None if the source publishes none at that size (then
            `test_top1` is the published figure).
        preprocessing: Preprocessing. What `top1` was measured with.
        test_crop: int or None. timm's larger test resolution (no resize: crop_pct 1.0).
        test_top1: float or None. Published top-1 (%) at `test_crop`.
        unpinned: str or None. Why `url` may change under the same name and has no
            hash to check; None for a pinned file (`file_hash` set).
    """

    name: str
    build: dict
    url: str
    file_name: str
    file_hash: str | None
    source: str
    licence: str
    top1: float | None
    preprocessing: Preprocessing
    test_crop: int | None = None
    test_top1: float | None = None
    unpinned: str | None = None

    @property
    def architecture(self):
        return self.name.split(":", 1)[1].rsplit(".", 1)[0]

    @property
    def tag(self):
        return self.name.rsplit(".", 1)[1]

    @property
    def format(self):
        """"torch" (`torch.save`), "safetensors" or "legacy" (keras.applications' HDF5):
        what the file is, from its published name."""
        return {".pth": "torch", ".safetensors": "safetensors", ".h5": "legacy"}[
            os.path.splitext(self.file_name)[1]]


def _torchvision(architecture, tag, file_name, top1, build, resize):
    return PretrainedWeights(
        name=f"torchvision:{architecture}.{tag}",
        build=build,
        url=f"https://download.pytorch.org/models/{file_name}",
        file_name=file_name,
        file_hash=file_name.rsplit("-", 1)[1].split(".")[0],  # torch hub's SHA-256 prefix
        source="torchvision",
        licence="BSD-3-Clause (torchvision)",
        top1=top1,
        preprocessing=Preprocessing("torch", IMAGENET_MEAN, IMAGENET_STD, resize, 224,
                                    "bilinear"),
    )


# A file on the Hugging Face Hub is addressed by branch ("resolve/main"), which a new
# commit can change; the immutable commit hash is not published in timm's configs and
# cannot be looked up offline.
_HUB_UNPINNED = ("timm publishes this file only on the Hugging Face Hub at resolve/main "
                 "(a branch, no hash); it is only checked to be complete")


def _timm(architecture, tag, build, top1, test_top1, *, url=None, size=224, test_size=288,
          mean=IMAGENET_MEAN, std=IMAGENET_STD):
    # timm evaluates at `size` with crop_pct 0.95 (resize floor(size / 0.95)) and at
    # `test_size` with crop_pct 1.0. `url`: the GitHub release file of timm's config,
    # named "<name>-<first 8 hex digits of its SHA-256>.pth" by timm's
    # clean_checkpoint.py; an asset that cannot change unnoticed, unlike the Hub's branch.
    if url is None:
        url = f"https://huggingface.co/timm/{architecture}.{tag}/resolve/main/model.safetensors"
        file_name, file_hash = f"timm_{architecture}.{tag}.safetensors", None
    else:
        file_name = url.rsplit("/", 1)[1]
        file_hash = file_name.rsplit("-", 1)[1].split(".")[0]
    return PretrainedWeights(
        name=f"timm:{architecture}.{tag}",
        build=build,
        url=url,
        file_name=file_name,
        file_hash=file_hash,
        source="timm",
        licence="Apache-2.0 (timm model card)",
        top1=top1,
        preprocessing=Preprocessing("torch", mean, std, int(size / 0.95), size, "bicubic"),
        test_crop=test_size,
        test_top1=test_top1,
        unpinned=None if file_hash else _HUB_UNPINNED,
    )


def _imagenet_file_name(depth, include_top=True):
    suffix = "" if include_top else "_notop"
    return f"resnet{depth}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"


def _keras(depth, top1):
    file_name = _imagenet_file_name(depth)
    return PretrainedWeights(
        name=f"keras:resnet{depth}.imagenet",
        build=dict(depth=depth, variant="v1"),
        url=IMAGENET_URL + file_name,
        file_name=file_name,
        file_hash=IMAGENET_HASHES[depth][0],
        source="keras",
        licence="MIT (keras-applications; Kaiming He's Caffe models)",
        top1=top1,
        # Keras documents a single 224 centre crop, not the resize before it: the
        # standard 256 (bilinear) of its era's ImageNet evaluations, as the "imagenet" preset.
        preprocessing=Preprocessing("caffe", CAFFE_MEAN_BGR, None, 256, 224, "bilinear"),
    )


_RESNEXT50 = dict(depth=50, groups=32, width_per_group=4)
# timm's "ResNet strikes back" release, as its cfgs spell it: under the repository's
# old name for some files, its new one for others (GitHub redirects the old one).
_RSB_RW = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-rsb-weights/"
_RSB_HF = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights/"
_ENTRIES = (
    # torchvision.models.resnet: url, acc@1, transforms (resize 256 for V1, 232 for V2).
    _torchvision("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758,
                 dict(depth=18), 256),
    _torchvision("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314,
                 dict(depth=34), 256),
    _torchvision("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.13,
                 dict(depth=50), 256),
    _torchvision("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 80.858,
                 dict(depth=50), 232),
    _torchvision("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 77.374,
                 dict(depth=101), 256),
    _torchvision("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 81.886,
                 dict(depth=101), 232),
    _torchvision("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 78.312,
                 dict(depth=152), 256),
    _torchvision("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 82.284,
                 dict(depth=152), 232),
    _torchvision("resnext50_32x4d", "IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 77.618,
                 _RESNEXT50, 256),
    _torchvision("resnext50_32x4d", "IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 81.198,
                 _RESNEXT50, 232),
    _torchvision("resnext101_32x8d", "IMAGENET1K_V1", "resnext101_32x8d-8ba56ff5.pth",
                 79.312, dict(depth=101, groups=32, width_per_group=8), 256),
    _torchvision("resnext101_32x8d", "IMAGENET1K_V2", "resnext101_32x8d-110c445d.pth",
                 82.834, dict(depth=101, groups=32, width_per_group=8), 232),
    _torchvision("resnext101_64x4d", "IMAGENET1K_V1", "resnext101_64x4d-173b62eb.pth",
                 83.246, dict(depth=101, groups=64, width_per_group=4), 232),
    _torchvision("wide_resnet50_2", "IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 78.468,
                 dict(depth=50, width_multiplier=2), 256),
    _torchvision("wide_resnet50_2", "IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 81.602,
                 dict(depth=50, width_multiplier=2), 232),
    _torchvision("wide_resnet101_2", "IMAGENET1K_V1", "wide_resnet101_2-32ee1156.pth", 78.848,
                 dict(depth=101, width_multiplier=2), 256),
    _torchvision("wide_resnet101_2", "IMAGENET1K_V2", "wide_resnet101_2-d733dc28.pth", 82.51,
                 dict(depth=101, width_multiplier=2), 232),
    # timm: `url` and transform from the pretrained cfgs; top1 (224, crop_pct 0.95; 256
    # for resnet101d) from the model cards, test_top1 (288 or 320, crop_pct 1.0) from
    # results-imagenet.csv (see the module docstring).
    _timm("resnet18", "a1_in1k", dict(depth=18), 71.49, 73.158,
          url=_RSB_HF + "resnet18_a1_0-d63eafa0.pth"),
    _timm("resnet34", "a1_in1k", dict(depth=34), 76.42, 77.918,
          url=_RSB_HF + "resnet34_a1_0-46f8f793.pth"),
    _timm("resnet50", "a1_in1k", dict(depth=50), 80.38, 81.214,
          url=_RSB_RW + "resnet50_a1_0-14fe96d1.pth"),
    _timm("resnet101", "a1_in1k", dict(depth=101), 81.5, 82.322,
          url=_RSB_HF + "resnet101_a1_0-cdcb52a9.pth"),
    _timm("resnet152", "a1_in1k", dict(depth=152), 81.97, 82.732,
          url=_RSB_HF + "resnet152_a1_0-2eee8a7a.pth"),
    _timm("resnet50d", "a1_in1k", dict(depth=50, variant="d"), 80.68, 81.45,
          url=_RSB_HF + "resnet50d_a1_0-e20cff14.pth"),
    _timm("resnet101d", "ra2_in1k", dict(depth=101, variant="d"), 82.26, 83.016,
          url="https://github.com/rwightman/pytorch-image-models/releases/download/"
              "v0.1-weights/resnet101d_ra2-2803ffab.pth",
          size=256, test_size=320),
    _timm("seresnet50", "a1_in1k", dict(depth=50, se_ratio=1 / 16), 80.02, 81.102,
          url=_RSB_HF + "seresnet50_a1_0-ffa00869.pth"),
    _timm("resnext50_32x4d", "a1_in1k", _RESNEXT50, 80.53, 81.466,
          url=_RSB_HF + "resnext50_32x4d_a1_0-b5a91a1d.pth"),
    # Hugging Face Hub only (no release file in timm's cfg), and the model cards publish
    # no accuracy: top-1 only at the test size, from results-imagenet.csv.
    _timm("resnetv2_50", "a1h_in1k", dict(depth=50, variant="v2"), None, 81.398,
          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    _timm("resnetv2_101", "a1h_in1k", dict(depth=101, variant="v2"), None, 83.002,
          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # keras.applications: BASE_WEIGHTS_PATH, WEIGHTS_HASHES (md5), keras.io's table.
    _keras(50, 74.9),
    _keras(101, 76.4),
    _keras(152, 76.6),
)
WEIGHTS = {entry.name: entry for entry in _ENTRIES}


def imagenet_classes():
    """The 1000 ImageNet-1k classes every registered entry predicts, in output order.

    From imagenet_classes.tsv beside this module: the WordNet ids (the class folders of
    ImageNet's layout, sorted, as timm's imagenet_synsets.txt lists them) and the names
    torchvision's weights carry (`weights.meta["categories"]`).

    Returns:
        `(wordnet_ids, names)`, two lists of 1000 str.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.tsv")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [row[0] for row in rows], [row[1] for row in rows]


def entry_of_file(path):
    """The registered entry whose published file `path` is (by file name: torchvision's and
    timm's release files carry a hash prefix in theirs), or None."""
    name = os.path.basename(os.fspath(path))
    return next((entry for entry in WEIGHTS.values() if entry.file_name == name), None)


def list_weights(depth=None):
    """The registered `PretrainedWeights`, those for `depth` only if given."""
    return [entry for entry in WEIGHTS.values()
            if depth is None or entry.build["depth"] == depth]


def get_weights(name, **build):
    """The entry called `name`, or for "<source>:<tag>" the one fitting `build`.

    Args:
        name: str. "<source>:<architecture>.<tag>", or "<source>:<tag>" together
            with the build_resnet arguments (`depth=50`, ...) that pick the architecture.
        **build: build_resnet arguments: depth, variant, groups, width_per_group,
            width_multiplier, se_ratio. Those left out or None are not checked.

    Raises:
        ValueError: no entry has that name (the message suggests close ones), or the
            entry does not fit `build`.
    """
    match = _NAME.match(name) if isinstance(name, str) else None
    if match and match.group("architecture") is None and name not in WEIGHTS:
        fitting = [e for e in WEIGHTS.values() if e.source == match.group("source")
                   and e.tag == match.group("tag") and _fits(e, build)]
        if fitting:
            return fitting[0]
    entry = WEIGHTS.get(name)
    if entry is None:
        candidates = [e.name for e in WEIGHTS.values() if _fits(e, build)]
        close = difflib.get_close_matches(str(name), candidates, n=3, cutoff=0.6)
        if build and not close:
            close = candidates[:3]
        hint = f" such as {', '.join(repr(c) for c in close)}" if close else ""
        fits = "" if not build else " fitting " + _call(build)
        raise ValueError(
            f"Unknown pretrained weights. Received: weights={name!r}; expected a "
            f"registered name{fits}{hint} (resnet_tf.models.registry.list_weights() "
            "lists them), or a path to a weights file."
        )
    if build and not _fits(entry, build):
        raise ValueError(
            f"The weights {entry.name} are for {_call(entry.build)}. "
            f"Received: {_call(build, prefix='')}; expected the same build_resnet "
            "arguments."
        )
    return entry


def _fits(entry, build):
    wanted = {k: v for k, v in build.items() if v is not None}
    full = ResNetSpec(**entry.build).architecture()  # build_resnet's defaults filled
    return all(full.get(k) == v for k, v in wanted.items())


def _call(build, prefix="build_resnet"):
    args = {k: v for k, v in build.items() if v is not None}
    depth = args.pop("depth", None)
    parts = ([] if depth is None else [str(depth) if prefix else f"depth={depth}"])
    parts += [f"{k}={v!r}" for k, v in args.items()]
    return f"{prefix}({', '.join(parts)})" if prefix else ", ".join(parts)


def is_name(weights):
    """Whether `weights` is spelled like a registered name ("<source>:...")."""
    match = _NAME.match(weights) if isinstance(weights, str) else None
    return bool(match) and match.group("source") in {e.source for e in WEIGHTS.values()}


def architecture_of(model, depth):
    """groups, width_per_group, width_multiplier and se_ratio of a build_resnet model,
    spelled as the entries spell them (a Wide ResNet by its width_multiplier).

    Read back from layer names, for models saved before they carried their
    `ResNetSpec`; `spec.spec_of(model)` answers for the others.
    """
    block, _, family = SPECS[depth]
    base = STAGE_FILTERS[family][0]
    names = {layer.name for layer in model.layers}
    conv_name = "conv2_block1_2_conv" if block == "bottleneck" else "conv2_block1_1_conv"
    if conv_name not in names:
        return {}
    conv = model.get_layer(conv_name)
    found = dict(groups=1, width_per_group=64, width_multiplier=1, se_ratio=0.0)
    if block == "bottleneck" and conv.groups > 1:
        found.update(groups=conv.groups, width_per_group=conv.filters * 64 // (base * conv.groups))
    elif conv.filters != base:
        found["width_multiplier"] = conv.filters // base if conv.filters % base == 0 \
            else conv.filters / base
    if "conv2_block1_se_reduce" in names:
        found["se_ratio"] = (model.get_layer("conv2_block1_se_reduce").filters
                             / model.get_layer("conv2_block1_se_expand").filters)
    return found


def download_weights(name, **build):
    """Local path of the named weights, downloaded into the Keras cache if needed.

    A cached file is used only after it passes the entry's hash (or, without one,
    a completeness check); a partial or damaged one is downloaded again. A download
    goes to a temporary name and is renamed only once checked, so an interrupted or
    failed download leaves no file that a later run would trust.

    Args:
        name: str. See `get_weights`.
        **build: build_resnet arguments, see `get_weights`.

    Returns:
        (path, PretrainedWeights).

    Raises:
        ValueError: unknown name, or the entry does not fit `build`.
        WeightsDownloadError: the file is not cached and cannot be downloaded, the
            download does not match the published hash, or the cache is not writable.
    """
    entry = get_weights(name, **build)
    cached = os.path.join(keras_home(), "models", entry.file_name)
    if os.path.isfile(cached) and _intact(cached, entry):
        return cached, entry  # a read-only cache that holds the file serves it
    folder = _cache_folder(entry)
    path = os.path.join(folder, entry.file_name)
    _remove(path)
    partial_name = f".{entry.file_name}.{os.getpid()}.part"
    partial = os.path.join(folder, partial_name)
    try:
        with socket_timeout():
            partial = keras.utils.get_file(partial_name, entry.url, cache_subdir="models",
                                           cache_dir=os.path.dirname(folder))
    except Exception as error:  # noqa: BLE001 - any failure gets the same advice
        _remove(partial)
        reason = re.sub(r"^URL fetch failure on \S+ (None -- )?", "", _first_line(error))
        raise WeightsDownloadError(
            f"The weights {entry.name} are not in the Keras cache ({folder}) and could "
            f"not be downloaded ({reason}); on a machine with internet download "
            f"{entry.url} and pass weights='/path/to/{entry.file_name}'."
        ) from None
    if not _intact(partial, entry):
        _remove(partial)
        expected = (f"{_algorithm(entry.file_hash)} {entry.file_hash}" if entry.file_hash
                    else "a complete file")
        raise WeightsDownloadError(
            f"The download of {entry.url} is not the published file (expected "
            f"{expected}) and was deleted; download it again, or check a copy yourself "
            f"and pass weights='/path/to/{entry.file_name}'."
        )
    os.replace(partial, path)
    return path, entry


# The name this function had before `sources.resolve_weights` answered what any weights
# argument is; kept for code that imports it.
resolve_weights = download_weights


def check_imagenet(depth, variant):
    """Raises ValueError unless keras.applications publishes `weights="imagenet"` for
    `depth` and `variant`."""
    if variant != "v1" or depth not in IMAGENET_HASHES:
        raise ValueError(
            "ImageNet weights are published for variant='v1' with depth 50, 101 or 152 "
            "(keras.applications' ResNet50/101/152). "
            f"Received: weights='imagenet', depth={depth}, variant={variant!r}; expected "
            "one of those combinations, or a path to a weights file."
        )


def imagenet_file(depth, variant="v1", include_top=True):
    """Path of keras.applications' ImageNet file for `depth`, downloading it if needed.

    Files are cached in `$KERAS_HOME/models` (default `~/.keras/models`), where
    keras.applications keeps them too.
    """
    check_imagenet(depth, variant)
    file_name = _imagenet_file_name(depth, include_top)
    url = IMAGENET_URL + file_name
    cache_dir = keras_home()
    try:
        with socket_timeout():
            return keras.utils.get_file(
                file_name,
                url,
                cache_subdir="models",
                file_hash=IMAGENET_HASHES[depth][0 if include_top else 1],
                cache_dir=cache_dir,
            )
    except Exception as error:  # noqa: BLE001 - any failure gets the same advice
        # Keras words it "URL fetch failure on <url>: None -- <reason>"; the URL comes below.
        reason = re.sub(r"^URL fetch failure on \S+ (None -- )?", "", _first_line(error))
        raise WeightsDownloadError(
            f"The ImageNet weights {file_name} are not in the Keras cache "
            f"({os.path.join(cache_dir, 'models')}) and could not be downloaded "
            f"({reason}); on a machine with internet download {url} and pass "
            f"weights='/path/to/{file_name}'."
        ) from None


def keras_home():
    """`$KERAS_HOME`, default `~/.keras`: the cache of keras.applications and of ours."""
    # Keras reads KERAS_HOME once, when it is imported; reading it here as well lets
    # a notebook or a test point the cache elsewhere afterwards.
    home = os.environ.get("KERAS_HOME")
    if home:
        return os.path.expanduser(home)
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = tempfile.gettempdir()  # Keras' own fallback
    return os.path.join(base, ".keras")


def _cache_folder(entry):
    """`$KERAS_HOME/models`, created; refused if not writable (Keras would silently
    fall back to /tmp)."""
    folder = os.path.join(keras_home(), "models")
    try:
        os.makedirs(folder, exist_ok=True)
        writable = os.access(folder, os.W_OK)
        reason = "permission denied"
    except OSError as error:
        writable, reason = False, error.strerror or type(error).__name__
    if not writable:
        raise WeightsDownloadError(
            f"The Keras cache folder {folder} is not writable ({reason}), so the weights "
            f"{entry.name} cannot be downloaded; set KERAS_HOME to a writable folder, or "
            f"download {entry.url} and pass weights='/path/to/{entry.file_name}'."
        )
    return folder


def _algorithm(file_hash):
    return "md5" if len(file_hash) == 32 else "sha256"


def _intact(path, entry):
    if entry.file_hash is None:
        return _complete(path)
    digest = hashlib.new(_algorithm(entry.file_hash))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    # torchvision publishes only the first 8 characters of the SHA-256.
    return digest.hexdigest().startswith(entry.file_hash.lower())


def _complete(path):
    """Whether a file without a published hash is whole: safetensors sizes, zip CRCs."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        if not head.startswith(b"PK"):
            (header_length,) = struct.unpack("<Q", head)
            if header_length > _SAFETENSORS_MAX_HEADER:
                return False
            try:
                header = json.loads(f.read(header_length))
                ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                return False
            return os.path.getsize(path) == 8 + header_length + max(ends, default=0)
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except zipfile.BadZipFile:
        return False


def _remove(path):
    if path and os.path.lexists(path):
        os.remove(path)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
