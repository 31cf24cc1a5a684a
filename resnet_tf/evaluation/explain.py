"""What a classifier looks at: Grad-CAM heat maps, feature-map grids and an error gallery.

- `grad_cam` weighs a feature map's channels by the gradient of a class score (Selvaraju
  et al., 2017) and returns one heat map per image on that map's grid; `upsample` and
  `overlay` bring it to the picture.
- `feature_grid` tiles the strongest channels of one stage.
- `error_gallery` writes the most confidently wrong images, with their Grad-CAM.

Layers are named as `feature_extractor` names them: "C2".."C5", the last block of each
stage (`conv<stage>_block<n>_out`, as in keras.applications), or any layer name. The
functions take images already preprocessed for the model (`preprocess_for_eval`).

Gradients need a backend-specific path; only TensorFlow's (`tf.GradientTape`) exists.
"""

import math

import keras
import numpy as np

from resnet_tf.errors import ExplainError
from resnet_tf.files import atomic_write
from resnet_tf.models.resnet import stage_layers
from resnet_tf.models.spec import find_resnet

_HEAD_ACTIVATIONS = (keras.layers.Activation, keras.layers.Softmax)


def feature_layer(model, layer=None):
    """The layer whose 4-D output `grad_cam` and `feature_grid` read.

    Args:
        model: a single-input `keras.Model`.
        layer: str or None. "C2".."C5", a layer name, or None for the last stage (the
            last layer with a 4-D output when the model has no ResNet stage names).

    Returns:
        The `keras.layers.Layer`.
    """
    stages = stage_layers(model)
    owner = find_resnet(model) or model  # the ResNet itself, or the one nested in `model`
    if layer is None:
        if stages:
            return owner.get_layer(stages[max(stages, key=lambda s: int(s[1:]))])
        for candidate in reversed(model.layers):
            if not isinstance(candidate, keras.layers.InputLayer) and _rank(candidate) == 4:
                return candidate
        raise ExplainError(f"Received: model '{model.name}' with no layer of 4-D output; "
                           "expected a convolutional network.")
    name = stages.get(layer, layer)
    found = next((candidate for candidate in [*model.layers, *owner.layers]
                  if candidate.name == name), None)
    if found is None or _rank(found) != 4 or isinstance(found, keras.layers.InputLayer):
        kind = "a layer without a 4-D feature map" if found is not None else "no such layer"
        choices = f"a stage name ({', '.join(stages)}) or the" if stages else "the"
        raise ExplainError(
            f"Received: layer={layer!r} ({kind} in model '{model.name}'); expected "
            f"{choices} name of a layer with a 4-D output.")
    return found


def _rank(layer):
    output = _output(layer)
    return len(output.shape) if hasattr(output, "shape") else None


def _classifier(model):
    """The model's final Dense layer, looking through a trailing Activation/Softmax layer.

    None when the model ends in something else; its output is then taken as the score.
    """
    layer = model.layers[-1]
    while isinstance(layer, _HEAD_ACTIVATIONS):
        layer = next((parent for parent in model.layers if _output(parent) is layer.input), None)
    return layer if isinstance(layer, keras.layers.Dense) else None


def _output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError, TypeError):  # unbuilt, shared or multi-output layers
        return None


def class_count(model):
    """The number of classes the model scores."""
    dense = _classifier(model)
    return int(dense.units if dense is not None else model.output_shape[-1])


def _score_model(model, layer):
    """`(keras.Model returning [feature map, classifier input], Dense or None)`.

    Grad-CAM differentiates the pre-softmax score. Applying the Dense kernel and bias to
    the classifier's input gives that score exactly whatever the Dense's activation
    (softmax, linear or another). The log of the softmax output would not do: its
    gradient with respect to the scores, `onehot(c) - p`, mixes in the other classes and
    vanishes as the prediction grows confident, the images one most wants explained.
    """
    if len(model.inputs) != 1:
        raise ExplainError(f"Received: model '{model.name}' with {len(model.inputs)} inputs; "
                           "expected a model with one image input.")
    dense = _classifier(model)
    if layer in model.layers:
        head_input = dense.input if dense is not None else model.output
        return keras.Model(model.inputs[0], [layer.output, head_input]), dense
    # The layer is inside a nested model: replay the outer graph, calling the nested model
    # in a form that also returns the layer's output, and keep the classifier's input.
    return _replay(model, layer, dense), dense


