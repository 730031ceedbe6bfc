import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.callbacks.checkpointer import Checkpointer, checkpoint_step, restore_training_state, restore_weights
from tfllm.errors import TrainingInterrupted, UserError
from tfllm.run import Checkpoints


class ScriptedValLoss(keras.callbacks.Callback):
    """Overrides val_loss with a scripted sequence so the best epoch is known."""

    def __init__(self, losses):
        super().__init__()
        self.losses = list(losses)

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.losses[epoch]


def small_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    return model


def test_keeps_last_k_and_the_best(tmp_path):
    model = small_model()
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(1))).batch(8).repeat()
    kernels = {}

    class RecordKernel(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels[int(self.model.optimizer.iterations.numpy())] = self.model.layers[0].kernel.numpy().copy()

    directory = str(tmp_path / "checkpoints")
    callbacks = [ScriptedValLoss([3.0, 1.0, 2.0, 2.5, 4.0]), RecordKernel(), Checkpointer(directory, keep=2)]
    model.fit(data, epochs=5, steps_per_epoch=2, callbacks=callbacks, verbose=0, shuffle=False)

    latest = tf.train.get_checkpoint_state(os.path.join(directory, "latest"))
    assert [os.path.basename(p) for p in latest.all_model_checkpoint_paths] == ["ckpt-8", "ckpt-10"]
    with open(os.path.join(directory, "best", "best.json")) as f:
        assert json.load(f) == {"step": 4, "val_loss": 1.0}

    restored = small_model()
    restore_weights(restored, Checkpoints(directory).preferred())
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[4])
    restore_weights(restored, Checkpoints(directory).latest)
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[10])
    # A compiled model (its own optimizer already built) still gets exactly the saved weights.
    restored.optimizer.build(restored.trainable_variables)
    restore_weights(restored, Checkpoints(directory).preferred())
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[4])


def test_no_checkpoint_gives_none(tmp_path):
    assert Checkpoints(str(tmp_path)).preferred() is None


def test_missing_weight_is_an_error(tmp_path):
    model = small_model()
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), "float32"), np.ones(8, "float32"))).batch(4)
    model.fit(data, epochs=1, callbacks=[Checkpointer(str(tmp_path))], verbose=0)
    bigger = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), keras.layers.Dense(1)])
    path = Checkpoints(str(tmp_path)).preferred()
    with pytest.raises(UserError, match=f"checkpoint {path} is damaged or does not fit the run's config.yaml"):
        restore_weights(bigger, path)


class SignalAt(keras.callbacks.Callback):
    """Sends this process `signal_number` at the end of step `step` (as a preemption would)."""

    def __init__(self, step, signal_number):
        super().__init__()
        self.step, self.signal_number = step, signal_number

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), self.signal_number)


def regression_data():
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1))).batch(8).repeat()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_stops(tmp_path, signal_number):
    model = small_model()
    directory = str(tmp_path)
    checkpointer = Checkpointer(directory, keep=5, handle_signals=True)
    previous = signal.getsignal(signal_number)
    # The checkpointer sees the signal at the end of the step it arrived in (step 7).
    callbacks = [SignalAt(7, signal_number), checkpointer]
    with pytest.raises(TrainingInterrupted, match="at step 7.*ckpt-7"):
        model.fit(regression_data(), epochs=3, steps_per_epoch=5, callbacks=callbacks, verbose=0)
    assert Checkpoints(directory).latest.endswith("ckpt-7")
    assert checkpointer.interrupted_at == 7
    assert signal.getsignal(signal_number) is previous
    restored = small_model()
    restore_weights(restored, Checkpoints(directory).latest)
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())


def test_saves_every_n_steps_and_keeps_the_last_k(tmp_path):
    model = small_model()
    directory = str(tmp_path)
    model.fit(regression_data(), epochs=2, steps_per_epoch=6, verbose=0,
              callbacks=[Checkpointer(directory, keep=10, every=4)])
    state = tf.train.get_checkpoint_state(os.path.join(directory, "latest"))
    # Steps 4 and 8 by `every`, 6 and 12 at the epoch ends.
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-4", "ckpt-6", "ckpt-8", "ckpt-12"
    ]


