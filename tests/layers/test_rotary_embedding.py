import numpy as np
import pytest

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    random_floats,
    reference_rotary,
)
from tfllm.layers.rotary_embedding import RotaryEmbedding


def test_matches_complex_rotation_reference():
    x = random_floats((2, 7, 3, 8))  # (batch, seq, heads, dim)
    rotated = assert_output_shape(RotaryEmbedding(), x, x.shape)
    np.testing.assert_allclose(rotated.numpy(), reference_rotary(x, np.arange(7)), atol=1e-5)


def test_start_index_rotates_by_the_true_positions():
    x = random_floats((2, 3, 2, 8))
    rotated = RotaryEmbedding()(x, start_index=5)
    np.testing.assert_allclose(rotated.numpy(), reference_rotary(x, np.arange(5, 8)), atol=1e-5)


def test_sequence_axis_selects_the_position_axis():
    x = random_floats((2, 3, 7, 8))  # (batch, heads, seq, dim)
    rotated = RotaryEmbedding(sequence_axis=-2)(x)
    expected = reference_rotary(x.transpose(0, 2, 1, 3), np.arange(7)).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(rotated.numpy(), expected, atol=1e-5)


def test_scores_depend_only_on_the_distance():
    layer = RotaryEmbedding()
    query, key = random_floats((1, 1, 1, 16), seed=1), random_floats((1, 1, 1, 16), seed=2)

    def score(query_position, key_position):
        q = layer(query, start_index=query_position).numpy()
        k = layer(key, start_index=key_position).numpy()
        return float((q * k).sum())

    assert score(9, 4) == pytest.approx(score(5, 0), abs=1e-4)
    assert score(9, 4) != pytest.approx(score(9, 0), abs=1e-3)


def test_config_and_mixed_precision():
    assert_config_round_trip(RotaryEmbedding(max_wavelength=500, sequence_axis=2))
    assert_runs_in_mixed_bfloat16(RotaryEmbedding, random_floats((2, 5, 2, 8)))


def test_rejects_odd_feature_size():
    with pytest.raises(ValueError, match="even size"):
        RotaryEmbedding()(random_floats((1, 4, 2, 7)))


def test_positions_rotate_each_row_by_its_own_positions():
    x = random_floats((2, 5, 3, 8))  # (batch, seq, heads, dim)
    positions = np.array([[0, 1, 2, 0, 1], [4, 5, 6, 7, 8]], "int32")
    rotated = RotaryEmbedding()(x, positions=positions).numpy()
    for row in range(2):
        expected = reference_rotary(x[row : row + 1], positions[row])
        np.testing.assert_allclose(rotated[row : row + 1], expected, atol=1e-5)


def test_positions_broadcast_over_leading_and_inner_axes():
    # The attention layout: (2, batch, heads, seq, dim) with positions (1, batch, 1, seq).
    x = random_floats((2, 2, 3, 5, 8))
    positions = np.array([[0, 1, 2, 0, 1], [4, 5, 6, 7, 8]], "int32")
    rotated = RotaryEmbedding(sequence_axis=-2)(x, positions=positions[None, :, None, :]).numpy()
    per_row = RotaryEmbedding()(x.transpose(1, 3, 0, 2, 4).reshape(2, 5, 6, 8), positions=positions)
    expected = per_row.numpy().reshape(2, 5, 2, 3, 8).transpose(2, 0, 3, 1, 4)
    np.testing.assert_allclose(rotated, expected, atol=1e-6)


def test_rejects_positions_of_the_wrong_rank():
    with pytest.raises(ValueError, match="positions must have one axis per input axis"):
        RotaryEmbedding()(random_floats((2, 5, 3, 8)), positions=np.zeros((5,), "int32"))
