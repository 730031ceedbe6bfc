import keras
import numpy as np
import pytest

from tfllm.losses import SmoothedSparseCrossentropy


def reference(targets, logits, weights, smoothing):
    """Mean over weighted tokens of cross-entropy against (1 - e) one-hot + e / vocabulary."""
    logits = logits.astype("float64")
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    vocabulary = logits.shape[-1]
    smoothed = np.full(logits.shape, smoothing / vocabulary)
    np.put_along_axis(smoothed, targets[..., None], 1 - smoothing + smoothing / vocabulary, axis=-1)
    per_token = -(smoothed * log_probabilities).sum(-1)
    return (per_token * weights).sum() / weights.sum()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_matches_numpy_reference_over_weighted_tokens(smoothing):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 7, size=(3, 5))
    logits = rng.normal(size=(3, 5, 7)).astype("float32") * 3
    weights = (rng.random((3, 5)) > 0.4).astype("float32")
    loss = SmoothedSparseCrossentropy(smoothing)(targets, logits, sample_weight=weights)
    assert float(loss) == pytest.approx(reference(targets, logits, weights, smoothing), rel=1e-5)


def test_without_smoothing_it_is_keras_sparse_cross_entropy_and_round_trips():
    rng = np.random.default_rng(1)
    targets, logits = rng.integers(0, 7, size=(4, 3)), rng.normal(size=(4, 3, 7)).astype("float32")
    weights = np.ones((4, 3), "float32")
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    assert float(SmoothedSparseCrossentropy(0.0)(targets, logits, weights)) == pytest.approx(
        float(keras_loss(targets, logits, weights)), rel=1e-6)
    loss = SmoothedSparseCrossentropy(0.2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SmoothedSparseCrossentropy) and clone.label_smoothing == 0.2
    with pytest.raises(ValueError, match="label_smoothing"):
        SmoothedSparseCrossentropy(1.0)
