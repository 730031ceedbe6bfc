"""`TopKSampler`: the support is exactly the k best tokens."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.samplers import TopKSampler


def test_draws_stay_in_the_k_best_and_reach_all_of_them(unigram_next):
    logits = np.random.default_rng(3).normal(size=20).astype(np.float32)
    sampler = TopKSampler(k=4, seed=0)
    generate = tf.function(lambda p: sampler(unigram_next(logits, 64), p, index=0))
    tokens = generate(tf.zeros((64, 12), tf.int32)).numpy()
    assert set(np.unique(tokens)) == set(np.argsort(-logits)[:4])


def test_bigram_draws_stay_in_the_k_best_of_their_context(bigram_next, bigram_table):
    prompt = np.zeros((32, 16), np.int32)
    prompt[:, 0] = np.arange(32) % 16
    sampler = TopKSampler(k=3, temperature=1.5, seed=4)
    generate = tf.function(lambda p: sampler(bigram_next(bigram_table), p, index=1))
    tokens = generate(tf.constant(prompt)).numpy()
    top3 = np.argsort(-bigram_table, axis=-1)[:, :3]  # (context, 3)
    previous, current = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    assert all(token in top3[context] for context, token in zip(previous, current))
    # Every context gets a few draws, and together they use all three ranks.
    ranks = [list(top3[c]).index(t) for c, t in zip(previous, current)]
    assert set(ranks) == {0, 1, 2}


def test_k_of_one_is_greedy_and_k_beyond_the_vocabulary_keeps_everything(unigram_next):
    logits = np.array([0.0, 3.0, 1.0, 2.0], np.float32)
    greedy = TopKSampler(k=1, seed=0)(unigram_next(logits, 4), tf.zeros((4, 6), tf.int32))
    np.testing.assert_array_equal(greedy, np.ones((4, 6)))
    wide = TopKSampler(k=100, seed=0)(unigram_next(np.zeros(4), 64), tf.zeros((64, 6), tf.int32))
    assert set(np.unique(wide)) == {0, 1, 2, 3}


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        TopKSampler(k=k)


def test_get_config_round_trip():
    sampler = TopKSampler(k=7, temperature=0.9, seed=2)
    assert sampler.get_config() == {"k": 7, "temperature": 0.9, "seed": 2}
    assert TopKSampler.from_config(sampler.get_config()).get_config() == sampler.get_config()
