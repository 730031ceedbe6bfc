"""The block's architecture options against NumPy references written from the formulas: a
Llama block (RMSNorm, SwiGLU, grouped-query attention, rotary positions at Llama 3's theta, no
biases) and a BERT block (post-norm, exact GELU, LayerNorm epsilon 1e-12)."""

import math

import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    random_floats,
    reference_attention,
    reference_layer_norm,
)
from tfllm.layers.transformer_block import TransformerBlock

BATCH, SEQ, HIDDEN, HEADS, KV_HEADS, INTERMEDIATE = 2, 6, 16, 4, 2, 24
PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")
THETA = 500000.0


def weights_of(layer):
    return [np.asarray(w, "float64") for w in layer.get_weights()]


def reference_rms_norm(x, scale, epsilon):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + epsilon) * scale


def reference_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2.0)))


def reference_silu(x):
    return x / (1.0 + np.exp(-x))


def llama_block():
    block = TransformerBlock(
        num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE, use_rotary=True,
        max_wavelength=THETA, layer_norm_epsilon=1e-6, norm="rms", mlp="swiglu",
        num_key_value_heads=KV_HEADS, use_bias=False, mlp_use_bias=False, kernel_initializer="random_normal",
    )
    return randomized(block)


def bert_block():
    block = TransformerBlock(
        num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE, causal=False,
        layer_norm_epsilon=1e-12, mlp="gelu", norm_first=False, kernel_initializer="random_normal",
    )
    return randomized(block)


def randomized(block):
    block.build((None, None, HIDDEN))
    # Norm scales away from 1 and non-zero biases, so the references check them too.
    rng = np.random.default_rng(7)
    block.set_weights([w + 0.1 * rng.normal(size=w.shape) for w in block.get_weights()])
    return block


def reference_llama_block(x, block, padding_mask):
    attention = block.self_attention
    epsilon = block.layer_norm_epsilon
    normed = reference_rms_norm(x, *weights_of(block.self_attention_layer_norm), epsilon)
    x = x + reference_attention(
        normed, weights_of(attention.query_key_value_dense) + weights_of(attention.output_dense), HEADS,
        padding_mask=padding_mask, rotary=True, num_key_value_heads=KV_HEADS, max_wavelength=THETA,
    )
    normed = reference_rms_norm(x, *weights_of(block.feedforward_layer_norm), epsilon)
    (gate,), (up,), (down,) = (weights_of(block.feedforward_gate_dense),
                               weights_of(block.feedforward_intermediate_dense),
                               weights_of(block.feedforward_output_dense))
    return x + (reference_silu(normed @ gate) * (normed @ up)) @ down


def reference_bert_block(x, block, padding_mask):
    """Post-norm encoder block: no causal mask, so attention is computed per query row."""
    attention = block.self_attention
    epsilon = block.layer_norm_epsilon
    qkv_kernel, qkv_bias = weights_of(attention.query_key_value_dense)
    output_kernel, output_bias = weights_of(attention.output_dense)
    head_dim = HIDDEN // HEADS
    query, key, value = np.split((x @ qkv_kernel + qkv_bias).reshape(BATCH, SEQ, 3 * HEADS, head_dim), 3, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim)
    scores = np.where(np.asarray(padding_mask, bool)[:, None, None, :], scores, -1e9)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    attended = np.einsum("bhqk,bkhd->bqhd", probabilities, value).reshape(BATCH, SEQ, HIDDEN)
    x = reference_layer_norm(x + attended @ output_kernel + output_bias,
                             *weights_of(block.self_attention_layer_norm), epsilon)
    intermediate_kernel, intermediate_bias = weights_of(block.feedforward_intermediate_dense)
    down_kernel, down_bias = weights_of(block.feedforward_output_dense)
    hidden = reference_gelu(x @ intermediate_kernel + intermediate_bias) @ down_kernel + down_bias
    return reference_layer_norm(x + hidden, *weights_of(block.feedforward_layer_norm), epsilon)


def test_a_llama_block_matches_the_numpy_reference():
    block = llama_block()
    # RMSNorm scales only; no biases anywhere; the fused projection holds 4 query and 2+2
    # key-value heads.
    assert [tuple(w.shape) for w in block.self_attention.weights] == [(HIDDEN, (HEADS + 2 * KV_HEADS) * 4),
                                                                      (HIDDEN, HIDDEN)]
    assert len(block.trainable_weights) == 2 + 2 + 3
    x = random_floats((BATCH, SEQ, HIDDEN))
    expected = reference_llama_block(x.astype("float64"), block, PADDING)
    np.testing.assert_allclose(block(x, padding_mask=PADDING).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_a_bert_block_matches_the_numpy_reference():
    block = bert_block()
    x = random_floats((BATCH, SEQ, HIDDEN))
    expected = reference_bert_block(x.astype("float64"), block, PADDING)
    np.testing.assert_allclose(block(x, padding_mask=PADDING).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_grouped_query_cached_decoding_equals_the_full_pass():
    block = llama_block()
    x = random_floats((BATCH, SEQ, HIDDEN))
    full = block(x).numpy()
    # The cache holds the key-value heads only.
    cache = block.self_attention.empty_cache(BATCH, 8)
    assert [tuple(entries.shape) for entries in cache] == [(BATCH, KV_HEADS, 8, HIDDEN // HEADS)] * 2
    out, cache = block(x[:, :3], cache=cache, cache_index=0)
    np.testing.assert_allclose(out.numpy(), full[:, :3], atol=1e-5)
    for index in range(3, SEQ):
        out, cache = block(x[:, index : index + 1], cache=cache, cache_index=index)
        np.testing.assert_allclose(out.numpy()[:, 0], full[:, index], atol=1e-5)


def test_the_options_round_trip_and_bad_values_are_refused():
    restored = assert_config_round_trip(llama_block())
    assert (restored.norm, restored.mlp, restored.num_key_value_heads, restored.use_bias) == ("rms", "swiglu", 2, False)
    assert restored.self_attention.max_wavelength == THETA
    assert assert_config_round_trip(bert_block()).norm_first is False
    with pytest.raises(ValueError, match="num_key_value_heads=3, num_heads=4"):
        TransformerBlock(num_heads=4, hidden_dim=16, intermediate_dim=8, num_key_value_heads=3)
    with pytest.raises(ValueError, match="mlp='relu'"):
        TransformerBlock(num_heads=4, hidden_dim=16, intermediate_dim=8, mlp="relu")
    with pytest.raises(ValueError, match="norm='batch'"):
        TransformerBlock(num_heads=4, hidden_dim=16, intermediate_dim=8, norm="batch")
