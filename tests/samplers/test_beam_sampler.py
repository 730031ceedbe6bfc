"""`BeamSampler` against greedy decoding and exhaustive NumPy search."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfllm.samplers import BeamSampler, GreedySampler


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def sequence_log_prob(table, tokens, start):
    """Total bigram log-probability of tokens[start:] given the tokens before them."""
    log_probs = log_softmax(table)
    return sum(log_probs[tokens[i - 1], tokens[i]] for i in range(start, len(tokens)))


def table_from_probabilities(rows, vocabulary_size=10):
    """Bigram log-probability table; unlisted rows are uniform."""
    table = np.full((vocabulary_size, vocabulary_size), 1.0 / vocabulary_size)
    for row, probabilities in rows.items():
        rest = (1.0 - sum(probabilities.values())) / (vocabulary_size - len(probabilities))
        table[row] = rest
        for token, probability in probabilities.items():
            table[row, token] = probability
    return np.log(table).astype(np.float32)


def test_one_beam_is_greedy_with_ragged_prompts(bigram_next, bigram_table):
    prompt = tf.constant([[1, 0, 0, 0, 0, 0, 0, 0, 0], [2, 7, 4, 0, 0, 0, 0, 0, 0]])
    mask = prompt > 0
    next = bigram_next(bigram_table)
    greedy = GreedySampler()(next, prompt, index=1, mask=mask, stop_token_ids=(5,))
    beam = BeamSampler(num_beams=1)(next, prompt, index=1, mask=mask, stop_token_ids=(5,))
    np.testing.assert_array_equal(beam, greedy)


def test_beam_finds_a_more_probable_sequence_than_greedy(bigram_next):
    # Token 1 is the best first step but leads to a flat row; token 2 leads to a sure 3.
    table = table_from_probabilities({0: {1: 0.5, 2: 0.4}, 2: {3: 0.9}})
    prompt = tf.constant([[0, 0, 0]])
    greedy = GreedySampler()(bigram_next(table), prompt, index=1).numpy()[0]
    beam = BeamSampler(num_beams=3)(bigram_next(table), prompt, index=1).numpy()[0]
    np.testing.assert_array_equal(beam, [0, 2, 3])
    assert sequence_log_prob(table, beam, 1) > sequence_log_prob(table, greedy, 1) + 1.0


def test_as_many_beams_as_tokens_is_exhaustive_over_two_steps(bigram_next, bigram_table):
    prompt = tf.constant([[3, 0, 0], [11, 0, 0]])
    tokens = BeamSampler(num_beams=16)(bigram_next(bigram_table), prompt, index=1).numpy()
    for row, first in enumerate([3, 11]):
        best = max(
            itertools.product(range(16), repeat=2),
            key=lambda pair: sequence_log_prob(bigram_table, [first, *pair], 1),
        )
        np.testing.assert_array_equal(tokens[row], [first, *best])


def test_all_beams_come_back_sorted_with_their_normalised_scores(bigram_next, bigram_table):
    prompt = tf.constant([[4, 0, 0, 0, 0], [9, 0, 0, 0, 0]])
    sampler = BeamSampler(num_beams=3, length_penalty=1.0, return_all_beams=True)
    beams, scores = sampler(bigram_next(bigram_table), prompt, index=1)
    assert beams.shape == (2, 3, 5) and scores.shape == (2, 3)
    for row in range(2):
        expected = [sequence_log_prob(bigram_table, beam, 1) / 4 for beam in beams[row].numpy()]
        np.testing.assert_allclose(scores[row], expected, rtol=1e-5)
        assert np.all(np.diff(scores[row]) <= 0)
        assert len({tuple(beam) for beam in beams[row].numpy()}) == 3


@pytest.mark.parametrize("length_penalty, expected", [(0.0, [0, 9, 0, 0, 0]), (1.0, [0, 1, 2, 3, 9])])
def test_finished_beams_keep_their_score_and_the_length_penalty_ranks_them(
    length_penalty, expected, bigram_next
):
    # Stopping at once costs log(0.45); the long way costs log(0.45) + 3 log(0.9) over 4 tokens.
    table = table_from_probabilities({0: {9: 0.45, 1: 0.45}, 1: {2: 0.9}, 2: {3: 0.9}, 3: {9: 0.9}})
    sampler = BeamSampler(num_beams=2, length_penalty=length_penalty, return_all_beams=True)
    prompt = tf.constant([[0, 0, 0, 0, 0]])
    beams, scores = sampler(bigram_next(table), prompt, index=1, stop_token_ids=(9,))
    np.testing.assert_array_equal(beams[0, 0], expected)
    short, long = np.log(0.45), np.log(0.45) + 3 * np.log(0.9)
    expected_scores = sorted([short, long / 4**length_penalty], reverse=True)
    np.testing.assert_allclose(scores[0], expected_scores, rtol=1e-5)


def test_the_loop_stops_when_every_beam_has_finished():
    calls = []
    table = tf.constant(table_from_probabilities({0: {1: 0.6, 2: 0.3}, 1: {9: 0.9}, 2: {9: 0.9}}))

    def next(prompt, cache, index):
        calls.append(int(index))
        return tf.gather(table, tf.gather(prompt, index - 1, axis=1)), None, cache

    tokens = BeamSampler(num_beams=2)(next, tf.zeros((1, 8), tf.int32), index=1, stop_token_ids=(9,))
    np.testing.assert_array_equal(tokens, [[0, 1, 9, 0, 0, 0, 0, 0]])
    assert calls == [1, 2]


def _trigram_nexts(table, batch_size, num_beams):
    """The same trigram model read from the prompt, and from a per-beam cache of past tokens."""
    table = tf.constant(table)

    def from_prompt(prompt, cache, index):
        before = tf.gather(prompt, [index - 2, index - 1], axis=1)
        return tf.gather_nd(table, before), None, cache

    def from_cache(prompt, cache, index):
        assert cache.shape[0] == batch_size * num_beams
        # Like a KV cache: store the previous token, then read only the cache.
        at_previous = tf.range(tf.shape(prompt)[1])[None, :] == index - 1
        cache = tf.where(at_previous, prompt, cache)
        before = tf.gather(cache, [index - 2, index - 1], axis=1)
        return tf.gather_nd(table, before), None, cache

    return from_prompt, from_cache


def test_the_cache_is_expanded_and_reordered_with_the_beams():
    table = np.random.default_rng(5).normal(size=(8, 8, 8)).astype(np.float32) * 2.0
    prompt = tf.constant([[1, 2, 0, 0, 0, 0, 0, 0], [5, 3, 0, 0, 0, 0, 0, 0]])
    from_prompt, from_cache = _trigram_nexts(table, batch_size=2, num_beams=3)
    sampler = BeamSampler(num_beams=3, return_all_beams=True)
    beams, scores = tf.function(lambda: sampler(from_prompt, prompt, index=2))()
    # The cache starts as the prompt, as a model's cache is seeded by a pass over it.
    cached = tf.function(lambda: sampler(from_cache, prompt, cache=prompt, index=2))
    cached_beams, cached_scores = cached()
    np.testing.assert_array_equal(cached_beams, beams)
    np.testing.assert_allclose(cached_scores, scores, rtol=1e-6)


def test_a_ragged_batch_equals_each_row_alone(bigram_next, bigram_table):
    prompt = np.array([[6, 0, 0, 0, 0, 0, 0], [2, 8, 13, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0, 0]])
    lengths = (prompt > 0).sum(-1)
    sampler = BeamSampler(num_beams=3, return_all_beams=True)
    next = bigram_next(bigram_table)
    beams, scores = sampler(next, prompt, index=1, mask=prompt > 0, stop_token_ids=(4,))
    np.testing.assert_array_equal(beams.numpy()[:, 0][prompt > 0], prompt[prompt > 0])
    for row, length in enumerate(lengths):
        # Alone, the row starts after its prompt: prompt tokens are neither chosen nor scored.
        alone = sampler(next, prompt[row : row + 1], index=int(length), stop_token_ids=(4,))
        np.testing.assert_array_equal(beams[row], alone[0][0])
        np.testing.assert_allclose(scores[row], alone[1][0], rtol=1e-6)


def test_compiles_under_xla_and_matches_the_graph_loop(bigram_next, bigram_table):
    prompt = tf.constant([[1, 0, 0, 0, 0, 0], [6, 2, 0, 0, 0, 0]])
    sampler = BeamSampler(num_beams=3)
    next = bigram_next(bigram_table)
    run = lambda p, m: sampler(next, p, index=1, mask=m, stop_token_ids=(3,))
    graph = tf.function(run)(prompt, prompt > 0)
    np.testing.assert_array_equal(tf.function(run, jit_compile=True)(prompt, prompt > 0), graph)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_beams": 0}, "num_beams must be an integer >= 1"),
        ({"num_beams": 2.0}, "num_beams must be an integer >= 1"),
        ({"length_penalty": float("nan")}, "length_penalty must be a real number"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BeamSampler(**kwargs)


def test_get_config_round_trip():
    sampler = BeamSampler(num_beams=3, length_penalty=0.5, return_all_beams=True)
    config = {"num_beams": 3, "length_penalty": 0.5, "return_all_beams": True}
    assert sampler.get_config() == config
    assert BeamSampler.from_config(config).get_config() == config