def _replay(model, layer, dense=None):
    """A model from `model`'s input to `[layer's output, classifier input (or output)]`:
    a copy of its graph (the same layers and weights) where `layer` lies in a nested model."""
    kept = {}

    def call(operation, *args, **kwargs):
        if isinstance(operation, keras.Model) and _holds(operation, layer):
            if layer in operation.layers:
                two = keras.Model(operation.inputs, [layer.output, operation.output])
            else:
                two = _replay(operation, layer)
            kept["feature"], output = two(*args, **kwargs)
            return output
        if operation is dense:
            kept["head"] = args[0]
        return operation(*args, **kwargs)

    if isinstance(model, keras.Sequential):  # clone_model replays Functional graphs only
        inputs = output = model.inputs[0]
        for operation in model.layers:
            output = call(operation, output)
    else:
        replayed = keras.models.clone_model(model, clone_function=lambda same: same,
                                            call_function=call)
        inputs, output = replayed.inputs[0], replayed.outputs[0]
    return keras.Model(inputs, [kept["feature"], kept.get("head", output)])


def _holds(container, layer):
    return any(inner is layer or (isinstance(inner, keras.Model) and _holds(inner, layer))
               for inner in container.layers)


def _scores(dense, head_input):
    if dense is None:
        return keras.ops.cast(head_input, "float32")
    scores = keras.ops.matmul(keras.ops.cast(head_input, "float32"),
                              keras.ops.cast(dense.kernel, "float32"))
    if dense.use_bias:
        scores = scores + keras.ops.cast(dense.bias, "float32")
    return scores


def _image_batch(model, images):
    """Images as float32 `[N, H, W, C]`, checked against the model's input shape."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[np.newaxis]
    expected = tuple(model.input_shape[1:])
    if batch.ndim != 4 or batch.shape[0] == 0 or any(
            e is not None and e != got for e, got in zip(expected, batch.shape[1:])):
        shown = ", ".join(["N"] + ["any" if d is None else str(d) for d in expected])
        raise ExplainError(
            f"Received: images of shape {tuple(np.shape(images))}; expected preprocessed images "
            f"of shape ({shown}) or one image without the batch axis, the input of model "
            f"'{model.name}'.")
    return batch


def _class_indices(class_index, count, classes):
    """A list of `count` class indices or Nones (top class), checked against `classes`."""
    if class_index is None:
        return [None] * count
    if np.ndim(class_index) == 0:
        indices = [class_index] * count
    else:
        indices = list(np.asarray(class_index, dtype=object).reshape(-1))
        if len(indices) != count:
            raise ExplainError(f"Received: class_index with {len(indices)} entries for {count} "
                               "images; expected one int, None, or one entry per image.")
    indices = [i.item() if isinstance(i, (np.generic, np.ndarray)) else i for i in indices]
    for index in indices:
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)
                                  or not 0 <= index < classes):
            raise ExplainError(
                f"Received: class_index={index!r}; expected an integer from 0 to {classes - 1} "
                f"(the model has {classes} classes) or None for the top class.")
    return indices


def grad_cam(model, images, class_index=None, layer=None, batch_size=32):
    """Grad-CAM heat maps: where the evidence for a class lies in a feature map.

    The heat map is `relu(sum_k w_k A_k)` over the channels `A_k` of the layer's output,
    with `w_k` the spatial mean of the gradient of the class's pre-softmax score with
    respect to `A_k`; each map is divided by its maximum (all zeros when nothing in the
    image speaks for the class).

    Args:
        model: a single-input `keras.Model` ending in a Dense classifier (softmax or
            linear); a model of this library or a keras.applications ResNet.
        images: float array `[N, H, W, C]` (or one `[H, W, C]` image), preprocessed for
            the model as for evaluation.
        class_index: None (each image's top class), an int (the same class for every
            image), or a sequence of one int or None per image.
        layer: str or None. "C2".."C5", a layer name, or None for the last stage.
        batch_size: int. Images per gradient computation.

    Returns:
        float32 numpy array `[N, h, w]` in [0, 1], on the chosen layer's `h x w` grid;
        `upsample` brings it to image size.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise NotImplementedError(
            f"grad_cam computes gradients with TensorFlow only. Received: Keras backend "
            f"{backend!r}; expected 'tensorflow' (set KERAS_BACKEND=tensorflow).")
    target = feature_layer(model, layer)
    batch = _image_batch(model, images)
    indices = _class_indices(class_index, len(batch), class_count(model))
    score_model, dense = _score_model(model, target)
    maps = [_grad_cam_tensorflow(score_model, dense, batch[start:start + batch_size],
                                 indices[start:start + batch_size])
            for start in range(0, len(batch), batch_size)]
    return np.concatenate(maps).astype(np.float32)


