import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    assert_training_step_lowers_loss,
    assert_weight_count,
    global_policy,
    random_floats,
    random_ids,
)
from tfllm.layers.token_embedding import TokenEmbedding


def make_layer():
    return TokenEmbedding(vocabulary_size=20, hidden_dim=8, embeddings_initializer="random_normal")


def test_call_looks_up_rows_and_logits_multiply_by_the_transpose():
    layer = make_layer()
    token_ids = random_ids((2, 5), 20)
    vectors = assert_output_shape(layer, token_ids, (2, 5, 8))
    matrix = layer.get_weights()[0]
    np.testing.assert_allclose(vectors.numpy(), matrix[token_ids], rtol=0, atol=0)

    hidden = random_floats((2, 5, 8))
    logits = layer.logits(hidden)
    assert logits.dtype == "float32"
    assert tuple(logits.shape) == (2, 5, 20)
    np.testing.assert_allclose(logits.numpy(), hidden @ matrix.T, rtol=1e-5, atol=1e-5)


def test_weights_config_and_training():
    layer = make_layer()
    layer(random_ids((2, 5), 20))
    assert_weight_count(layer, trainable=1)
    assert_config_round_trip(layer)
    assert_training_step_lowers_loss(layer, random_ids((2, 5), 20))


def test_mixed_bfloat16_logits_are_float32_and_close_to_float32_logits():
    token_ids = random_ids((2, 5), 20)
    assert_runs_in_mixed_bfloat16(make_layer, token_ids)
    with global_policy("mixed_bfloat16"):
        layer = make_layer()
        vectors = layer(token_ids)
        logits = layer.logits(vectors)
    assert logits.dtype == "float32"
    matrix = layer.get_weights()[0]
    expected = matrix[token_ids] @ matrix.T
    np.testing.assert_allclose(logits.numpy(), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


@pytest.mark.parametrize("arg_name", ["vocabulary_size", "hidden_dim"])
def test_rejects_non_positive_sizes(arg_name):
    kwargs = {"vocabulary_size": 20, "hidden_dim": 8, arg_name: 0}
    with pytest.raises(ValueError, match=f"{arg_name}=0"):
        TokenEmbedding(**kwargs)
