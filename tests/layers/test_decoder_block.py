import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_weight_count,
    random_floats,
    reference_attention,
    reference_layer_norm,
)
from tests.layers.test_cross_attention import reference_cross_attention
from tfllm.layers.decoder_block import DecoderBlock

BATCH, SEQ, MEMORY, HIDDEN, HEADS = 2, 3, 6, 16, 4
MEMORY_PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")


def make_block(norm_first=True):
    block = DecoderBlock(num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=32, mlp="gelu", norm_first=norm_first)
    block.build((None, None, HIDDEN))
    return block


def weights(layer):
    return [np.asarray(w, "float64") for w in layer.get_weights()]


def reference_decoder_block(x, memory, block):
    """Self-attention, cross-attention and an exact-GELU MLP, each a residual branch, normalized
    before the branch (pre-norm) or after the sum (post-norm)."""
    from scipy.special import erf

    def branch(x, norm, function):
        if block.norm_first:
            return x + function(reference_layer_norm(x, *weights(norm)))
        return reference_layer_norm(x + function(x), *weights(norm))

    attention = block.self_attention
    x = branch(x, block.self_attention_layer_norm, lambda h: reference_attention(
        h, weights(attention.query_key_value_dense) + weights(attention.output_dense), HEADS))
    x = branch(x, block.cross_attention_layer_norm,
               lambda h: reference_cross_attention(h, memory, block.cross_attention, MEMORY_PADDING))

    def mlp(h):
        kernel, bias = weights(block.feedforward_intermediate_dense)
        hidden = h @ kernel + bias
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        kernel, bias = weights(block.feedforward_output_dense)
        return hidden @ kernel + bias

    return branch(x, block.feedforward_layer_norm, mlp)


@pytest.mark.parametrize("norm_first", [True, False])
def test_matches_numpy_reference(norm_first):
    block = make_block(norm_first)
    x, memory = random_floats((BATCH, SEQ, HIDDEN)), random_floats((BATCH, MEMORY, HIDDEN), seed=1)
    out = block(x, encoder_outputs=memory, encoder_padding_mask=MEMORY_PADDING).numpy()
    expected = reference_decoder_block(x.astype("float64"), memory.astype("float64"), block)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_cached_steps_with_precomputed_cross_keys_equal_the_full_pass():
    block = make_block()
    x, memory = random_floats((BATCH, SEQ, HIDDEN)), random_floats((BATCH, MEMORY, HIDDEN), seed=1)
    full = block(x, encoder_outputs=memory, encoder_padding_mask=MEMORY_PADDING).numpy()
    cache = block.self_attention.empty_cache(BATCH, 8)
    cross = block.cross_attention.key_value(memory)
    steps = []
    for index in range(SEQ):
        out, cache = block(x[:, index : index + 1], encoder_padding_mask=MEMORY_PADDING, cache=cache,
                           cache_index=index, cross_key_value=cross)
        steps.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_weights_and_config():
    block = make_block()
    # Three norms (2 each), self-attention (4), cross-attention (6), MLP (4).
    assert_weight_count(block, trainable=20)
    assert_config_round_trip(block)
    with pytest.raises(ValueError, match="causally"):
        DecoderBlock(num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=32, causal=False)
