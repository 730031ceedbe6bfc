"""`RandomSampler`: empirical frequencies and seeding."""

import numpy as np
import tensorflow as tf

from tfllm.samplers import RandomSampler

LOGITS = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02, 0.0, 0.0, 0.0]) + 1e-12)


def _draw(sampler, unigram_next, batch_size=64, length=16):
    next = unigram_next(LOGITS, batch_size)
    generate = tf.function(lambda p: sampler(next, p, index=0))
    return generate(tf.zeros((batch_size, length), tf.int32)).numpy()


def test_frequencies_follow_the_softmax(unigram_next):
    tokens = _draw(RandomSampler(seed=0), unigram_next)
    frequencies = np.bincount(tokens.ravel(), minlength=10) / tokens.size
    np.testing.assert_allclose(frequencies, np.exp(LOGITS), atol=0.03)


def test_temperature_flattens_the_distribution(unigram_next):
    tokens = _draw(RandomSampler(temperature=2.0, seed=0), unigram_next)
    frequencies = np.bincount(tokens.ravel(), minlength=10) / tokens.size
    expected = np.exp(LOGITS / 2.0) / np.exp(LOGITS / 2.0).sum()
    np.testing.assert_allclose(frequencies, expected, atol=0.03)


def test_same_seed_same_tokens_different_seed_different_tokens(unigram_next):
    first = _draw(RandomSampler(seed=7), unigram_next)
    np.testing.assert_array_equal(first, _draw(RandomSampler(seed=7), unigram_next))
    assert (first != _draw(RandomSampler(seed=8), unigram_next)).mean() > 0.3


def test_no_seed_draws_afresh_on_every_call(unigram_next):
    sampler = RandomSampler()
    next = unigram_next(LOGITS, 8)
    generate = tf.function(lambda p: sampler(next, p, index=0))
    prompt = tf.zeros((8, 16), tf.int32)
    assert (generate(prompt).numpy() != generate(prompt).numpy()).mean() > 0.3


def test_get_config_round_trip():
    sampler = RandomSampler(temperature=0.5, seed=3)
    assert sampler.get_config() == {"temperature": 0.5, "seed": 3}
    assert RandomSampler.from_config(sampler.get_config()).get_config() == sampler.get_config()
