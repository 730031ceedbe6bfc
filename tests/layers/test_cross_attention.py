import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    assert_weight_count,
    random_floats,
)
from tfllm.layers.cross_attention import CrossAttention

BATCH, SEQ, MEMORY, HIDDEN, HEADS = 2, 3, 6, 16, 4
MEMORY_PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")


def make_layer():
    layer = CrossAttention(num_heads=HEADS, hidden_dim=HIDDEN, bias_initializer="random_normal")
    layer.build((None, None, HIDDEN))
    return layer


def reference_cross_attention(x, memory, layer, memory_padding_mask):
    """Every query over every real memory token; the key-value kernel is (keys | values)."""
    weights = [np.asarray(w, "float64") for w in layer.get_weights()]
    query_kernel, query_bias, key_value_kernel, key_value_bias, output_kernel, output_bias = weights
    head_dim = HIDDEN // HEADS
    query = (x @ query_kernel + query_bias).reshape(BATCH, -1, HEADS, head_dim)
    key_value = (memory @ key_value_kernel + key_value_bias).reshape(BATCH, MEMORY, 2, HEADS, head_dim)
    key, value = key_value[:, :, 0], key_value[:, :, 1]
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim)
    scores = np.where(np.asarray(memory_padding_mask, bool)[:, None, None, :], scores, -np.inf)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probabilities, value).reshape(BATCH, -1, HIDDEN)
    return out @ output_kernel + output_bias


def test_matches_numpy_reference_and_ignores_padded_memory():
    layer = make_layer()
    x, memory = random_floats((BATCH, SEQ, HIDDEN)), random_floats((BATCH, MEMORY, HIDDEN), seed=1)
    out = assert_output_shape(layer, x, x.shape, memory=memory, memory_padding_mask=MEMORY_PADDING)
    expected = reference_cross_attention(x.astype("float64"), memory.astype("float64"), layer, MEMORY_PADDING)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=1e-5)
    changed = memory.copy()
    changed[0, 4:] = random_floats((2, HIDDEN), seed=9)  # padded positions of row 0
    again = layer(x, memory=changed, memory_padding_mask=MEMORY_PADDING).numpy()
    np.testing.assert_array_equal(again, out.numpy())


def test_precomputed_keys_and_values_give_the_same_output():
    layer = make_layer()
    x, memory = random_floats((BATCH, SEQ, HIDDEN)), random_floats((BATCH, MEMORY, HIDDEN), seed=1)
    key_value = layer.key_value(memory)
    assert [tuple(entries.shape) for entries in key_value] == [(BATCH, HEADS, MEMORY, HIDDEN // HEADS)] * 2
    full = layer(x, memory=memory, memory_padding_mask=MEMORY_PADDING).numpy()
    cached = layer(x, memory_padding_mask=MEMORY_PADDING, key_value=key_value).numpy()
    np.testing.assert_allclose(cached, full, atol=1e-6)


def test_weights_config_and_mixed_precision():
    layer = make_layer()
    assert_weight_count(layer, trainable=6)
    assert_config_round_trip(layer)
    x, memory = random_floats((BATCH, SEQ, HIDDEN)), random_floats((BATCH, MEMORY, HIDDEN), seed=1)
    assert_runs_in_mixed_bfloat16(lambda: CrossAttention(num_heads=HEADS, hidden_dim=HIDDEN), x, memory=memory)


@pytest.mark.parametrize("kwargs", [dict(num_heads=3, hidden_dim=16), dict(num_heads=2, hidden_dim=16, dropout=1.0)])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        CrossAttention(**kwargs)