def _grad_cam_tensorflow(score_model, dense, images, indices):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        feature_map, head_input = score_model(tf.constant(images), training=False)
        scores = _scores(dense, head_input)
        top = np.argmax(scores.numpy(), axis=-1)
        chosen = [int(t) if i is None else i for i, t in zip(indices, top)]
        # Images do not interact in inference mode, so the sum's gradient is each image's own.
        score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
    gradients = tape.gradient(score, feature_map)
    feature_map = tf.cast(feature_map, tf.float32)
    gradients = tf.cast(gradients, tf.float32)
    if keras.config.image_data_format() == "channels_first":
        feature_map = tf.transpose(feature_map, [0, 2, 3, 1])
        gradients = tf.transpose(gradients, [0, 2, 3, 1])
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1)).numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0)


def upsample(heatmaps, size):
    """Bilinear resize of heat maps `[N, h, w]` (or one `[h, w]`) to `size` = (H, W)."""
    from PIL import Image

    maps = np.asarray(heatmaps, np.float32)
    single = maps.ndim == 2
    height, width = size
    resized = np.stack([
        np.asarray(Image.fromarray(m, mode="F").resize((width, height), Image.Resampling.BILINEAR))
        for m in (maps[np.newaxis] if single else maps)
    ])
    resized = np.clip(resized, 0, 1)
    return resized[0] if single else resized


def colorize(values, colormap="jet"):
    """Values in [0, 1] `[...]` to uint8 RGB `[..., 3]` through a matplotlib colormap."""
    import matplotlib

    rgba = matplotlib.colormaps[colormap](np.clip(np.asarray(values, np.float32), 0, 1))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def overlay(image, heatmap, alpha=0.4):
    """The heat map in the 'jet' colormap blended over the image.

    Args:
        image: uint8 (or 0..255 float) RGB `[H, W, 3]`; grayscale `[H, W]` is accepted.
        heatmap: `[h, w]` in [0, 1], any size; bilinearly resized to `H x W`.
        alpha: float in [0, 1]. The heat map's weight.

    Returns:
        uint8 RGB `[H, W, 3]`.
    """
    picture = np.asarray(image, np.float32)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., np.newaxis], 3, axis=-1)
    if picture.ndim != 3 or picture.shape[-1] != 3:
        raise ExplainError(f"Received: image of shape {np.shape(image)}; expected an RGB image "
                           "of shape (H, W, 3).")
    if np.ndim(heatmap) != 2:
        raise ExplainError(f"Received: heatmap of shape {np.shape(heatmap)}; expected one heat "
                           "map of shape (h, w).")
    if not 0 <= alpha <= 1:
        raise ExplainError(f"Received: alpha={alpha}; expected a number from 0 to 1.")
    colours = colorize(upsample(heatmap, picture.shape[:2])).astype(np.float32)
    blended = (1 - alpha) * np.clip(picture, 0, 255) + alpha * colours
    return np.round(blended).astype(np.uint8)


