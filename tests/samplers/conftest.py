"""Fake `next` callbacks built from fixed logits tables, and a NumPy decoding reference."""

import numpy as np
import pytest
import tensorflow as tf


def make_bigram_next(table):
    """`next` whose logits for position `index` are `table[prompt[:, index - 1]]`."""
    table = tf.constant(table, tf.float32)

    def next(prompt, cache, index):
        previous = tf.gather(prompt, index - 1, axis=1)
        return tf.gather(table, previous), None, cache

    return next


def make_unigram_next(logits, batch_size):
    """`next` that returns the same logits (vocab,) at every position of every row."""
    logits = tf.constant(np.tile(np.asarray(logits, np.float32), (batch_size, 1)))

    def next(prompt, cache, index):
        return logits, None, cache

    return next


def reference_decode(table, prompt, mask, index, choose, stop_token_ids=()):
    """NumPy decoding with a bigram table; `choose` maps logits (vocab,) to a token."""
    tokens = np.array(prompt)
    done = np.zeros(len(tokens), bool)
    for i in range(index, tokens.shape[1]):
        for row in range(len(tokens)):
            if mask[row, i] or done[row]:
                continue
            tokens[row, i] = choose(table[tokens[row, i - 1]])
            done[row] = tokens[row, i] in stop_token_ids
    return tokens


@pytest.fixture
def bigram_next():
    return make_bigram_next


@pytest.fixture
def unigram_next():
    return make_unigram_next


@pytest.fixture
def reference():
    return reference_decode


@pytest.fixture
def bigram_table():
    """Random bigram logits, vocabulary 16, with clear gaps so argmax ties cannot occur."""
    return np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32) * 3.0
