import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import (
    assert_config_round_trip,
    assert_output_shape,
    assert_runs_in_mixed_bfloat16,
    assert_training_step_lowers_loss,
    assert_weight_count,
    random_floats,
)
from tfllm.layers.position_embedding import PositionEmbedding


def make_layer():
    return PositionEmbedding(sequence_length=16, initializer="random_normal")


def test_returns_the_rows_of_the_positions():
    layer = make_layer()
    inputs = random_floats((3, 6, 8))
    positions = assert_output_shape(layer, inputs, (1, 6, 8))
    matrix = layer.get_weights()[0]
    np.testing.assert_array_equal(positions.numpy()[0], matrix[:6])


@pytest.mark.parametrize("start_index", [4, tf.constant(10)])
def test_start_index_shifts_the_rows(start_index):
    layer = make_layer()
    layer(random_floats((1, 16, 8)))
    positions = layer(random_floats((2, 3, 8)), start_index=start_index)
    start = int(start_index)
    np.testing.assert_array_equal(positions.numpy()[0], layer.get_weights()[0][start : start + 3])


def test_weights_config_training_and_mixed_precision():
    layer = make_layer()
    inputs = random_floats((2, 6, 8))
    layer(inputs)
    assert_weight_count(layer, trainable=1)
    assert_config_round_trip(layer)
    assert_training_step_lowers_loss(layer, inputs)
    assert_runs_in_mixed_bfloat16(make_layer, inputs)


def test_rejects_non_positive_sequence_length():
    with pytest.raises(ValueError, match="sequence_length=0"):
        PositionEmbedding(sequence_length=0)


def test_positions_pick_one_row_per_token():
    layer = make_layer()
    inputs = random_floats((2, 5, 8))
    positions = np.array([[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]], "int32")
    vectors = assert_output_shape(layer, inputs, (2, 5, 8), positions=positions)
    np.testing.assert_array_equal(vectors.numpy(), layer.get_weights()[0][positions])
    assert layer.compute_output_shape((2, 5, 8), positions_shape=(2, 5)) == (2, 5, 8)
