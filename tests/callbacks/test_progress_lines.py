import io
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.callbacks.progress_lines import ProgressLines, fit_verbosity, use_progress_lines


def constant_loss_fit(progress, steps=6, steps_per_epoch=3, verbose=0):
    """A frozen model (lr 0) whose MSE on batch i is exactly i; validation losses are 0 and 1."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    targets = np.sqrt(np.arange(steps + 10, dtype="float32"))
    x = np.zeros((steps + 10, 1), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, targets)).batch(1)
    val = tf.data.Dataset.from_tensor_slices((x[:2], targets[:2])).batch(1)
    model.fit(train, epochs=steps // steps_per_epoch, steps_per_epoch=steps_per_epoch, validation_data=val,
              callbacks=[progress], verbose=verbose, shuffle=False)


def test_one_line_every_log_every_steps_and_one_per_validation():
    stream = io.StringIO()
    constant_loss_fit(ProgressLines(log_every=2, total_steps=6, stream=stream, tokens_per_step=64))
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    step_lines = [line for line in lines if "val_" not in line]
    # Each line's loss is the mean over its interval, across the epoch boundary at step 3.
    assert [re.sub(r"\d+ tokens/s", "T tokens/s", line) for line in step_lines] == [
        "step 2/6: loss 0.5000, learning rate 0, T tokens/s",
        "step 4/6: loss 2.5000, learning rate 0, T tokens/s",
        "step 6/6: loss 4.5000, learning rate 0, T tokens/s",
    ]
    assert [line for line in lines if "val_" in line] == ["step 3/6: val_loss 0.5000", "step 6/6: val_loss 0.5000"]
    assert lines.index("step 3/6: val_loss 0.5000") == 1


def test_prints_to_standard_output_by_default_and_fit_adds_nothing(capsys):
    # Under pytest standard output is not a terminal: fit_verbosity() silences Keras's bar.
    constant_loss_fit(ProgressLines(log_every=3, total_steps=6), verbose=fit_verbosity())
    assert capsys.readouterr().out == (
        "step 3/6: loss 1.0000, learning rate 0\nstep 3/6: val_loss 0.5000\n"
        "step 6/6: loss 4.0000, learning rate 0\nstep 6/6: val_loss 0.5000\n"
    )


def test_what_the_logs_lack_is_left_out():
    stream = io.StringIO()
    progress = ProgressLines(log_every=1, total_steps=10, stream=stream)
    progress.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    progress.model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    progress.model.optimizer.iterations.assign(1)
    progress.on_train_batch_end(0, {"accuracy": 0.5})
    progress.on_epoch_end(0, {"loss": 1.0})
    progress.on_epoch_end(0, {"val_loss": 2.0, "val_note": "text", "val_accuracy": float("nan")})
    assert stream.getvalue() == "step 1/10: learning rate 0.003\nstep 1/10: val_loss 2.0000, val_accuracy nan\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_fit_verbosity_is_auto_on_a_terminal_and_silent_elsewhere():
    assert fit_verbosity(io.StringIO()) == 0 and use_progress_lines(io.StringIO())
    assert fit_verbosity(Terminal()) == "auto" and not use_progress_lines(Terminal())
    closed = io.StringIO()
    closed.close()  # isatty() then raises
    assert fit_verbosity(closed) == 0 and fit_verbosity(object()) == 0


def test_log_every_must_be_positive():
    with pytest.raises(ValueError, match="log_every must be a positive number of steps. Received: log_every=0"):
        ProgressLines(log_every=0, total_steps=10)
