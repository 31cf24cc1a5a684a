"""Optimizers with weight decay on kernels only and gradient clipping.

All are Keras' own (`SGD`, `AdamW`, `Adam`, `Lamb`); this module only chooses their
arguments. The weight EMA is `callbacks.ModelEMA`, not the optimizers' `use_ema`, which
leaves BatchNorm statistics out of the average.
"""

import keras


def decayed_variables(model):
    """The variables that get weight decay: kernels, not BatchNorm parameters or biases."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


def build_optimizer(name, learning_rate, weight_decay, model, momentum=0.9, *,
                    grad_clip=None, grad_accum=1):
    """SGD with Nesterov momentum, AdamW, Adam or LAMB; decoupled decay on kernels only.

    Keras decays decoupled (`w -= lr * weight_decay * w`, outside the momentum). Coupled
    L2 of the same coefficient, as the papers and torchvision apply it, is amplified by
    SGD's momentum to an effective `1 / (1 - momentum)` times that; SGD therefore gets
    `weight_decay / (1 - momentum)` so that `wd=5e-4` means what recipes mean by it.

    Args:
        grad_clip: optional float. Clip the global gradient norm to this (`global_clipnorm`).
        grad_accum: int. Micro-batches per update (Keras' `gradient_accumulation_steps`):
            the gradients of `grad_accum` batches are averaged into one update, as one
            batch `grad_accum` times larger would give (BatchNorm statistics aside, which
            stay per micro-batch). The learning-rate schedule counts micro-batches.
    """
    common = dict(global_clipnorm=grad_clip,
                  gradient_accumulation_steps=grad_accum if grad_accum > 1 else None)
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True,
                                         weight_decay=weight_decay / (1.0 - momentum) or None,
                                         **common)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **common)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None,
                                          **common)
    elif name == "lamb":
        optimizer = keras.optimizers.Lamb(learning_rate, weight_decay=weight_decay or None,
                                          **common)
    else:
        raise ValueError(f"Unknown optimizer. Received: name={name!r}; expected one of "
                         "'sgd', 'adamw', 'adam', 'lamb'.")
    decayed = {id(v) for v in decayed_variables(model)}
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    return optimizer
