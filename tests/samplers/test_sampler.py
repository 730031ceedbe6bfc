"""The shared loop of `Sampler`: the `next` convention, masking, stop tokens, cache, tracing."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.samplers import BeamSampler, GreedySampler, RandomSampler, Sampler, TopKSampler, TopPSampler
from tfllm.samplers.sampler import most_probable


def test_next_is_called_with_the_position_to_fill_and_predicts_it_from_the_previous_token():
    seen = []
    # Logits: token (previous + 1) % 10 is always best.
    table = np.roll(np.eye(10, dtype=np.float32) * 5.0, 1, axis=1)

    def next(prompt, cache, index):
        seen.append(int(index))
        previous = tf.gather(prompt, index - 1, axis=1)
        return tf.gather(table, previous), None, cache

    prompt = tf.constant([[3, 4, 0, 0, 0, 0], [7, 8, 0, 0, 0, 0]])
    tokens = GreedySampler()(next, prompt, index=2)
    assert seen == [2, 3, 4, 5]
    np.testing.assert_array_equal(tokens, [[3, 4, 5, 6, 7, 8], [7, 8, 9, 0, 1, 2]])


def test_ragged_prompts_are_never_overwritten(bigram_next, bigram_table, reference):
    prompt = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [2, 5, 9, 4, 0, 0, 0, 0], [3, 6, 0, 0, 0, 0, 0, 0]])
    mask = prompt != 0
    mask[0, 0] = True
    sampler = tf.function(lambda p, m: GreedySampler()(bigram_next(bigram_table), p, index=1, mask=m))
    tokens = sampler(tf.constant(prompt, tf.int32), tf.constant(mask)).numpy()
    np.testing.assert_array_equal(tokens[mask], prompt[mask])
    expected = reference(bigram_table, prompt, mask, 1, np.argmax)
    np.testing.assert_array_equal(tokens, expected)


def _successor_next(calls):
    """Greedy picks (previous + 1) % 10; counts its calls."""
    table = tf.constant(np.roll(np.eye(10, dtype=np.float32) * 5.0, 1, axis=1))

    def next(prompt, cache, index):
        calls.append(int(index))
        return tf.gather(table, tf.gather(prompt, index - 1, axis=1)), None, cache

    return next


def test_generation_stops_once_every_row_wrote_a_stop_token():
    calls = []
    prompt = tf.constant([[3, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    tokens = GreedySampler()(_successor_next(calls), prompt, index=1, stop_token_ids=(5,))
    # Row 0 stops at position 2 and is not extended while row 1 runs to its stop at 4.
    np.testing.assert_array_equal(
        tokens, [[3, 4, 5, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0, 0, 0]]
    )
    assert calls == [1, 2, 3, 4]


def test_any_of_several_stop_tokens_stops_a_row_and_prompt_stop_tokens_do_not():
    calls = []
    prompt = tf.constant([[4, 6, 0, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0, 0, 0]])
    mask = tf.constant([[True, True] + [False] * 6, [True] + [False] * 7])
    tokens = GreedySampler()(
        _successor_next(calls), prompt, index=1, mask=mask, stop_token_ids=(9, 4)
    )
    np.testing.assert_array_equal(tokens, [[4, 6, 7, 8, 9, 0, 0, 0], [2, 3, 4, 0, 0, 0, 0, 0]])
    assert calls == [1, 2, 3, 4]


def test_a_stop_token_generated_before_index_counts_and_zero_padding_does_not():
    calls = []
    # Row 0 already generated its stop token 0 at position 1; row 1's 0s are free padding.
    prompt = tf.constant([[4, 0, 0, 0, 0, 0], [7, 8, 0, 0, 0, 0]])
    mask = tf.constant([[True] + [False] * 5, [True, True] + [False] * 4])
    tokens = GreedySampler()(
        _successor_next(calls), prompt, index=2, mask=mask, stop_token_ids=(0,)
    )
    np.testing.assert_array_equal(tokens, [[4, 0, 0, 0, 0, 0], [7, 8, 9, 0, 0, 0]])
    assert calls == [2, 3]


def test_the_cache_is_handed_back_to_every_call():
    calls = []

    def next(prompt, cache, index):
        calls.append(int(index))
        step = cache["step"] + 1  # (batch,)
        # The token is the step count, so an unchanged cache would repeat token 1.
        logits = tf.one_hot(step, 10) * 5.0
        return logits, None, {"step": step, "unused": cache["unused"]}

    cache = {"step": tf.constant([0, 2]), "unused": tf.zeros((2, 3))}
    tokens = GreedySampler()(next, tf.zeros((2, 6), tf.int32), cache=cache, index=1)
    np.testing.assert_array_equal(tokens, [[0, 1, 2, 3, 4, 5], [0, 3, 4, 5, 6, 7]])
    assert calls == [1, 2, 3, 4, 5]


def test_two_prompts_of_one_shape_trace_the_loop_once(bigram_next, bigram_table, reference):
    traces = []
    sampler = TopKSampler(k=3, seed=1)

    @tf.function
    def generate(prompt):
        traces.append(1)
        return sampler(bigram_next(bigram_table), prompt, index=1, stop_token_ids=(2,))

    first = generate(tf.constant([[1, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0]]))
    second = generate(tf.constant([[7, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0]]))
    assert len(traces) == 1
    np.testing.assert_array_equal(first[:, 0], [1, 4])
    np.testing.assert_array_equal(second[:, 0], [7, 9])


@pytest.mark.parametrize(
    "sampler",
    [
        RandomSampler(temperature=0, seed=3),
        RandomSampler(temperature=1e-3, seed=3),
        TopKSampler(k=4, temperature=0, seed=3),
        TopKSampler(k=4, temperature=1e-3, seed=3),
        TopPSampler(p=0.95, temperature=0, seed=3),
        TopPSampler(p=0.95, temperature=1e-3, seed=3),
    ],
)
def test_temperature_zero_and_near_zero_is_greedy(sampler, bigram_next, bigram_table, reference):
    prompt = np.zeros((4, 10), np.int32)
    prompt[:, 0] = [0, 3, 8, 15]
    mask = np.zeros_like(prompt, bool)
    generate = tf.function(lambda p: sampler(bigram_next(bigram_table), p, index=1))
    tokens = generate(tf.constant(prompt)).numpy()
    np.testing.assert_array_equal(tokens, reference(bigram_table, prompt, mask, 1, np.argmax))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_compute_probabilities_is_the_softmax_of_scaled_logits(temperature):
    logits = np.random.default_rng(1).normal(size=(3, 12)).astype(np.float32)
    scaled = logits / temperature
    expected = np.exp(scaled - scaled.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = Sampler(temperature=temperature).compute_probabilities(tf.constant(logits, tf.bfloat16))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got, expected, atol=0.02)
    got = Sampler(temperature=temperature).compute_probabilities(tf.constant(logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_xla_greedy_equals_the_graph_loop_and_xla_sampling_is_reproducible(
    bigram_next, bigram_table, reference
):
    prompt = tf.constant([[1, 0, 0, 0, 0, 0, 0, 0], [6, 2, 0, 0, 0, 0, 0, 0]])
    mask = prompt > 0
    expected = reference(bigram_table, prompt.numpy(), mask.numpy(), 1, np.argmax, (3,))
    samplers = [RandomSampler(seed=5), TopKSampler(k=3, seed=5), TopPSampler(p=0.8, seed=5)]
    for sampler in [GreedySampler(), *samplers]:
        next = bigram_next(bigram_table)
        xla = tf.function(
            lambda p, m: sampler(next, p, index=1, mask=m, stop_token_ids=(3,)), jit_compile=True
        )
        first, second = xla(prompt, mask).numpy(), xla(prompt, mask).numpy()
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(first[mask.numpy()], prompt.numpy()[mask.numpy()])
        if isinstance(sampler, GreedySampler):
            np.testing.assert_array_equal(first, expected)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_most_probable_is_the_lowest_index_of_each_rows_maximum(jit_compile):
    rng = np.random.default_rng(0)
    # Few distinct values, so most rows tie for their maximum, some at several indices.
    values = rng.integers(0, 4, size=(8, 4099)).astype(np.float32)
    values[:, :5] = [[2, 9, 9, 1, 9]] * 8  # one maximum tied at 1, 2 and 4 in every row...
    values[1:, :5] = 0  # ...and in the other rows among the random values
    values[3] = 1.0  # every index ties
    values[5, 4098] = 7.0  # alone, at the last index
    choose = tf.function(most_probable, jit_compile=jit_compile)
    np.testing.assert_array_equal(choose(tf.constant(values)), np.argmax(values, axis=-1))
    assert choose(tf.constant(values))[3] == 0 and choose(tf.constant(values))[5] == 4098
    nan_row = np.full((1, 6), np.nan, np.float32)
    assert 0 <= int(choose(tf.constant(nan_row))[0]) < 6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"temperature": float("nan")}, "temperature must be a number >= 0"),
        ({"seed": -1}, "seed must be None or an integer"),
        ({"seed": 2**31}, "seed must be None or an integer"),
        ({"seed": 1.5}, "seed must be None or an integer"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)


def test_get_config_round_trip():
    sampler = Sampler(temperature=0.7, seed=11)
    assert sampler.get_config() == {"temperature": 0.7, "seed": 11}
    assert Sampler.from_config(sampler.get_config()).get_config() == sampler.get_config()


@pytest.mark.parametrize("make", [lambda: GreedySampler(), lambda: BeamSampler(num_beams=1)])
def test_end_index_stops_filling_with_the_same_compiled_loop(make, bigram_next, bigram_table, reference):
    prompt = np.zeros((2, 12), np.int32)
    prompt[:, 0] = [3, 9]
    mask = prompt != 0
    sampler = make()
    generate = tf.function(lambda p, end: sampler(bigram_next(bigram_table), p, index=1, mask=p != 0, end_index=end))
    full = reference(bigram_table, prompt, mask, 1, np.argmax)
    for end in (4, 7, 12, 30):
        tokens = generate(tf.constant(prompt), tf.constant(end)).numpy()
        stop = min(end, 12)
        np.testing.assert_array_equal(tokens[:, :stop], full[:, :stop])
        assert (tokens[:, stop:] == 0).all()
    assert generate.experimental_get_tracing_count() == 1
