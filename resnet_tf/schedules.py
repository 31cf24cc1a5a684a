"""Learning-rate schedules stored inside compiled `.keras` checkpoints.

It lives under everything else because loading a compiled run checkpoint needs it
registered, and `import resnet_tf` registers it without importing the trainer.
"""

import math

import keras

from resnet_tf.errors import check_choice

SCHEDULES = ("cosine", "step")


@keras.saving.register_keras_serializable(package="resnet_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to zero or steps down at milestones.

    Args:
        peak: float. Learning rate at the end of the warmup.
        total_steps: int. Length of training in optimizer steps.
        warmup_steps: int. Steps of linear warmup from `peak / warmup_steps`.
        decay: str. "cosine" or "step".
        milestones: list of int. Steps where "step" multiplies the rate by `decay_rate`.
        decay_rate: float. Factor of each step decay.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", milestones=(),
                 decay_rate=0.1):
        check_choice("decay", decay, SCHEDULES)
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.milestones = [int(m) for m in milestones]
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        if self.decay == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        else:
            passed = sum(ops.cast(step >= m, "float32") for m in self.milestones)
            rate = self.peak * ops.power(self.decay_rate, passed)
        if not self.warmup_steps:
            return rate
        warm = self.peak * (step + 1.0) / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, rate)

    def get_config(self):
        return dict(peak=self.peak, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, decay=self.decay,
                    milestones=self.milestones, decay_rate=self.decay_rate)


