import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.callbacks import Checkpointer, StopOnNonFiniteLoss
from tfllm.errors import UserError


def test_stops_at_the_first_non_finite_step_and_saves_nothing_from_it(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.ones((80, 2), "float32")
    y = np.ones(80, "float32")
    y[56:64] = np.nan  # the 8th batch of 8 (step 8) has a NaN target
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    directory = str(tmp_path)
    callbacks = [StopOnNonFiniteLoss(directory, " (hint)"), Checkpointer(directory, every=3)]
    with pytest.raises(UserError, match=r"became nan at step 8; the last good checkpoint is .*ckpt-6; .*\(hint\)"):
        model.fit(data, epochs=1, callbacks=callbacks, verbose=0)
    saved = tf.train.get_checkpoint_state(os.path.join(directory, "latest")).all_model_checkpoint_paths
    assert [os.path.basename(p) for p in saved] == ["ckpt-3", "ckpt-6"]
    assert int(model.optimizer.iterations.numpy()) == 8


def test_finite_losses_pass():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((16, 2), "float32"), np.ones(16, "float32"))).batch(4)
    history = model.fit(data, epochs=2, callbacks=[StopOnNonFiniteLoss()], verbose=0)
    assert len(history.history["loss"]) == 2
