"""`StopTogetherOnSignal` on one machine: the flag goes through the strategy's all-reduce, the
chief's checkpointer saves the step, and the handlers of before training come back."""

import signal

import pytest

from tests.callbacks.test_checkpointer import SignalAt, regression_data, small_model
from tfllm.callbacks import Checkpointer, StopTogetherOnSignal
from tfllm.errors import TrainingInterrupted
from tfllm.run import Checkpoints


def test_the_chief_saves_the_signalled_step_and_stops(tmp_path, mirrored_strategy):
    with mirrored_strategy.scope():
        model = small_model()
    checkpointer = Checkpointer(str(tmp_path), keep=5)  # its own handlers off, as under multi-worker
    previous = signal.getsignal(signal.SIGTERM)
    callbacks = [SignalAt(4, signal.SIGTERM), StopTogetherOnSignal(mirrored_strategy, checkpointer), checkpointer]
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at step 4; the newest checkpoint is .*ckpt-4"):
        model.fit(regression_data(), epochs=2, steps_per_epoch=5, callbacks=callbacks, verbose=0)
    assert Checkpoints(str(tmp_path)).latest.endswith("ckpt-4")
    assert signal.getsignal(signal.SIGTERM) is previous


def test_another_worker_stops_at_the_same_step_without_saving(one_device_strategy):
    with one_device_strategy.scope():
        model = small_model()
    callbacks = [SignalAt(3, signal.SIGINT), StopTogetherOnSignal(one_device_strategy)]
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT at step 3; the chief saved this step"):
        model.fit(regression_data(), epochs=2, steps_per_epoch=5, callbacks=callbacks, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 3
