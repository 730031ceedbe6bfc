"""Learning-rate schedules."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfllm")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to `min_learning_rate`.

    The rate at step `s` (0-based optimizer iterations) is `learning_rate * (s + 1) / warmup_steps`
    during warmup, so the first update already moves the weights, then follows a half cosine that
    reaches `min_learning_rate` at `decay_steps` and stays there.

    Args:
        learning_rate: float. Peak rate, reached at the end of warmup.
        min_learning_rate: float. Final rate.
        warmup_steps: int. Steps of linear warmup (0 for none).
        decay_steps: int. Step at which the decay ends, usually the total number of steps.

    Example:
    >>> schedule = WarmupCosineDecay(1e-3, 1e-4, warmup_steps=10, decay_steps=100)
    >>> optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    """

    def __init__(self, learning_rate, min_learning_rate, warmup_steps, decay_steps):
        if warmup_steps < 0 or decay_steps < 1:
            raise ValueError(
                "warmup_steps must be >= 0 and decay_steps >= 1. "
                f"Received: warmup_steps={warmup_steps}, decay_steps={decay_steps}"
            )
        self.learning_rate = learning_rate
        self.min_learning_rate = min_learning_rate
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warmup_rate = self.learning_rate * (step + 1.0) / warmup
        span = float(max(self.decay_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decay_rate = self.min_learning_rate + (self.learning_rate - self.min_learning_rate) * cosine
        return ops.where(step < self.warmup_steps, warmup_rate, decay_rate)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "min_learning_rate": self.min_learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
        }
