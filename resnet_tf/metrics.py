"""Classification metrics of a trained model on a labelled dataset.

`evaluate_model` is what the trainer writes to `metrics.json` and what the evaluate
command reports, so both agree on every number.
"""

import numpy as np

from resnet_tf.files import atomic_write
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


def evaluate_model(model, dataset, class_names, *, top_k=5, tta="none", on_batch=None,
                   temperature=None):
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
        temperature: optional float. Divides the log-probabilities before the softmax
            (temperature scaling, `fit_temperature`): the probabilities the calibrated
            model gives; the ranking, and so every accuracy, is unchanged.

    Returns:
        A JSON-serializable dict: `top1`, `top<k>` (fractions in 0..1), `examples`,
        `class_names`, `per_class` (`{name: {"precision", "recall", "support"}}`) and
        `confusion_matrix` (rows: true class, columns: predicted class), `ece` (the
        expected calibration error of the top-1 probability, `CALIBRATION_BINS` equal-width
        bins) and `reliability` (per bin: mean confidence, accuracy and count).
    """
    classes = len(class_names)
    k = min(top_k, classes)
    confusion = np.zeros((classes, classes), np.int64)
    top_k_hits = 0
    if tta not in TTA:
        raise ValueError(f"Unknown tta. Received: tta={tta!r}; expected one of "
                         f"{', '.join(repr(t) for t in TTA)}.")
    predict = _predict_function(model)
    calibration = _Calibration()
    for images, labels in dataset:
        scores = probabilities(_scores(predict, images, tta), temperature)
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=1)
        labels = labels.astype(np.int64)
        if on_batch is not None:
            on_batch(images, labels, scores)
        np.add.at(confusion, (labels, scores.argmax(axis=1)), 1)
        calibration.add(scores, labels)
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
        **calibration.result(),
    }


CALIBRATION_BINS = 15


def probabilities(scores, temperature=None):
    """Class probabilities from a model's scores: probabilities as they are (rows of
    non-negative numbers summing to 1), logits through a softmax; with `temperature`, the
    log-probabilities divided by it first."""
    scores = np.asarray(scores, np.float64)
    is_probability = (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    if is_probability and not temperature:
        return scores.astype(np.float32)
    logits = np.log(np.maximum(scores, 1e-30)) if is_probability else scores
    logits = logits / (temperature or 1.0)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class _Calibration:
    """Top-1 confidence against correctness, in equal-width bins (Guo et al. 2017)."""

    def __init__(self, bins=CALIBRATION_BINS):
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.confidence = np.zeros(bins)
        self.correct = np.zeros(bins)

    def add(self, probs, labels):
        confidence = probs.max(axis=1)
        index = np.minimum((confidence * self.bins).astype(int), self.bins - 1)
        np.add.at(self.count, index, 1)
        np.add.at(self.confidence, index, confidence)
        np.add.at(self.correct, index, probs.argmax(axis=1) == labels)

    def result(self):
        total = max(int(self.count.sum()), 1)
        seen = np.maximum(self.count, 1)
        gap = np.abs(self.confidence / seen - self.correct / seen)
        return {
            "ece": float((self.count / total * gap).sum()),
            "reliability": {
                "bins": self.bins,
                "confidence": (self.confidence / seen).round(6).tolist(),
                "accuracy": (self.correct / seen).round(6).tolist(),
                "count": self.count.tolist(),
            },
        }


def calibration(probs, labels, bins=CALIBRATION_BINS):
    """`{"ece": ..., "reliability": {...}}` of probabilities `[N, classes]` and labels `[N]`."""
    result = _Calibration(bins)
    result.add(np.asarray(probs), np.asarray(labels))
    return result.result()


def fit_temperature(probs, labels):
    """The temperature T minimising the negative log-likelihood of `softmax(log p / T)` on
    held-out `probs` `[N, classes]` and integer `labels` `[N]` (temperature scaling, Guo et
    al. 2017): one number, found by golden-section search over log T in [log 0.05, log 20]."""
    labels = np.asarray(labels, np.int64)
    rows = np.arange(len(labels))

    def nll(log_t):
        scaled = probabilities(probs, float(np.exp(log_t)))
        return -np.log(np.maximum(scaled[rows, labels], 1e-30)).mean()

    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(np.exp((low + high) / 2))


def plot_reliability(metrics, path, title=None):
    """Writes the reliability diagram of `evaluate_model`'s result as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reliability = metrics["reliability"]
    bins = reliability["bins"]
    centres = (np.arange(bins) + 0.5) / bins
    figure = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    shown = np.asarray(reliability["count"]) > 0
    ax.bar(centres[shown], np.asarray(reliability["accuracy"])[shown], width=1 / bins,
           edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title or f"ECE {metrics['ece']:.4f}")
    ax.legend(loc="upper left")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


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
