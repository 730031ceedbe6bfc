import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.callbacks.checkpointer import Checkpointer, latest_checkpoint, restore_weights


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
    restore_weights(restored, latest_checkpoint(directory))
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[4])
    restore_weights(restored, latest_checkpoint(directory, prefer_best=False))
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[10])
    # A compiled model (its own optimizer already built) still gets exactly the saved weights.
    restored.optimizer.build(restored.trainable_variables)
    restore_weights(restored, latest_checkpoint(directory))
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[4])


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None


def test_missing_weight_is_an_error(tmp_path):
    model = small_model()
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), "float32"), np.ones(8, "float32"))).batch(4)
    model.fit(data, epochs=1, callbacks=[Checkpointer(str(tmp_path))], verbose=0)
    bigger = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), keras.layers.Dense(1)])
    with pytest.raises(AssertionError):
        restore_weights(bigger, latest_checkpoint(str(tmp_path)))
