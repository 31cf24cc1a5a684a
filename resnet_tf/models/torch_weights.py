"""PyTorch ResNet checkpoints (torchvision, timm) loaded exactly into `build_resnet` models.

A checkpoint is a state dict: tensor names ("layer1.0.conv1.weight") to arrays. Our
layer names determine the torch names they need (`torch_names`), so the model the
caller built says what the file must hold; a file for another architecture is refused,
naming its first mismatching tensor, before one weight is assigned.

| checkpoint | build_resnet |
|---|---|
| torchvision resnet18/34/50/101/152, timm resnet18..152 | `build_resnet(depth)` |
| torchvision resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, timm resnext50_32x4d | `groups=32, width_per_group=4` (and so on) |
| torchvision wide_resnet50_2, wide_resnet101_2 | `width_multiplier=2` |
| timm resnet50d, resnet101d | `variant="d"` |
| timm seresnet50 | `se_ratio=1/16` |
| timm resnetv2_50, resnetv2_101 | `variant="v2"` |

Only numpy and Keras are needed at import; reading a `.pth` file needs torch, reading a
`.safetensors` file needs the safetensors package.
"""

import os
import re
import struct

import keras
import numpy as np

from resnet_tf.models.spec import SPECS, spec_of

_EXPECTED = "a torchvision or timm ResNet checkpoint (.pth, .pt or .safetensors)"
# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SAFETENSORS_MAX_HEADER = 100 * 2**20
# Training checkpoints wrap the state dict; the first of these keys that holds one is used.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
       ("moving_variance", "running_var"))

# Our layer name -> torch module path, per checkpoint layout. "resnet" is torchvision's
# ResNet and timm's (same names); "v2" is timm's pre-activation ResNetV2.
_STEM = {
    "resnet": {
        "conv1_conv": "conv1", "conv1_bn": "bn1",
        # timm's deep stem is one Sequential: conv, bn, relu, conv, bn, relu, conv.
        "conv1_1_conv": "conv1.0", "conv1_1_bn": "conv1.1",
        "conv1_2_conv": "conv1.3", "conv1_2_bn": "conv1.4",
        "conv1_3_conv": "conv1.6", "conv1_3_bn": "bn1",
        "predictions": "fc",
    },
    "v2": {"conv1_conv": "stem.conv", "post_bn": "norm", "predictions": "head.fc"},
}
_IN_BLOCK = {
    "resnet": {
        "1_conv": "conv1", "1_bn": "bn1", "2_conv": "conv2", "2_bn": "bn2",
        "3_conv": "conv3", "3_bn": "bn3", "0_conv": "downsample.0", "0_bn": "downsample.1",
        "se_reduce": "se.fc1", "se_expand": "se.fc2",
    },
    # timm names norms by position: norm1 pre-activates, norm2 follows conv1, ...
    "v2": {
        "preact_bn": "norm1", "1_conv": "conv1", "1_bn": "norm2", "2_conv": "conv2",
        "2_bn": "norm3", "3_conv": "conv3", "0_conv": "downsample.conv",
    },
}
# ResNet-D's shortcut is Sequential(AvgPool2d or Identity, conv, bn) in timm.
_AVG_DOWN = {"0_conv": "downsample.1", "0_bn": "downsample.2"}
_BLOCK_NAME = re.compile(r"^conv(\d+)_block(\d+)_(.+)$")
_CLASSIFIER = "predictions"


