"""Training progress as whole lines, for standard output that is a file or a pipe, not a terminal.

Keras's progress bar redraws itself with carriage returns: in a terminal that is one line that
updates, in a log file it is hundreds of kilobytes of partial lines. Where no terminal is
attached, `fit` runs silent (`fit_verbosity`) and `ProgressLines` prints a line now and then.
"""

import sys
import time

import keras


def use_progress_lines(stream=None):
    """Whether `stream` (default `sys.stdout`) needs `ProgressLines`: True unless it is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def fit_verbosity(stream=None):
    """`model.fit`'s `verbose=`: `"auto"` (the progress bar) on a terminal, else 0 (silent)."""
    return 0 if use_progress_lines(stream) else "auto"


class ProgressLines(keras.callbacks.Callback):
    """Prints one line every `log_every` optimizer steps and one per validation.

    A step line gives the mean loss over the steps since the previous line, the learning rate and,
    with `tokens_per_step`, the throughput; a validation line gives every `val_` metric in the
    logs. What the logs lack is left out of the line.

    Args:
        log_every: int. Optimizer steps between lines.
        total_steps: int. Optimizer steps of the whole run, shown as `step N/TOTAL`.
        stream: where lines go; default `sys.stdout` at the time of printing.
        tokens_per_step: int. Tokens in one optimizer step, for `tokens/s`; 0 to leave it out.

    Example:
    ```python
    callbacks = [ProgressLines(log_every=20, total_steps=600)] if use_progress_lines() else []
    model.fit(data, epochs=1, callbacks=callbacks, verbose=fit_verbosity())
    # step 20/600: loss 3.4512, learning rate 0.003, 12345 tokens/s
    ```
    """

    def __init__(self, log_every, total_steps, stream=None, tokens_per_step=0):
        super().__init__()
        if log_every < 1:
            raise ValueError(f"log_every must be a positive number of steps. Received: log_every={log_every}")
        self.log_every = log_every
        self.total_steps = total_steps
        self.stream = stream
        self.tokens_per_step = tokens_per_step

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._last_step = self._step()
        # The loss summed over the batches since the last line, and their count.
        self._interval_loss_sum, self._interval_batches = 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_loss_sum, self._epoch_batches = 0.0, 0
        # Throughput counts training only, not the validation and checkpoints since the last line.
        self._mark_time, self._mark_step = time.perf_counter(), self._step()

    def on_train_batch_end(self, batch, logs=None):
        loss = _number((logs or {}).get("loss"))
        if loss is not None:
            # Keras's `loss` is the mean of the epoch's batches so far; undo the running mean.
            epoch_loss_sum = loss * (batch + 1)
            self._interval_loss_sum += epoch_loss_sum - self._epoch_loss_sum
            self._interval_batches += batch + 1 - self._epoch_batches
            self._epoch_loss_sum, self._epoch_batches = epoch_loss_sum, batch + 1
        step = self._step()
        # `//`, not `%`: with several steps per execution a multiple of log_every can be skipped.
        if step // self.log_every <= self._last_step // self.log_every:
            return
        self._last_step = step
        parts = []
        if self._interval_batches:
            parts.append(f"loss {self._interval_loss_sum / self._interval_batches:.4f}")
            self._interval_loss_sum, self._interval_batches = 0.0, 0
        learning_rate = _number(getattr(self.model.optimizer, "learning_rate", None))
        if learning_rate is not None:
            parts.append(f"learning rate {learning_rate:.3g}")
        now = time.perf_counter()
        if self.tokens_per_step and step > self._mark_step:
            tokens_per_sec = (step - self._mark_step) * self.tokens_per_step / max(now - self._mark_time, 1e-9)
            parts.append(f"{tokens_per_sec:.0f} tokens/s")
        self._mark_time, self._mark_step = now, step
        self._print(f"step {step}/{self.total_steps}: " + ", ".join(parts))

    def on_epoch_end(self, epoch, logs=None):
        values = {key: _number(value) for key, value in (logs or {}).items() if key.startswith("val_")}
        parts = [f"{key} {value:.4f}" for key, value in values.items() if value is not None]
        if parts:
            self._print(f"step {self._step()}/{self.total_steps}: " + ", ".join(parts))

    def _print(self, line):
        stream = sys.stdout if self.stream is None else self.stream
        stream.write(line + "\n")
        stream.flush()


def _number(value):
    """`value` as a float, or None when it is missing or not one number."""
    if value is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return None
