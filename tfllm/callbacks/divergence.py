"""Stop a diverging run at the first non-finite loss, before anything saves its weights."""

import math
import os

import keras
import tensorflow as tf

from tfllm.errors import UserError


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises a `UserError` naming the step and the last good checkpoint when the loss is NaN/Inf.

    Keras reports the running mean of the epoch's losses, which turns non-finite at the first
    non-finite step and stays so. Place this callback before the `Checkpointer`: raising ends
    `fit` at once, so no checkpoint (and no validation) is made from the broken weights and the
    run directory stays resumable from its newest checkpoint.

    Args:
        checkpoint_dir: str or None. The run's `checkpoints/` directory, to name the last good
            checkpoint in the message.
        resume_hint: str. What to run to resume (named in the message).
    """

    def __init__(self, checkpoint_dir=None, resume_hint=""):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.resume_hint = resume_hint

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = int(self.model.optimizer.iterations.numpy())
        last = None
        if self.checkpoint_dir:
            last = tf.train.latest_checkpoint(os.path.join(self.checkpoint_dir, "latest"))
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
        raise UserError(
            f"the training loss became {float(loss)} at step {step}; {where}; "
            f"resume with a lower train.learning_rate{self.resume_hint}"
        )