def checkpoint_format(path):
    """'torch' (torch.save, zip or legacy pickle), 'safetensors' or None, from the content."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        # torch.save's zip writes "<archive>/data.pkl" first; a .keras zip never does.
        name_length = struct.unpack("<H", head[26:28])[0]
        first = head[30:30 + name_length].decode("utf8", "replace")
        return "torch" if first.split("/")[-1] == "data.pkl" else None
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if len(head) > 8 and head[8:9] == b"{":
        header_length = struct.unpack("<Q", head[:8])[0]
        if 1 < header_length < _SAFETENSORS_MAX_HEADER:
            return "safetensors"
    return None


def read_state_dict(path):
    """{tensor name: float32 numpy array} of a PyTorch checkpoint or safetensors file.

    Training checkpoints that wrap the state dict ({"state_dict": ...}, {"model": ...})
    and DistributedDataParallel's "module." prefixes are unwrapped; torch's
    "num_batches_tracked" counters are dropped.
    """
    file_format = checkpoint_format(path)
    if file_format is None:
        raise ValueError(
            f"weights file '{path}' is neither a PyTorch checkpoint nor a safetensors "
            f"file. Received: weights='{path}'; expected {_EXPECTED}."
        )
    raw = _read_torch(path) if file_format == "torch" else _read_safetensors(path)
    state = {key: np.asarray(value, dtype="float32") for key, value in raw.items()
             if not key.endswith("num_batches_tracked")}
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading the PyTorch checkpoint '{path}' needs torch: pip install torch."
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, damaged or not a state dict
        raise ValueError(
            f"weights file '{path}' cannot be read as a PyTorch checkpoint "
            f"({_first_line(error)}). Received: weights='{path}'; expected a complete "
            f"{_EXPECTED[2:]} holding a state dict."
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ValueError(
            f"weights file '{path}' holds a {type(loaded).__name__}, not a state dict of "
            f"tensors. Received: weights='{path}'; expected a file written by "
            "torch.save(model.state_dict(), path)."
        )
    return {key: value.detach().float().numpy() for key, value in loaded.items()}


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            f"Reading the safetensors file '{path}' needs the safetensors package: "
            "pip install safetensors."
        ) from None
    try:
        return load_file(path)
    except Exception as error:  # noqa: BLE001 - truncated or damaged
        raise ValueError(
            f"weights file '{path}' cannot be read as a safetensors file "
            f"({_first_line(error)}). Received: weights='{path}'; expected a complete "
            ".safetensors file."
        ) from None


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def model_variant(model):
    """The build_resnet variant of `model`: its spec's, or for a model saved before models
    carried one, read from its layers."""
    spec = spec_of(model)
    if spec is not None:
        return spec.variant
    names = [layer.name for layer in model.layers]
    if "post_bn" in names:
        return "v2"
    if any(name.endswith("_0_pool") for name in names):
        return "d"
    first_conv = next((layer for layer in model.layers if hasattr(layer, "kernel")), None)
    if getattr(first_conv, "use_bias", False):
        return "v1"
    return "v1.5"


def torch_names(model):
    """{our layer name: torch module path, or None} for every layer of `model` with weights.

    None marks a layer no torchvision or timm ResNet has (a deep stem's last BatchNorm
    in variant "v2", for one).
    """
    variant = model_variant(model)
    layout = "v2" if variant == "v2" else "resnet"
    in_block = dict(_IN_BLOCK[layout], **(_AVG_DOWN if variant == "d" else {}))
    names = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        match = _BLOCK_NAME.match(layer.name)
        if match:
            stage, block, part = int(match.group(1)), int(match.group(2)), match.group(3)
            prefix = (f"stages.{stage - 2}.blocks.{block - 1}" if layout == "v2"
                      else f"layer{stage - 1}.{block - 1}")
            module = in_block.get(part)
            names[layer.name] = module and f"{prefix}.{module}"
        else:
            names[layer.name] = _STEM[layout].get(layer.name)
    return names


def _tensors(layer, module):
    """[(variable, torch tensor name, to_ours)]: what `layer` takes from the file."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(getattr(layer, ours), f"{module}.{theirs}", _same) for ours, theirs in _BN]
    to_ours = _dense if isinstance(layer, keras.layers.Dense) else _conv
    pairs = [(layer.kernel, f"{module}.weight", to_ours)]
    if getattr(layer, "use_bias", False):
        pairs.append((layer.bias, f"{module}.bias", _same))
    return pairs


def _same(value):
    return value


def _conv(value):
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO, also for grouped kernels


def _dense(value):
    # timm's ResNetV2 classifier is a 1x1 conv: (classes, features, 1, 1).
    return value.reshape(value.shape[:2]).T


def _fits(shape, needed, to_ours):
    shape = tuple(shape)
    return shape == needed or (to_ours is _dense and shape == needed + (1, 1))


def _torch_shape(variable_shape, to_ours):
    """The shape a torch tensor needs to become a variable of `variable_shape`."""
    if to_ours is _conv:
        h, w, i, o = variable_shape
        return (o, i, h, w)
    if to_ours is _dense:
        return tuple(reversed(variable_shape))
    return tuple(variable_shape)


