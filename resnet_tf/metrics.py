"""Classification metrics of a trained model on a labelled dataset.

`evaluate_model` is what the trainer writes to `metrics.json` and what the evaluate
command reports, so both agree on every number.
"""

import numpy as np

TTA = ("none", "flip")


def evaluate_model(model, dataset, class_names, *, top_k=5, tta="none", on_batch=None):
    """Top-1/top-k accuracy, per-class precision and recall, and the confusion matrix.

    Args:
        model: `keras.Model` mapping a batch of images to per-class scores
            (probabilities or logits; only their order matters).
        dataset: iterable of `(images, labels)` batches, e.g. a `tf.data.Dataset`.
            Labels are class indices, or one-hot rows.
        class_names: list of str. Index `i` names class `i`.
        top_k: int. The k of the top-k accuracy, reported as `"top5"` for k=5.
        tta: str. "none", or "flip": average the scores of each image and its mirror
            image (left-right), as timm's and torchvision's validation scripts offer.
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
        scores = np.asarray(predict(images), np.float32)
        if tta == "flip":
            mirrored = np.ascontiguousarray(np.asarray(images)[:, :, ::-1])
            scores = (scores + np.asarray(predict(mirrored), np.float32)) / 2
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
