import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    assert_training_step_lowers_loss,
    assert_weight_count,
    random_floats,
    reference_block,
)
from tfllm.layers.transformer_block import TransformerBlock

BATCH, SEQ, HIDDEN, HEADS, INTERMEDIATE = 2, 6, 16, 2, 32
PADDING = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")


def make_block(use_rotary=False, dropout=0.0):
    block = TransformerBlock(
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        use_rotary=use_rotary,
        dropout=dropout,
        kernel_initializer="random_normal",
    )
    block.build((None, None, HIDDEN))
    # Non-trivial LayerNorm parameters and biases, so the reference checks them too.
    rng = np.random.default_rng(7)
    block.set_weights([w + 0.1 * rng.normal(size=w.shape) for w in block.get_weights()])
    return block


@pytest.mark.parametrize("use_rotary", [False, True])
@pytest.mark.parametrize("padding_mask", [None, PADDING])
def test_matches_numpy_reference(use_rotary, padding_mask):
    block = make_block(use_rotary)
    x = random_floats((BATCH, SEQ, HIDDEN))
    out = assert_output_shape(block, x, x.shape, padding_mask=padding_mask)
    expected = reference_block(x.astype("float64"), block, padding_mask=padding_mask, rotary=use_rotary)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_cached_decoding_equals_the_full_pass():
    block = make_block(use_rotary=True)
    x = random_floats((BATCH, SEQ, HIDDEN))
    full = block(x).numpy()
    cache = block.self_attention.empty_cache(BATCH, 8)
    out, cache = block(x[:, :2], cache=cache, cache_index=0)
    np.testing.assert_allclose(out.numpy(), full[:, :2], atol=1e-5)
    for index in range(2, SEQ):
        out, cache = block(x[:, index : index + 1], cache=cache, cache_index=index)
        np.testing.assert_allclose(out.numpy()[:, 0], full[:, index], atol=1e-5)


def test_weights_config_training_and_mixed_precision():
    block = make_block()
    x = random_floats((BATCH, SEQ, HIDDEN))
    # Two LayerNorms (gamma, beta) and four Dense layers (kernel, bias).
    assert_weight_count(block, trainable=12)
    assert_config_round_trip(block)
    assert_training_step_lowers_loss(block, x, padding_mask=PADDING)
    assert_runs_in_mixed_bfloat16(make_block, x, padding_mask=PADDING)


def test_dropout_only_in_training():
    block = make_block(dropout=0.3)
    x = random_floats((BATCH, SEQ, HIDDEN))
    expected = reference_block(x.astype("float64"), block)
    np.testing.assert_allclose(block(x, training=False).numpy(), expected, atol=1e-5, rtol=1e-5)
    assert not np.allclose(block(x, training=True).numpy(), expected, atol=1e-3)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_heads=3, hidden_dim=16"):
        TransformerBlock(num_heads=3, hidden_dim=16, intermediate_dim=32)
    with pytest.raises(ValueError, match="intermediate_dim=0"):
        TransformerBlock(num_heads=2, hidden_dim=16, intermediate_dim=0)


def test_bidirectional_block_sees_later_tokens_and_round_trips():
    x = random_floats((BATCH, SEQ, HIDDEN))
    changed = x.copy()
    changed[:, -1] += random_floats((BATCH, HIDDEN), seed=4)
    encoder = TransformerBlock(
        num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE, causal=False
    )
    assert encoder.self_attention.causal is False
    assert assert_config_round_trip(encoder).causal is False
    assert np.abs(encoder(changed).numpy()[:, 0] - encoder(x).numpy()[:, 0]).max() > 1e-3
    decoder = make_block()
    np.testing.assert_array_equal(decoder(changed).numpy()[:, 0], decoder(x).numpy()[:, 0])


def test_segment_ids_and_positions_reach_the_attention():
    block = make_block(use_rotary=True)
    x = random_floats((BATCH, SEQ, HIDDEN))
    segment_ids = np.array([[1, 1, 2, 2, 2, 2]] * BATCH, "int32")
    positions = np.array([[0, 1, 0, 1, 2, 3]] * BATCH, "int32")
    packed = block(x, segment_ids=segment_ids, positions=positions).numpy()
    np.testing.assert_allclose(packed[:, 2:], block(x[:, 2:]).numpy(), atol=1e-5)
