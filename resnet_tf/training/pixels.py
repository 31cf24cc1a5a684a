"""Training on uint8 pixels: the model's training step normalizes them on the accelerator.

A training batch of uint8 pixels (`load_data(train_pixels="uint8")`) is a quarter of the
bytes of normalized float32 images, and leaves the normalization to the device that runs
the step, as timm's PrefetchLoader and DALI do: on an ImageNet pipeline that is the
difference between the CPU keeping up with decoding and not
(`benchmarks/imagenet_input.py`).

    from resnet_tf.data import load_data
    from resnet_tf.training import normalizing_train_step

    data = load_data(data_dir="imagenet/train", train_pixels="auto")
    with normalizing_train_step(model, data.train_pixels == "uint8"):
        model.fit(data.train, validation_data=data.val)
"""

import contextlib

from resnet_tf.data.preprocessing import normalize


@contextlib.contextmanager
def normalizing_train_step(model, enabled=True):
    """Within it, `model.fit`'s training step normalizes each batch's images first.

    Only the training step: validation batches stay normalized float32, and the model, its
    weights and files are unchanged; on leaving, `model.train_step` is as it was (an
    override set before, such as distillation's, keeps working inside). `fit` builds its
    step function anew after `compile`, so compile inside or before it, not after.
    """
    if not enabled:
        yield model
        return
    own = vars(model).get("train_step")
    step = model.train_step

    def train_step(data):
        if isinstance(data, (tuple, list)):  # (images, labels[, sample weights])
            return step((normalize(data[0]), *data[1:]))
        return step(normalize(data))

    model.train_step = train_step
    try:
        yield model
    finally:
        if own is None:
            del model.train_step
        else:
            model.train_step = own