def load_torch_weights(model, path, *, include_top=True, classes=1000):
    """Load a torchvision or timm state dict into `model`, all or nothing.

    Args:
        model: `keras.Model` built by `build_resnet` for the checkpoint's architecture
            (see the module docstring), variant "v1.5", "d" or "v2".
        path: str or path-like. A `torch.save` file (.pth, .pt; read with
            `weights_only=True`) or a `.safetensors` file, recognised by content.
        include_top: bool. Whether `model` has the "predictions" classifier. Without
            it the checkpoint's classifier is ignored.
        classes: int. The model's number of classes; with `include_top` it must
            equal the checkpoint's.

    Returns:
        `model`.

    Raises:
        ValueError: the file is unreadable, or does not match the model (the message
            names the first mismatching tensor); nothing was assigned.
        ImportError: torch (for .pth) or safetensors is not installed.
    """
    path = os.fspath(path)
    variant = model_variant(model)
    label = f"{model.name} (variant={variant!r})"
    if variant == "v1":
        raise ValueError(
            f"PyTorch checkpoints do not fit {label}: variant 'v1' is keras.applications' "
            "layout (conv biases, stride on the 1x1 conv). "
            f"Received: variant='v1', weights='{path}'; expected variant 'v1.5' "
            "(torchvision, timm resnet), 'd' (timm resnet50d) or 'v2' (timm resnetv2)."
        )
    state = read_state_dict(path)
    plan, problems, used, file_classes = [], [], set(), None
    for layer_name, module in torch_names(model).items():
        layer = model.get_layer(layer_name)
        if module is None:
            problems.append(f"layer '{layer_name}' has no counterpart in a torch ResNet")
            continue
        for variable, key, to_ours in _tensors(layer, module):
            used.add(key)
            needed = _torch_shape(variable.shape, to_ours)
            value = state.get(key)
            if value is None:
                hint = (" (a checkpoint without classifier: use include_top=False)"
                        if layer_name == _CLASSIFIER else "")
                problems.append(f"the file has no '{key}' for layer '{layer_name}'{hint}")
            elif layer_name == _CLASSIFIER and value.shape[0] != needed[0]:
                file_classes = value.shape[0]
            elif not _fits(value.shape, needed, to_ours):
                problems.append(f"'{key}' has shape {tuple(value.shape)} in the file where "
                                f"layer '{layer_name}' needs {needed}")
            else:
                plan.append((variable, to_ours(value)))
    classifier = _STEM["v2" if variant == "v2" else "resnet"][_CLASSIFIER] + "."
    extra = [key for key in state if key not in used
             and (include_top or not key.startswith(classifier))]
    if extra:
        problems.append(f"the file has {len(extra)} tensor(s) that the model lacks, "
                        f"first '{extra[0]}'")
    if problems:
        more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        fits = describe_architecture(state)
        fits = f" (this file fits {fits})" if fits else ""
        raise ValueError(
            f"weights file '{os.path.basename(path)}' does not match {label}: "
            f"{problems[0]}{more}. Received: weights='{path}'; expected a torchvision or "
            f"timm checkpoint of the same architecture{fits}."
        )
    if file_classes is not None:
        raise ValueError(
            f"weights file '{os.path.basename(path)}' has a {file_classes}-class classifier "
            f"but {label} was built with classes={classes}. Received: classes={classes}, "
            f"weights='{path}'; expected classes={file_classes}, or include_top=False to "
            "load only the backbone."
        )
    for variable, value in plan:
        variable.assign(value)
    return model


def infer_architecture(state):
    """The build_resnet arguments of a torchvision / timm state dict, or None if unknown.

    Returns a dict with "depth" and, where they differ from the defaults, "variant",
    "groups", "width_per_group", "width_multiplier", "se_ratio" and "classes".
    """
    v2 = "stem.conv.weight" in state
    pattern = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\." if v2 else r"^layer(\d+)\.(\d+)\.")
    blocks = {}
    for key in state:
        match = pattern.match(key)
        if match:
            stage = int(match.group(1)) - (0 if v2 else 1)
            blocks.setdefault(stage, set()).add(int(match.group(2)))
    repeats = tuple(len(blocks.get(stage, ())) for stage in range(max(blocks, default=-1) + 1))
    first = "stages.0.blocks.0." if v2 else "layer1.0."
    kind = "bottleneck" if f"{first}conv3.weight" in state else "basic"
    depth = next((d for d, (b, r, _) in SPECS.items() if (b, r) == (kind, repeats)), None)
    if depth is None or f"{first}conv2.weight" not in state:
        return None
    args = {"depth": depth}
    if v2:
        args["variant"] = "v2"
    elif "conv1.0.weight" in state:
        if "layer1.0.downsample.0.weight" in state:
            return None  # timm's resnet50c: deep stem, plain shortcut; we have no such variant
        args["variant"] = "d"
    width, per_group = state[f"{first}conv2.weight"].shape[:2]
    groups = width // per_group
    if kind == "bottleneck" and groups > 1:
        args.update(groups=groups, width_per_group=width // groups)
    elif width != 64:
        args["width_multiplier"] = width / 64 if width % 64 else width // 64
    if f"{first}se.fc1.weight" in state:
        hidden, channels = state[f"{first}se.fc1.weight"].shape[:2]
        args["se_ratio"] = hidden / channels
    head = state.get("head.fc.weight" if v2 else "fc.weight")
    if head is not None and head.shape[0] != 1000:
        args["classes"] = head.shape[0]
    return args


def describe_architecture(state):
    """'build_resnet(50, variant="d")' for a state dict, or None if unknown."""
    args = infer_architecture(state)
    if args is None:
        return None
    rest = "".join(f", {k}={v!r}" for k, v in args.items() if k != "depth")
    return f"build_resnet({args['depth']}{rest})"
