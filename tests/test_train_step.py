"""Accumulated micro-batches == one big batch, on one device and under MirroredStrategy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import distributed_testing
from tfllm.train_step import DistributedTrainStep

STEPS, BATCH = 3, 8


class AccumulatingSequential(DistributedTrainStep, keras.Sequential):
    pass


def build(strategy, grad_accum_steps):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = AccumulatingSequential([
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(20, 8),  # sparse (IndexedSlices) gradients
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="gelu"),
            keras.layers.Dense(20),
        ])
        optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1, global_clipnorm=0.05)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            grad_accum_steps=grad_accum_steps,
        )
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(STEPS * BATCH, 5)).astype("int32")
    y = rng.integers(0, 20, size=(STEPS * BATCH,)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


@pytest.fixture(scope="module")
def reference(one_device_strategy):
    return distributed_testing.train(build, data(), one_device_strategy, 1)


def test_reference_moved_and_clipping_is_active(reference, one_device_strategy):
    assert distributed_testing.max_change(reference[0], build(one_device_strategy, 1)) > 1e-3


@pytest.mark.parametrize("strategy_name, grad_accum_steps", distributed_testing.SETUPS)
def test_training_equals_one_device(reference, request, strategy_name, grad_accum_steps):
    strategy = request.getfixturevalue(strategy_name)
    got = distributed_testing.train(build, data(), strategy, grad_accum_steps)
    distributed_testing.assert_same_training(got, reference)


def test_batch_that_does_not_divide_is_an_error(one_device_strategy):
    model = build(one_device_strategy, 3)
    with pytest.raises(ValueError, match="must divide into grad_accum_steps=3"):
        model.fit(data().unbatch().batch(BATCH, drop_remainder=True), epochs=1, verbose=0, shuffle=False)
    model = build(one_device_strategy, 3)
    model.jit_compile = False
    with pytest.raises(tf.errors.InvalidArgumentError, match="must divide into grad_accum_steps=3"):
        model.fit(data(), epochs=1, verbose=0, shuffle=False)


def fit_sparse_adam(strategy):
    """One Adam step of an embedding whose row 1 every row of the batch (both replicas' halves) uses."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = AccumulatingSequential([keras.Input((2,), dtype="int32"), keras.layers.Embedding(4, 3),
                                        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    x = np.array([[1, 0], [1, 2], [1, 3], [1, 1]], "int32")
    model.fit(x, np.ones((4, 2), "float32"), batch_size=4, epochs=1, verbose=0, shuffle=False)
    return model.layers[0].embeddings.numpy()


def test_a_sparse_row_two_replicas_touch_is_summed_before_adam(one_device_strategy, mirrored_strategy):
    # The all-reduce of IndexedSlices concatenates the replicas' slices: row 1 would come twice,
    # and Adam squares each copy (tfllm/compat.py, workaround 1) unless it is summed densely.
    np.testing.assert_allclose(fit_sparse_adam(mirrored_strategy), fit_sparse_adam(one_device_strategy), atol=1e-6)
