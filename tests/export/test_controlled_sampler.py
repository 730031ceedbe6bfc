"""`ControlledSampler`: runtime settings, one traced loop, and the same draws as tfllm's samplers."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.export.controlled_sampler import ControlledSampler
from tfllm.samplers import GreedySampler, RandomSampler, TopPSampler

VOCAB = 12
BATCH, LENGTH = 16, 10
TABLE = np.random.default_rng(0).normal(scale=2.0, size=(VOCAB, VOCAB)).astype(np.float32)
# temperature, top_k, top_p, seed
SETTINGS = (
    tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32),
    tf.TensorSpec([], tf.int32),
)


def bigram_next(prompt, cache, index):
    """Logits for position `index` from the token before it: a model without a model."""
    return tf.gather(tf.constant(TABLE), tf.gather(prompt, index - 1, axis=1)), None, cache


PROMPT = tf.constant(np.random.default_rng(1).integers(0, VOCAB, size=(BATCH, LENGTH)), tf.int32)
MASK = tf.constant(np.arange(LENGTH)[None, :] < np.array([1, 3] * (BATCH // 2))[:, None])


class Traced:
    """One `tf.function` over every setting; counts its traces."""

    def __init__(self, jit_compile=False):
        self.traces = 0

        @tf.function(input_signature=SETTINGS, jit_compile=jit_compile)
        def generate(temperature, top_k, top_p, seed):
            self.traces += 1
            sampler = ControlledSampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
            return sampler(bigram_next, PROMPT, index=1, mask=MASK, stop_token_ids=(1,))

        self.generate = generate

    def __call__(self, temperature=1.0, top_k=0, top_p=1.0, seed=0):
        return self.generate(tf.constant(temperature, tf.float32), tf.constant(top_k), tf.constant(top_p, tf.float32),
                             tf.constant(seed)).numpy()


@pytest.fixture(scope="module")
def traced():
    return Traced()


def reference(sampler, jit_compile=False):
    decode = tf.function(lambda: sampler(bigram_next, PROMPT, index=1, mask=MASK, stop_token_ids=(1,)),
                         jit_compile=jit_compile)
    return decode().numpy()


def test_temperature_0_is_greedy_sampling(traced):
    np.testing.assert_array_equal(traced(temperature=0.0, seed=3), reference(GreedySampler()))


@pytest.mark.parametrize("temperature, seed", [(1.0, 0), (0.7, 5)])
def test_without_cuts_the_draws_are_those_of_random_sampler(traced, temperature, seed):
    expected = reference(RandomSampler(temperature=temperature, seed=seed))
    np.testing.assert_array_equal(traced(temperature=temperature, seed=seed), expected)


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_with_top_p_the_draws_are_those_of_top_p_sampler(traced, p):
    np.testing.assert_array_equal(traced(top_p=p, seed=4), reference(TopPSampler(p=p, seed=4)))


def support(tokens):
    """The token ids written outside the prompt, as a set."""
    return set(tokens[~MASK.numpy()].tolist())


def test_top_k_1_is_greedy_and_top_k_draws_only_among_the_k_best(traced):
    np.testing.assert_array_equal(traced(top_k=1, seed=9), reference(GreedySampler()))
    # Every token must be among the 3 best after the token before it.
    tokens = traced(top_k=3, seed=9)
    best = np.argsort(-TABLE, axis=1)[:, :3]
    free = ~MASK.numpy()
    for row, position in zip(*np.nonzero(free)):
        if 1 not in tokens[row, :position]:  # rows stop after the stop id 1
            assert tokens[row, position] in best[tokens[row, position - 1]]
    assert len(support(tokens)) > 3  # the cut is per step, not one global set


def test_a_tiny_top_p_keeps_only_the_most_probable_token(traced):
    np.testing.assert_array_equal(traced(top_p=1e-6, seed=2), reference(GreedySampler()))


def test_seeds_reproduce_and_a_negative_seed_draws_afresh(traced):
    np.testing.assert_array_equal(traced(seed=11), traced(seed=11))
    assert (traced(seed=11) != traced(seed=12)).mean() > 0.2
    assert (traced(seed=-1) != traced(seed=-1)).mean() > 0.2


def test_one_trace_serves_every_setting(traced):
    for settings in ({"temperature": 0.0}, {"top_k": 4}, {"top_p": 0.5}, {"temperature": 2.0, "seed": -1}):
        traced(**settings)
    assert traced.traces == 1


def test_under_xla_the_draws_are_those_of_tfllm_samplers_under_xla():
    # Stateless draws agree for a seed within one compilation mode, not across modes.
    compiled = Traced(jit_compile=True)
    np.testing.assert_array_equal(compiled(temperature=0.7, seed=5),
                                  reference(RandomSampler(temperature=0.7, seed=5), jit_compile=True))
    np.testing.assert_array_equal(compiled(top_p=0.6, seed=4), reference(TopPSampler(p=0.6, seed=4), jit_compile=True))
    assert compiled.traces == 1
