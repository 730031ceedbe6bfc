import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    assert_training_step_lowers_loss,
    assert_weight_count,
    random_floats,
    reference_attention,
)
from tfllm.layers.causal_self_attention import CausalSelfAttention

BATCH, SEQ, HIDDEN, HEADS = 2, 7, 16, 4


def make_layer(use_rotary=False, dropout=0.0):
    layer = CausalSelfAttention(
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        use_rotary=use_rotary,
        dropout=dropout,
        bias_initializer="random_normal",
    )
    layer.build((None, None, HIDDEN))
    return layer


def layer_weights(layer):
    return [np.asarray(w, "float64") for w in layer.get_weights()]


PADDING = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], "int32")


@pytest.mark.parametrize("use_rotary", [False, True])
@pytest.mark.parametrize("padding_mask", [None, PADDING])
def test_matches_numpy_reference(use_rotary, padding_mask):
    layer = make_layer(use_rotary)
    x = random_floats((BATCH, SEQ, HIDDEN))
    out = assert_output_shape(layer, x, x.shape, padding_mask=padding_mask)
    expected = reference_attention(
        x.astype("float64"), layer_weights(layer), HEADS, padding_mask=padding_mask, rotary=use_rotary
    )
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_segment_ids_match_reference_and_never_cross_segments():
    layer = make_layer(use_rotary=True)
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 2]], "int32")
    x = random_floats((BATCH, SEQ, HIDDEN))
    out = layer(x, segment_ids=segment_ids).numpy()
    expected = reference_attention(
        x.astype("float64"), layer_weights(layer), HEADS, segment_ids=segment_ids, rotary=True
    )
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)

    perturbed = x.copy()
    perturbed[segment_ids == 1] += random_floats(perturbed[segment_ids == 1].shape, seed=3)
    out_perturbed = layer(perturbed, segment_ids=segment_ids).numpy()
    second = segment_ids == 2
    np.testing.assert_allclose(out_perturbed[second], out[second], atol=1e-6)
    assert not np.allclose(out_perturbed[~second], out[~second], atol=1e-3)


@pytest.mark.parametrize("use_rotary", [False, True])
def test_cached_decoding_equals_the_full_pass(use_rotary):
    layer = make_layer(use_rotary)
    x = random_floats((BATCH, SEQ, HIDDEN))
    full = layer(x).numpy()
    max_len, prompt = 10, 3
    cache = layer.empty_cache(BATCH, max_len)
    out, cache = layer(x[:, :prompt], cache=cache, cache_index=0)
    np.testing.assert_allclose(out.numpy(), full[:, :prompt], atol=1e-5)
    for index in range(prompt, SEQ):
        out, cache = layer(x[:, index : index + 1], cache=cache, cache_index=index)
        np.testing.assert_allclose(out.numpy()[:, 0], full[:, index], atol=1e-5)
    # Keys and values (batch, heads, max_len, head_dim): slots past the last written position
    # are untouched.
    for entries in cache:
        assert entries.shape == (BATCH, HEADS, max_len, HIDDEN // HEADS)
        assert np.all(entries.numpy()[:, :, SEQ:] == 0)
        assert np.all(np.any(entries.numpy()[:, :, :SEQ] != 0, axis=-1))


def test_cached_decoding_honours_a_padding_mask_over_cache_slots():
    layer = make_layer()
    x = random_floats((BATCH, SEQ, HIDDEN))
    full = layer(x, padding_mask=PADDING).numpy()
    max_len = 9
    slot_mask = np.concatenate([PADDING, np.ones((BATCH, max_len - SEQ), "int32")], axis=1)
    cache = layer.empty_cache(BATCH, max_len)
    out, cache = layer(x[:, :4], padding_mask=slot_mask, cache=cache, cache_index=0)
    for index in range(4, SEQ):
        out, cache = layer(x[:, index : index + 1], padding_mask=slot_mask, cache=cache, cache_index=index)
        np.testing.assert_allclose(out.numpy()[:, 0], full[:, index], atol=1e-5)


def test_weights_config_training_and_mixed_precision():
    layer = make_layer(use_rotary=True)
    x = random_floats((BATCH, SEQ, HIDDEN))
    assert_weight_count(layer, trainable=4)
    assert_config_round_trip(layer)
    assert_training_step_lowers_loss(layer, x, padding_mask=PADDING)
    out = assert_runs_in_mixed_bfloat16(lambda: make_layer(use_rotary=True), x, padding_mask=PADDING)
    assert tuple(out.shape) == x.shape


def test_dropout_only_in_training():
    layer = make_layer(dropout=0.5)
    x = random_floats((BATCH, SEQ, HIDDEN))
    expected = reference_attention(x.astype("float64"), layer_weights(layer), HEADS)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, atol=1e-5, rtol=1e-5)
    assert not np.allclose(layer(x, training=True).numpy(), expected, atol=1e-3)


