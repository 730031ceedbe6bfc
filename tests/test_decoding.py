"""KV-cached decoding of packed prompts and the completions read from the buffer, on a bigram stand-in."""

import numpy as np
import tensorflow as tf

from tfllm import decoding
from tfllm.prompt_packer import PromptPacker
from tfllm.samplers import GreedySampler

VOCAB = 12
TABLE = np.random.default_rng(0).normal(scale=2.0, size=(VOCAB, VOCAB)).astype(np.float32)


class CountingBigramLM:
    """Logits from the token at each position; the cache counts the positions written."""

    def build_cache(self, batch_size, max_length):
        return tf.zeros(tf.stack([batch_size, max_length]), tf.int32)

    def call_with_cache(self, token_ids, cache, cache_index):
        logits = tf.gather(tf.constant(TABLE), token_ids)  # (batch, len, vocab)
        written = tf.range(tf.shape(cache)[1]) - cache_index  # (length,)
        hit = tf.logical_and(written >= 0, written < tf.shape(token_ids)[1])
        return logits, logits, cache + tf.cast(hit, tf.int32)[None, :]


def reference_greedy(prompt, steps):
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(TABLE[tokens[-1]])))
    return tokens[len(prompt) :]


def test_decode_fills_each_row_greedily_after_its_prompt():
    model = CountingBigramLM()
    rows = [[5], [7, 8, 9], []]
    packed = PromptPacker(32)(tf.ragged.constant(rows, tf.int32), 6)
    tokens = decoding.decode(model.build_cache, model.call_with_cache, GreedySampler(), packed, stop_token_ids=())
    for row, length, out in zip(rows, packed.lengths.numpy(), tokens.numpy()):
        prompt = [1] + row
        assert out[:length].tolist() == prompt
        assert out[length : length + 6].tolist() == reference_greedy(prompt, 6)


def test_the_cache_is_filled_over_the_prompt_columns_then_one_position_per_step():
    model = CountingBigramLM()
    packed = PromptPacker(32)(tf.ragged.constant([[5, 6]], tf.int32), 4)
    cache = decoding.fill_cache(model.build_cache, model.call_with_cache, packed.prompt_columns, 20)
    assert cache.numpy().tolist() == [[1] * 16 + [0] * 4]
    _, _, cache = decoding.cached_next(model.call_with_cache)(packed.buffer, cache, 17)
    assert cache.numpy()[0, 14:18].tolist() == [1, 1, 1, 0]  # the token before 17 is at 16


def test_wrap_next_is_the_callback_the_sampler_calls():
    model = CountingBigramLM()
    packed = PromptPacker(32)(tf.ragged.constant([[5], [6]], tf.int32), 5)

    def wrap(next):
        def only_token_4(prompt, cache, index):
            logits, hidden, cache = next(prompt, cache, index)
            return tf.one_hot(tf.fill([tf.shape(logits)[0]], 4), VOCAB), hidden, cache

        return only_token_4

    tokens = decoding.decode(model.build_cache, model.call_with_cache, GreedySampler(), packed, (), wrap)
    assert tokens.numpy()[:, 2:7].tolist() == [[4] * 5] * 2


def reference_completions(tokens, lengths, max_new_tokens, stop_token_ids):
    rows = []
    for row, length in zip(tokens, lengths):
        new = row[length : length + max_new_tokens].tolist()
        stops = [i for i, token in enumerate(new) if token in stop_token_ids]
        rows.append(new[: stops[0]] if stops else new)
    return rows


def test_completions_cut_each_row_after_its_prompt_and_before_its_first_stop_id():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 8, size=(6, 20)).astype(np.int32)
    lengths = rng.integers(1, 10, size=6).astype(np.int32)
    for max_new_tokens, stop_token_ids in ((5, (1,)), (10, (1, 3)), (4, ())):
        out = decoding.completions(tf.constant(tokens), tf.constant(lengths), max_new_tokens, stop_token_ids)
        assert out.to_list() == reference_completions(tokens, lengths, max_new_tokens, stop_token_ids)
