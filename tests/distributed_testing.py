"""The equivalences scaled training relies on, shared by every model with `DistributedTrainStep`.

Each setup trains the same model on the same batches as a reference run on one device without
accumulation, and must end with the same weights and the same mean loss:

- 4 accumulated micro-batches == one batch 4 times larger;
- 2 mirrored CPU replicas == 1 device at the same global batch;
- both together (2 replicas x 2 micro-batches) == 1 device.

A test module builds its reference with `train(make_model, dataset, one_device_strategy, 1)`
and parametrizes one test over `SETUPS`, looking the strategy fixture up by name.
"""

import numpy as np
import pytest

# (strategy fixture from tests/conftest.py, grad_accum_steps), with a readable test id.
SETUPS = [
    pytest.param("one_device_strategy", 4, id="four_micro_batches_equal_one_batch_four_times_larger"),
    pytest.param("mirrored_strategy", 1, id="two_replicas_equal_one_device_at_the_same_global_batch"),
    pytest.param("mirrored_strategy", 2, id="accumulation_under_two_replicas_equals_one_device"),
]


def train(make_model, dataset, strategy, grad_accum_steps, steps=None):
    """One epoch of `make_model(strategy, grad_accum_steps)` over `dataset`, one optimizer step a
    batch (`steps` of them: a distributed dataset does not know its length); returns (final
    weights, mean training loss)."""
    model = make_model(strategy, grad_accum_steps)
    # The equivalences also hold for a model that ignores its setup, so check that it has it.
    assert model.distribute_strategy is strategy
    assert model.grad_accum_steps == grad_accum_steps, (model.grad_accum_steps, grad_accum_steps)
    steps = steps or int(dataset.cardinality())
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == steps
    return [w.numpy() for w in model.weights], history.history["loss"][0]


def assert_same_training(got, want):
    """Two `train` results agree: every weight to 1e-5, the loss to 1e-5 relative."""
    assert len(got[0]) == len(want[0])
    for a, b in zip(got[0], want[0]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert got[1] == pytest.approx(want[1], rel=1e-5)


def max_change(weights, model):
    """The largest absolute difference between `weights` and `model`'s current weights."""
    return max(np.abs(a - w.numpy()).max() for a, w in zip(weights, model.weights))