def test_rejects_num_heads_not_dividing_hidden_dim():
    with pytest.raises(ValueError, match="num_heads=3, hidden_dim=16"):
        CausalSelfAttention(num_heads=3, hidden_dim=16)


def test_rejects_segment_ids_with_cache():
    layer = make_layer()
    cache = layer.empty_cache(BATCH, 8)
    with pytest.raises(ValueError, match="segment_ids"):
        layer(random_floats((BATCH, 1, HIDDEN)), segment_ids=np.ones((BATCH, 1)), cache=cache, cache_index=0)


def reference_bidirectional_attention(x, weights, num_heads, padding_mask=None, segment_ids=None):
    """`reference_attention` without the causal mask: every allowed key, before or after."""
    qkv_kernel, qkv_bias, output_kernel, output_bias = weights
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    qkv = (x @ qkv_kernel + qkv_bias).reshape(batch, seq, 3, num_heads, head_dim)
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (batch, seq, heads, dim)
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim)
    allowed = np.ones((batch, 1, seq, seq), bool)
    if padding_mask is not None:
        allowed &= np.asarray(padding_mask, bool)[:, None, None, :]
    if segment_ids is not None:
        allowed &= segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    scores = np.where(allowed, scores, -1e9)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probabilities, value).reshape(batch, seq, hidden)
    return out @ output_kernel + output_bias


@pytest.mark.parametrize("padding_mask", [None, PADDING])
def test_bidirectional_matches_numpy_reference(padding_mask):
    layer = CausalSelfAttention(
        num_heads=HEADS, hidden_dim=HIDDEN, causal=False, bias_initializer="random_normal"
    )
    x = random_floats((BATCH, SEQ, HIDDEN))
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1]], "int32")
    out = layer(x, padding_mask=padding_mask, segment_ids=segment_ids).numpy()
    expected = reference_bidirectional_attention(
        x.astype("float64"), layer_weights(layer), HEADS, padding_mask, segment_ids
    )
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_only_bidirectional_attention_sees_later_tokens():
    x = random_floats((BATCH, SEQ, HIDDEN))
    changed = x.copy()
    changed[:, -1] += random_floats((BATCH, HIDDEN), seed=4)  # only the last token changes
    for causal in (True, False):
        layer = CausalSelfAttention(num_heads=HEADS, hidden_dim=HIDDEN, causal=causal)
        first_change = np.abs(layer(changed).numpy()[:, 0] - layer(x).numpy()[:, 0]).max()
        if causal:
            assert first_change == 0.0
        else:
            assert first_change > 1e-3


def test_rotary_positions_restart_each_document():
    # A document at positions 3..6 of a row, rotated from 0, attends exactly as it does alone.
    layer = make_layer(use_rotary=True)
    x = random_floats((BATCH, SEQ, HIDDEN))
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2]] * BATCH, "int32")
    positions = np.array([[0, 1, 2, 0, 1, 2, 3]] * BATCH, "int32")
    packed = layer(x, segment_ids=segment_ids, positions=positions).numpy()
    np.testing.assert_allclose(packed[:, 3:], layer(x[:, 3:]).numpy(), atol=1e-5)
    np.testing.assert_allclose(packed[:, :3], layer(x[:, :3]).numpy(), atol=1e-5)


def test_causal_is_in_the_config_and_a_cache_needs_it():
    layer = CausalSelfAttention(num_heads=HEADS, hidden_dim=HIDDEN, causal=False)
    assert assert_config_round_trip(layer).causal is False
    cache = layer.empty_cache(BATCH, 8)
    with pytest.raises(ValueError, match="causal=False"):
        layer(random_floats((BATCH, 1, HIDDEN)), cache=cache, cache_index=0)
