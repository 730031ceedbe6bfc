"""`GreedySampler` against a step-by-step NumPy argmax."""

import numpy as np
import tensorflow as tf

from tfllm.samplers import GreedySampler


def test_greedy_equals_step_by_step_argmax(bigram_next, bigram_table, reference):
    prompt = np.zeros((5, 12), np.int32)
    prompt[:, 0] = [0, 2, 5, 11, 15]
    mask = np.zeros_like(prompt, bool)
    mask[:, 0] = True
    generate = tf.function(lambda p: GreedySampler()(bigram_next(bigram_table), p, index=1))
    tokens = generate(tf.constant(prompt)).numpy()
    np.testing.assert_array_equal(tokens, reference(bigram_table, prompt, mask, 1, np.argmax))


def test_greedy_with_a_position_dependent_table():
    table = np.random.default_rng(2).normal(size=(8, 20)).astype(np.float32)  # (position, vocab)

    def next(prompt, cache, index):
        return tf.tile(tf.gather(table, index)[None], [3, 1]), None, cache

    tokens = GreedySampler()(next, tf.zeros((3, 8), tf.int32), index=0)
    np.testing.assert_array_equal(tokens, np.tile(table.argmax(-1), (3, 1)))


def test_ties_go_to_the_lowest_id():
    def next(prompt, cache, index):
        return tf.constant([[0.0, 2.0, 2.0, 1.0]]), None, cache

    tokens = GreedySampler()(next, tf.zeros((1, 4), tf.int32), index=1)
    np.testing.assert_array_equal(tokens, [[0, 1, 1, 1]])


def test_get_config_is_empty_and_round_trips():
    assert GreedySampler().get_config() == {}
    assert isinstance(GreedySampler.from_config({}), GreedySampler)
