"""Early stopping whose progress is part of the training checkpoint."""

import math

import keras
import tensorflow as tf

from tfllm.callbacks.checkpointer import restore_weights


def early_stopping_state():
    """The variables a checkpoint keeps of early stopping: evaluations without improvement,
    the best value (NaN before the first evaluation) and its epoch.

    Every training checkpoint holds them, early stopping on or off, so a resumed run may turn
    it on or change its patience.
    """
    state = tf.Module()
    state.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
    state.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
    state.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    return state


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` (with `restore_best_weights=True`) that continues where a
    resumed run left off.

    Keras resets early stopping at the start of every `fit` call and restores the best weights
    at the end of every call. A resumed run makes up to two calls (the rest of the interrupted
    epoch, then the others) and continues a checkpoint: this callback keeps its progress in
    `state` (saved with the checkpoint), starts from it once, and restores the best weights
    only when training is over (stopped early or at `total_steps`). A resumed run reads the best
    weights from `best_checkpoint`, the checkpoint the run's `Checkpointer` kept for the same
    monitored value (Keras would otherwise take the first weights it sees as the best).

    Args:
        state: from `early_stopping_state()`, tracked by the training checkpoint.
        total_steps: int. The optimizer step at which training ends.
        best_checkpoint: callable returning the path of the run's best checkpoint, or None.
        key_file: str or None. The key file of the run's encrypted checkpoints.
        **kwargs: `monitor`, `mode`, `patience`, ... of `keras.callbacks.EarlyStopping`.
    """

    def __init__(self, state, total_steps, best_checkpoint=lambda: None, key_file=None, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.state = state
        self.total_steps = total_steps
        self.best_checkpoint = best_checkpoint
        self.key_file = key_file
        self._continuing = False

    def on_train_begin(self, logs=None):
        if self._continuing:
            return  # the second `fit` call of a resumed run
        super().on_train_begin(logs)
        self._continuing = True
        best = float(self.state.best.numpy())
        if not math.isnan(best):  # restored from a checkpoint
            self.best, self.best_epoch = best, int(self.state.best_epoch.numpy())
            self.wait = int(self.state.wait.numpy())
            self.best_weights = self._read_best_weights()

    def _read_best_weights(self):
        """The weights of the best checkpoint (None without one); the model's stay as they are."""
        path = self.best_checkpoint()
        if not path:
            return None
        current = self.model.get_weights()
        best = restore_weights(self.model, path, self.key_file).get_weights()
        self.model.set_weights(current)
        return best

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best is not None:
            self.state.best.assign(float(self.best))
            self.state.best_epoch.assign(self.best_epoch)
        self.state.wait.assign(self.wait)

    def on_train_end(self, logs=None):
        if self.model.stop_training or int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            super().on_train_end(logs)
