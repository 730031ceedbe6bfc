import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tfllm.callbacks.metrics_logger import MetricsLogger


def constant_loss_run(tmp_path, steps, steps_per_epoch, log_every):
    """A frozen model (lr 0) whose MSE on batch i is exactly i, so every interval mean is known."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    targets = np.sqrt(np.arange(steps + 10, dtype="float32"))  # loss of batch i = i
    x = np.zeros((steps + 10, 1), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, targets)).batch(1)
    val = tf.data.Dataset.from_tensor_slices((x[:2], targets[:2])).batch(1)
    logger = MetricsLogger(str(tmp_path / "metrics.jsonl"), str(tmp_path / "logs"), 64, log_every, steps)
    model.fit(train, epochs=math.ceil(steps / steps_per_epoch), steps_per_epoch=steps_per_epoch,
              validation_data=val, callbacks=[logger], verbose=0, shuffle=False)
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_records_hold_interval_means_and_validation(tmp_path):
    records = constant_loss_run(tmp_path, steps=20, steps_per_epoch=10, log_every=4)
    assert [r["step"] for r in records] == [4, 8, 10, 12, 16, 20]
    # Interval (a, b] of steps holds batches a..b-1, whose losses are a..b-1.
    bounds = [0, 4, 8, 10, 12, 16, 20]
    for record, a, b in zip(records, bounds, bounds[1:]):
        assert record["loss"] == pytest.approx(np.mean(np.arange(a, b)), rel=1e-5)
        assert record["learning_rate"] == 0.0 and record["tokens_per_sec"] > 0
    evaluated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [10, 20]
    for r in evaluated:
        assert r["val_loss"] == pytest.approx(0.5) and r["val_perplexity"] == pytest.approx(math.exp(0.5))


def test_stops_at_total_steps_inside_an_epoch(tmp_path):
    records = constant_loss_run(tmp_path, steps=7, steps_per_epoch=5, log_every=100)
    assert [r["step"] for r in records] == [5, 7]
    assert records[-1]["loss"] == pytest.approx(5.5)


def test_tensorboard_holds_the_scalars(tmp_path):
    constant_loss_run(tmp_path, steps=10, steps_per_epoch=5, log_every=5)
    acc = event_accumulator.EventAccumulator(
        str(tmp_path / "logs"), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"train/loss", "train/learning_rate", "train/tokens_per_sec", "val/loss", "val/perplexity"} <= tags
    losses = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors("train/loss")]
    assert losses == [(5, pytest.approx(2.0)), (10, pytest.approx(7.0))]


def test_throughput_excludes_validation_time(tmp_path, monkeypatch):
    """A fake clock: each training step takes 1 s, each validation 100 s."""
    import types

    from tfllm.callbacks import metrics_logger

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(metrics_logger, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.now += 1.0

        def on_test_begin(self, logs=None):
            clock.now += 100.0

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.zeros((40, 1), "float32"), np.zeros(40, "float32"))).batch(1)
    logger = MetricsLogger(str(tmp_path / "m.jsonl"), None, tokens_per_step=64, log_every=2, total_steps=8)
    model.fit(data, epochs=2, steps_per_epoch=4, validation_data=data.take(2), callbacks=[Tick(), logger],
              verbose=0, shuffle=False)
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert [r["tokens_per_sec"] for r in records] == [pytest.approx(64.0)] * 4