def test_training_state_round_trips_optimizer_rng_extra_and_fingerprint(tmp_path):
    def dropout_model():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
        return model

    model = dropout_model()
    extra = tf.Module()
    extra.value = tf.Variable(3.5, dtype=tf.float64)
    model.fit(regression_data(), epochs=1, steps_per_epoch=3, verbose=0,
              callbacks=[Checkpointer(str(tmp_path), extra={"extra": extra}, fingerprint="abc")])
    path = Checkpoints(str(tmp_path)).latest

    other = dropout_model()
    other.optimizer.build(other.trainable_variables)
    other_extra = tf.Module()
    other_extra.value = tf.Variable(0.0, dtype=tf.float64)
    assert restore_training_state(other, path, extra={"extra": other_extra}) == "abc"
    assert other_extra.value.numpy() == 3.5
    assert int(other.optimizer.iterations.numpy()) == 3
    for a, b in zip(model.optimizer.variables + model.variables, other.optimizer.variables + other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The dropout seed state is part of it: both models now draw the same dropout masks.
    x = np.ones((4, 2), "float32")
    np.testing.assert_array_equal(model.layers[0](x, training=True), other.layers[0](x, training=True))


def test_best_value_survives_a_restart(tmp_path):
    model = small_model()
    callbacks = [ScriptedValLoss([2.0]), Checkpointer(str(tmp_path))]
    model.fit(regression_data(), epochs=1, steps_per_epoch=2, callbacks=callbacks, verbose=0)
    assert Checkpointer(str(tmp_path)).best_value == 2.0
    assert Checkpointer(str(tmp_path), monitor="val_accuracy", mode="max").best_value == -float("inf")


# Saves a checkpoint after every step of a model of about 16 MB (weights and Adam's moments),
# so a kill at any moment is likely to land inside a save.
SAVER = """
import sys
import keras, numpy as np
from tfllm.callbacks.checkpointer import Checkpointer
from tests.callbacks.test_checkpointer import big_model
model = big_model()
x = np.ones((8, 512), "float32")
print("ready", flush=True)
model.fit(x, x, batch_size=8, epochs=10_000, verbose=0, callbacks=[Checkpointer(sys.argv[1], keep=2, every=1)])
"""


def big_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024), keras.layers.Dense(512)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def test_a_kill_during_saves_leaves_a_complete_latest_checkpoint(tmp_path):
    """The data is written under a temporary prefix and renamed, and the index is rewritten last."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    directory = str(tmp_path / "checkpoints")
    process = subprocess.Popen([sys.executable, "-c", SAVER, directory], cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while Checkpoints(directory).latest is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # After a few more saves, kill the saver as soon as one is in flight (its temporary
        # directory exists), or at a random moment if none is seen.
        time.sleep(0.5)
        deadline = time.monotonic() + random.uniform(0.5, 2.0)
        latest = os.path.join(directory, "latest")
        while time.monotonic() < deadline and not any(name.endswith("_temp") for name in os.listdir(latest)):
            pass
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    path = Checkpoints(directory).latest
    step = int(path.rsplit("-", 1)[1])
    assert step >= 2

    model = big_model()
    model.optimizer.build(model.trainable_variables)
    initial = [w.numpy() for w in model.weights]
    restore_training_state(model, path)  # every tensor present and readable
    assert int(model.optimizer.iterations.numpy()) == step
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(initial, model.weights[::2]))
    # The index names only checkpoints whose files are all there.
    for kept in tf.train.get_checkpoint_state(os.path.join(directory, "latest")).all_model_checkpoint_paths:
        assert tf.train.load_checkpoint(kept).get_tensor("optimizer/variables_in_order/00000/.ATTRIBUTES/VARIABLE_VALUE") == int(kept.rsplit("-", 1)[1])


def test_the_step_is_read_from_a_checkpoint_name():
    assert checkpoint_step("/runs/x/checkpoints/best/ckpt-120") == 120
    assert checkpoint_step("ckpt-7") == 7
