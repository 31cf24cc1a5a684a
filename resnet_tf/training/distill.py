"""Self-distillation from the run's own weight average (`train.py --distill W`).

The EMA of the weights (`--ema`), which validation and the export already use, is the
teacher: for every training batch it classifies the augmented images and their mirror
images (inference mode, no gradient), and the student learns from the average of the two,
the flip test-time augmentation the run would otherwise only apply when serving. The
target is `(1 - W) * labels + W * teacher`; cross-entropy is linear in its target, so the
loss is `(1 - W) * CE(labels) + W * CE(teacher)`, label smoothing applied to both alike.
Accuracy metrics still compare with the labels.
"""

from keras import ops


def install_distillation(model, ema, weight):
    """Makes `model.fit` train `model` towards its EMA teacher's flip-averaged predictions.

    Args:
        model: the `keras.Model` being trained (softmax outputs).
        ema: the run's `callbacks.ModelEMA`, whose average the teacher computes with.
        weight: float in (0, 1]. The teacher's share of the target.
    """
    compute_loss = type(model).compute_loss

    def distilled_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training and y is not None:
            teacher = ops.stop_gradient(_teacher(model, ema, x))
            y = (1.0 - weight) * ops.cast(y, teacher.dtype) + weight * teacher
        return compute_loss(model, x, y, y_pred, sample_weight, training=training)

    model.compute_loss = distilled_loss


def _teacher(model, ema, images):
    """The average's probabilities on `images` and their mirror images (inference mode)."""
    index = {id(weight): i for i, weight in enumerate(ema.averaged_weights())}
    average = ema.average_values()
    trainable = [average[index[id(w)]] for w in model.trainable_variables]
    non_trainable = [average[index[id(w)]] if id(w) in index else w
                     for w in model.non_trainable_variables]
    views = ops.concatenate([images, ops.flip(images, axis=2)], axis=0)
    outputs, _ = model.stateless_call(trainable, non_trainable, views, training=False)
    outputs = ops.cast(outputs, "float32")
    half = ops.shape(images)[0]
    return (outputs[:half] + outputs[half:]) / 2.0

