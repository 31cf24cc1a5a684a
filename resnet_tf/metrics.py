"""Classification metrics of a trained model on a labelled dataset.

`evaluate_model` is what the trainer writes to `metrics.json` and what the evaluate
command reports, so both agree on every number.
"""

import numpy as np

from resnet_tf.models.normalization import MEAN, STD

# Test-time augmentation: each image's scores averaged over these views of it.
TTA = ("none", "flip", "flip-shift")
TTA_DESCRIPTIONS = {
    "none": "single view",
    "flip": "flip test-time augmentation (2 views)",
    "flip-shift": "flip and 1-pixel diagonal shifts test-time augmentation (10 views)",
}
# "flip-shift": the image and the image moved one pixel along each diagonal, every one with
# its mirror. The unshifted pair weighs as much as the four shifted pairs together. The
# uncovered border is black, as in the cifar recipe's padded random crops (the views are
# crops that recipe trains on).
_SHIFTS = ((0, 0, 4.0), (-1, -1, 1.0), (1, 1, 1.0), (-1, 1, 1.0), (1, -1, 1.0))
# Black (pixel value 0) on the models' input scale (`resnet_tf.data.preprocessing.normalize`).
_BLACK = -np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)


def evaluate_model(model, dataset, class_names, *, top_k=5, tta="none", on_batch=None):
    """Top-1/top-k accuracy, per-class precision and recall, and the confusion matrix.

    Args:
        model: `keras.Model` mapping a batch of images to per-class scores
            (probabilities or logits; only their order matters).
        dataset: iterable of `(images, labels)` batches, e.g. a `tf.data.Dataset`.
            Labels are class indices, or one-hot rows.
        class_names: list of str. Index `i` names class `i`.
        top_k: int. The k of the top-k accuracy, reported as `"top5"` for k=5.
        tta: str. "none"; "flip": average the scores of each image and its mirror
            image (left-right), as timm's and torchvision's validation scripts offer;
            "flip-shift": also of both moved one pixel along each diagonal (10 views,
            black borders as in the cifar recipe's padded crops; the unshifted pair
            weighs half). Images are `[B, H, W, 3]` on the models' input scale.
        on_batch: optional callable `(images, labels, scores)` called for every batch
            (labels as class indices), e.g. to keep the most confident errors.

    Returns:
        A JSON-serializable dict: `top1`, `top<k>` (fractions in 0..1), `examples`,
        `class_names`, `per_class` (`{name: {"precision", "recall", "support"}}`) and
        `confusion_matrix` (rows: true class, columns: predicted class).
    """
    classes = len(class_names)
    k = min(top_k, classes)
    confusion = np.zeros((classes, classes), np.int64)
    top_k_hits = 0
    if tta not in TTA:
        raise ValueError(f"Unknown tta. Received: tta={tta!r}; expected one of "
                         f"{', '.join(repr(t) for t in TTA)}.")
    predict = _predict_function(model)
    for images, labels in dataset:
        scores = _scores(predict, images, tta)
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=1)
        labels = labels.astype(np.int64)
        if on_batch is not None:
            on_batch(images, labels, scores)
        np.add.at(confusion, (labels, scores.argmax(axis=1)), 1)
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_k_hits += int((best == labels[:, None]).any(axis=1).sum())

    total = int(confusion.sum())
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    per_class = {
        name: {
            "precision": _ratio(hits[i], predicted[i]),
            "recall": _ratio(hits[i], support[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "top1": _ratio(hits.sum(), total),
        f"top{top_k}": _ratio(top_k_hits, total),
        "examples": total,
        "class_names": list(class_names),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def _scores(predict, images, tta):
    if tta == "none":
        return np.asarray(predict(images), np.float32)
    images = np.asarray(images)
    total = 0.0
    views = tta_views(images, tta)
    for view, weight in views:
        total = total + weight * np.asarray(predict(view), np.float32)
    return total / sum(weight for _, weight in views)


def tta_views(images, tta):
    """The views of a batch that `tta` averages over, as `[(view, weight), ...]`.

    The one definition of the views: `evaluate_model` scores them with the Keras model, and
    the SavedModel's serving graph (`resnet_tf.export`) with the frozen network, so a served
    model answers what the run measured. Backend-agnostic (`keras.ops`); `images` is
    `[B, H, W, 3]` on the models' input scale (NumPy, or a tensor in a traced graph).
    """
    from keras import ops

    views = []
    for dy, dx, mirrored, weight in view_plan(tta):
        view = _shifted(images, dy, dx)
        views.append((ops.flip(view, axis=2) if mirrored else view, weight))
    return views


def view_plan(tta):
    """`[(dy, dx, mirrored, weight), ...]`: the shift, mirroring and weight of each view."""
    if tta not in TTA:
        raise ValueError(f"Unknown tta. Received: tta={tta!r}; expected one of "
                         f"{', '.join(repr(t) for t in TTA)}.")
    if tta == "none":
        return [(0, 0, False, 1.0)]
    shifts = _SHIFTS if tta == "flip-shift" else _SHIFTS[:1]
    return [(dy, dx, mirrored, weight) for dy, dx, weight in shifts for mirrored in (False, True)]


def _shifted(images, dy, dx):
    """`images` moved so that `out[:, i, j] = images[:, i + dy, j + dx]`, black outside."""
    from keras import ops

    if (dy, dx) == (0, 0):
        return images
    black = ops.convert_to_tensor(_BLACK)
    shape = ops.shape(images)
    height, width = shape[1], shape[2]
    # Pad by one pixel of black (zero after subtracting it), then cut the moved window.
    padded = ops.pad(images - black, ((0, 0), (1, 1), (1, 1), (0, 0))) + black
    return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def _ratio(numerator, denominator):
    return float(numerator) / float(denominator) if denominator else 0.0


def _predict_function(model):
    """A compiled forward pass that runs outside any distribution strategy.

    `model.predict` would split batches over the replicas of the strategy the model was
    built under, and under a multi-worker strategy it waits for the other workers; a
    plain compiled call evaluates on the local device alone.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda images: keras.ops.convert_to_numpy(model(images, training=False))
    import tensorflow as tf

    forward = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    return lambda images: forward(images).numpy()
