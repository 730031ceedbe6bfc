"""Early stopping resumed from a checkpoint stops where an uninterrupted run stops, with the
same best weights."""

import keras
import numpy as np
import tensorflow as tf

from tfllm.callbacks import Checkpointer, ResumableEarlyStopping, early_stopping_state
from tfllm.callbacks.checkpointer import restore_training_state
from tfllm.run import Checkpoints

# val_accuracy of each epoch: best at epoch 1, then two worse ones stop the run (patience 2).
SCRIPT = [0.5, 0.9, 0.6, 0.4, 0.95, 0.99]
STEPS_PER_EPOCH = 2


class ScriptedAccuracy(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = SCRIPT[epoch]


def model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
    # One pass is one epoch: a new `fit` call sees what the uninterrupted run saw at that epoch.
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(8).repeat()
    return model, data


def callbacks(directory, state, best_checkpoint=lambda: None):
    stopping = ResumableEarlyStopping(state, total_steps=len(SCRIPT) * STEPS_PER_EPOCH,
                                      best_checkpoint=best_checkpoint, monitor="val_accuracy", mode="max",
                                      patience=2)
    checkpointer = Checkpointer(directory, keep=10, monitor="val_accuracy", mode="max",
                                extra={"early_stopping": state})
    return [ScriptedAccuracy(), stopping, checkpointer], stopping


def test_a_run_resumed_after_its_best_epoch_stops_at_the_same_epoch_with_the_best_weights(tmp_path):
    model, data = model_and_data()
    reference, stopping = callbacks(str(tmp_path / "reference"), early_stopping_state())
    history = model.fit(data, epochs=len(SCRIPT), steps_per_epoch=STEPS_PER_EPOCH, callbacks=reference, verbose=0)
    assert len(history.history["loss"]) == 4 and stopping.stopped_epoch == 3
    expected = [w.numpy() for w in model.weights]

    # The same run stopped after epoch 3 (step 6) without early stopping ending it...
    directory = str(tmp_path / "resumed")
    model, data = model_and_data()
    first, stopping = callbacks(directory, early_stopping_state())
    model.fit(data, epochs=3, steps_per_epoch=STEPS_PER_EPOCH, callbacks=first, verbose=0)
    assert stopping.stopped_epoch == 0
    assert not np.array_equal(model.weights[0].numpy(), expected[0])  # best weights not restored yet

    # ...and resumed in a new process: a new model and callbacks from the latest checkpoint.
    model, data = model_and_data()
    state = early_stopping_state()
    restore_training_state(model, Checkpoints(directory).latest, extra={"early_stopping": state})
    assert int(state.wait.numpy()) == 1 and float(state.best.numpy()) == 0.9
    best = Checkpoints(directory).preferred()  # checkpoints/best: epoch 1
    assert best.endswith(f"ckpt-{2 * STEPS_PER_EPOCH}")
    second, stopping = callbacks(directory, state, best_checkpoint=lambda: best)
    history = model.fit(data, initial_epoch=3, epochs=len(SCRIPT), steps_per_epoch=STEPS_PER_EPOCH,
                        callbacks=second, verbose=0)
    assert len(history.history["loss"]) == 1 and stopping.stopped_epoch == 3
    for actual, wanted in zip(model.weights, expected):
        np.testing.assert_array_equal(actual.numpy(), wanted)


def test_training_that_goes_on_keeps_its_weights_between_fit_calls(tmp_path):
    """A resumed run's first `fit` call (the rest of an epoch) must not restore the best weights."""
    model, data = model_and_data()
    cbs, stopping = callbacks(str(tmp_path), early_stopping_state())
    model.fit(data, epochs=3, steps_per_epoch=STEPS_PER_EPOCH, callbacks=cbs, verbose=0)
    after_three = [w.numpy() for w in model.weights]
    model.fit(data, initial_epoch=3, epochs=4, steps_per_epoch=STEPS_PER_EPOCH, callbacks=cbs, verbose=0)
    # The second call continued the count (wait 1 -> 2): epoch 3 stopped the run and restored epoch 1.
    assert stopping.stopped_epoch == 3
    assert not np.array_equal(model.weights[0].numpy(), after_three[0])
