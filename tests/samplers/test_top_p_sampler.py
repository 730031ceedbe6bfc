"""`TopPSampler`: the support is exactly the nucleus, computed in NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.samplers import TopPSampler

PROBABILITIES = np.array([0.05, 0.35, 0.02, 0.2, 0.25, 0.1, 0.03], np.float32)


def nucleus(probabilities, p, k=None):
    """Token ids whose preceding mass (in decreasing order) is below p, among the k best."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    mass_before = np.cumsum(probabilities[order]) - probabilities[order]
    return set(order[mass_before < p])


def _support(sampler, unigram_next):
    next = unigram_next(np.log(PROBABILITIES), 64)
    generate = tf.function(lambda p: sampler(next, p, index=0))
    return set(np.unique(generate(tf.zeros((64, 12), tf.int32)).numpy()))


@pytest.mark.parametrize("p, k", [(0.5, None), (0.7, None), (0.81, None), (1.0, None), (0.9, 2)])
def test_draws_cover_exactly_the_nucleus(p, k, unigram_next):
    expected = nucleus(PROBABILITIES, p, k)
    assert _support(TopPSampler(p=p, k=k, seed=1), unigram_next) == expected
    assert len(expected) == {0.5: 2, 0.7: 3, 0.81: 4, 1.0: 7, 0.9: 2}[p]


def test_a_tiny_p_keeps_only_the_most_probable_token(unigram_next):
    assert _support(TopPSampler(p=1e-6, seed=1), unigram_next) == {1}


def test_same_seed_same_tokens(unigram_next):
    next = unigram_next(np.log(PROBABILITIES), 16)
    prompt = tf.zeros((16, 12), tf.int32)
    first = TopPSampler(p=0.9, seed=9)(next, prompt)
    np.testing.assert_array_equal(first, TopPSampler(p=0.9, seed=9)(next, prompt))
    assert (first.numpy() != TopPSampler(p=0.9, seed=10)(next, prompt).numpy()).mean() > 0.3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 0.0}, "p must be a number with 0 < p <= 1"),
        ({"p": 1.5}, "p must be a number with 0 < p <= 1"),
        ({"p": 0.5, "k": 0}, "k must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopPSampler(**kwargs)


def test_get_config_round_trip():
    sampler = TopPSampler(p=0.8, k=5, temperature=0.7, seed=4)
    assert sampler.get_config() == {"p": 0.8, "k": 5, "temperature": 0.7, "seed": 4}
    assert TopPSampler.from_config(sampler.get_config()).get_config() == sampler.get_config()
