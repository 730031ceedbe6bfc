"""Checkpoints encrypted at rest (`Checkpointer(key_file=...)`): the same layout, kept and best
checkpoints and restores as plain ones, sealed on disk and refused without their key."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.callbacks.test_checkpointer import ScriptedValLoss, regression_data, small_model
from tfllm.callbacks.checkpointer import Checkpointer, read_base, restore_training_state, restore_weights
from tfllm.encryption import is_encrypted, write_new_key
from tfllm.errors import UserError
from tfllm.run import Checkpoints


@pytest.fixture
def key_file(tmp_path):
    return write_new_key(str(tmp_path / "run.key")).path


def test_kept_and_best_checkpoints_are_sealed_and_restore_with_the_key(tmp_path, key_file):
    model = small_model()
    kernels = {}

    class RecordKernel(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels[int(self.model.optimizer.iterations.numpy())] = self.model.layers[0].kernel.numpy().copy()

    directory = str(tmp_path / "checkpoints")
    callbacks = [ScriptedValLoss([3.0, 1.0, 2.0, 2.5]), RecordKernel(),
                 Checkpointer(directory, keep=2, fingerprint="abc", key_file=key_file)]
    model.fit(regression_data(), epochs=4, steps_per_epoch=2, callbacks=callbacks, verbose=0, shuffle=False)

    checkpoints = Checkpoints(directory)
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(
        os.path.join(directory, "latest")).all_model_checkpoint_paths] == ["ckpt-6", "ckpt-8"]
    assert checkpoints.steps() == [6, 8] and os.path.basename(checkpoints.best) == "ckpt-4"
    with open(os.path.join(directory, "best", "best.json")) as f:
        assert json.load(f) == {"step": 4, "val_loss": 1.0}
    files = glob.glob(os.path.join(directory, "*", "ckpt-*"))
    assert len(files) == 6 and all(is_encrypted(path) for path in files)
    assert not glob.glob(os.path.join(directory, "*", "*.tmp"))

    restored = small_model()
    restored.optimizer.build(restored.trainable_variables)
    restore_weights(restored, checkpoints.best, key_file)
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[4])
    assert restore_training_state(restored, checkpoints.latest, key_file=key_file) == "abc"
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), kernels[8])
    assert int(restored.optimizer.iterations.numpy()) == 8
    assert read_base(checkpoints.latest, key_file) is None


def test_an_encrypted_checkpoint_without_or_with_another_key_is_one_line(tmp_path, key_file):
    directory = str(tmp_path / "checkpoints")
    small_model().fit(regression_data(), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False,
                      callbacks=[Checkpointer(directory, key_file=key_file)])
    path = Checkpoints(directory).latest
    other = write_new_key(str(tmp_path / "other.key")).path
    for key, message in [(None, "is encrypted; pass --encrypt-key-file"),
                         (other, "was not encrypted with this key or was changed")]:
        with pytest.raises(UserError, match=message) as error:
            restore_weights(small_model(), path, key)
        assert "\n" not in str(error.value)


def test_a_run_that_turns_encryption_on_keeps_reading_its_plain_checkpoints(tmp_path, key_file):
    directory = str(tmp_path / "checkpoints")
    model = small_model()
    model.fit(regression_data(), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False,
              callbacks=[Checkpointer(directory, keep=3)])
    plain = Checkpoints(directory).latest
    model.fit(regression_data(), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False,
              callbacks=[Checkpointer(directory, keep=3, key_file=key_file)])
    checkpoints = Checkpoints(directory)
    assert checkpoints.steps() == [2, 4]
    assert not is_encrypted(plain + ".index") and is_encrypted(checkpoints.latest + ".index")
    np.testing.assert_array_equal(restore_weights(small_model(), checkpoints.latest, key_file).get_weights()[0],
                                  model.layers[0].kernel.numpy())
    restore_weights(small_model(), plain)  # no key needed for what was written without one
