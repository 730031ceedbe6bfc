"""A process killed while it writes checkpoints leaves a usable newest checkpoint: the data is
written under a temporary prefix and renamed, and the index is rewritten last."""

import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfllm.callbacks.checkpointer import latest_checkpoint, restore_training_state

# Saves a checkpoint after every step of a model of about 16 MB (weights and Adam's moments),
# so a kill at any moment is likely to land inside a save.
SAVER = """
import sys
import keras, numpy as np
from tfllm.callbacks.checkpointer import Checkpointer
from tests.callbacks.test_checkpoint_atomicity import big_model
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
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    directory = str(tmp_path / "checkpoints")
    process = subprocess.Popen([sys.executable, "-c", SAVER, directory], cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while latest_checkpoint(directory, prefer_best=False) is None and time.monotonic() < deadline:
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
    path = latest_checkpoint(directory, prefer_best=False)
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