def feature_grid(model, image, stage="C3", channels=16, gap=2):
    """A picture of the `channels` strongest channels of a stage's output for one image.

    Strongest means the largest mean activation over the map. Each tile is that channel
    scaled to its own range and drawn in 'viridis', enlarged by a whole factor (nearest
    neighbour, so each feature-map cell stays a square) to about 64 pixels; tiles are
    laid out in rows of `ceil(sqrt(channels))`, strongest first, with `gap` white pixels
    between them.

    Args:
        model: a single-input `keras.Model`.
        image: one preprocessed image `[H, W, C]` (or `[1, H, W, C]`).
        stage: str. "C2".."C5" or a layer name with a 4-D output.
        channels: int. How many channels to show (at most the layer's channel count).

    Returns:
        uint8 RGB array.
    """
    if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
        raise ExplainError(f"Received: channels={channels!r}; expected a positive integer.")
    layer = feature_layer(model, stage)
    batch = _image_batch(model, image)
    if len(batch) != 1:
        raise ExplainError(f"Received: {len(batch)} images; expected one image for feature_grid.")
    feature_model, _ = _score_model(model, layer)
    activations = feature_model(batch, training=False)[0]
    maps = np.asarray(keras.ops.convert_to_numpy(activations), np.float32)[0]
    if keras.config.image_data_format() == "channels_first":
        maps = np.transpose(maps, (1, 2, 0))
    strongest = np.argsort(-maps.mean(axis=(0, 1)), kind="stable")[:channels]
    height, width = maps.shape[:2]
    scale = max(1, 64 // max(height, width))
    columns = math.ceil(math.sqrt(len(strongest)))
    rows = math.ceil(len(strongest) / columns)
    tile_h, tile_w = height * scale, width * scale
    grid = np.full((rows * tile_h + (rows - 1) * gap, columns * tile_w + (columns - 1) * gap, 3),
                   255, np.uint8)
    for position, channel in enumerate(strongest):
        values = maps[..., channel]
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        tile = colorize(np.kron(values, np.ones((scale, scale), np.float32)), "viridis")
        top = (position // columns) * (tile_h + gap)
        left = (position % columns) * (tile_w + gap)
        grid[top:top + tile_h, left:left + tile_w] = tile
    return grid


def error_gallery(images, true, pred, probs, class_names, path, heatmaps=None, count=16):
    """Write a PNG of the `count` most confidently wrong images.

    Confidence is the probability given to the wrong predicted class; ties keep the
    images' order. Each tile shows the image (its Grad-CAM overlay when `heatmaps` is
    given) with the true and predicted class. With no errors the picture says so.

    Args:
        images: uint8 RGB `[N, H, W, 3]`, the pictures as the model saw them.
        true: int array `[N]`, the true class indices.
        pred: int array `[N]`, the predicted class indices.
        probs: float array `[N, classes]`.
        class_names: list of str.
        path: str. Where the PNG goes (written atomically).
        heatmaps: optional `[N, h, w]` heat maps in [0, 1], e.g. `grad_cam`'s for `pred`.
        count: int. At most this many images.

    Returns:
        The indices of the images shown, most confident first.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    true, pred = np.asarray(true).reshape(-1), np.asarray(pred).reshape(-1)
    probs = np.asarray(probs, np.float32)
    n = len(true)
    lengths = {"images": len(images), "pred": len(pred), "probs": len(probs)}
    if heatmaps is not None:
        lengths["heatmaps"] = len(heatmaps)
    if any(length != n for length in lengths.values()):
        raise ExplainError(
            f"Received: {n} true labels with " + ", ".join(f"{len_} {k}" for k, len_ in lengths.items())
            + "; expected one of each per image.")
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ExplainError(f"Received: probs of shape {probs.shape} for {len(class_names)} class "
                           f"names; expected ({n}, {len(class_names)}).")
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ExplainError(f"Received: count={count!r}; expected a positive integer.")
    wrong = np.flatnonzero(true != pred)
    confidence = probs[wrong, pred[wrong]]
    shown = [int(i) for i in wrong[np.argsort(-confidence, kind="stable")][:count]]

    columns = max(1, min(4, math.ceil(math.sqrt(len(shown)))))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(2.6 * columns, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    if not shown:
        figure.text(0.5, 0.5, f"No misclassified images among {n}.", ha="center", va="center")
    for position, i in enumerate(shown):
        ax = figure.add_subplot(rows, columns, position + 1)
        picture = np.asarray(images[i])
        if heatmaps is not None:
            picture = overlay(picture, heatmaps[i])
        ax.imshow(np.clip(picture, 0, 255).astype(np.uint8), interpolation="nearest")
        ax.set_title(f"true: {class_names[true[i]]}\npred: {class_names[pred[i]]} "
                     f"({probs[i, pred[i]]:.2f})", fontsize=9)
        ax.axis("off")
    if shown:
        figure.suptitle(f"{len(shown)} most confident of {len(wrong)} errors in {n} images")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return shown
