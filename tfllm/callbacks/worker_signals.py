"""Multi-worker training: a signal to any one worker stops every worker after the same step."""

import signal

import keras
import tensorflow as tf

from tfllm import distribute
from tfllm.callbacks.signal_flag import SignalFlag
from tfllm.errors import TrainingInterrupted


class StopTogetherOnSignal(keras.callbacks.Callback):
    """Stops all workers of a multi-worker job at the same step when any one gets SIGTERM/SIGINT.

    A preemption notice often reaches one machine only. Stopping that worker alone would leave
    the others waiting for it in the next collective. Every worker flags a signal it receives,
    and after every step the workers sum their flags (one scalar all-reduce), so all of them see
    it after the same step. The chief's `Checkpointer` (placed after this callback) then saves
    that step and raises `TrainingInterrupted`; every other worker raises it too.

    Args:
        strategy: the job's `tf.distribute` strategy.
        checkpointer: the chief's `Checkpointer` (its own signal handling off), or None on the
            other workers.
    """

    def __init__(self, strategy, checkpointer=None):
        super().__init__()
        self.strategy = strategy
        self.checkpointer = checkpointer
        self._signals = SignalFlag()

        @tf.function
        def flagged_workers(flag):
            flags = strategy.run(lambda: distribute.per_replica(flag))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)

        self._flagged_workers = flagged_workers

    def on_train_begin(self, logs=None):
        self._signals.install()  # acted on after each step, by every worker together

    def on_train_end(self, logs=None):
        self.release_signals()

    def release_signals(self):
        """Put back the handlers of before training (also after an exception ends `fit`)."""
        self._signals.release()

    def on_train_batch_end(self, batch, logs=None):
        received = self._signals.number
        flag = tf.constant(0 if received is None else 1, tf.int32)
        if int(self._flagged_workers(flag).numpy()) == 0:
            return
        number = received or signal.SIGTERM
        self.release_signals()
        if self.checkpointer is not None:
            self.checkpointer.stop_after_this_step(number)  # it saves, then raises
            return
        step = int(self.model.optimizer.iterations.numpy())
        who = signal.Signals(received).name if received else "a signal to another worker"
        raise TrainingInterrupted(
            f"stopped by {who} at step {step}; the chief saved this step; run the same command again to resume"
        )
