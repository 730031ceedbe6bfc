"""Base class of the decoding samplers: one compiled loop around a `next` callback."""

import tensorflow as tf

from tfllm.samplers.validation import MAX_SEED, check_seed, check_temperature
from tfllm.xla_context import compiling_with_xla


def most_probable(values):
    """int32 (batch,): the index of the largest entry of each row of `values` (batch, vocab),
    the lowest index on ties.

    In graph mode this is `tf.argmax`, one kernel. Under XLA, `tf.argmax` becomes a reduction
    over (value, index) pairs that the CPU runs an element at a time (8 rows of 4096 logits:
    47 us a step, 556 us at 50257), while the maximum and then the lowest index holding it are
    two plain reductions (9 and 126 us).
    """
    if not compiling_with_xla():
        return tf.argmax(values, axis=-1, output_type=tf.int32)
    size = tf.shape(values)[-1]
    best = tf.reduce_max(values, axis=-1, keepdims=True)
    first = tf.reduce_min(tf.where(values == best, tf.range(size), size), axis=-1)
    # A row of NaNs holds no maximum: keep its token an id of the vocabulary.
    return tf.minimum(first, size - 1)


class Sampler:
    """Fills a token buffer autoregressively inside one `tf.while_loop`.

    A sampler never sees the model, only a `next` callback, so it is testable with a
    table of logits. The loop compiles under `tf.function`, with or without
    `jit_compile=True` (XLA), for every sampler of this package; compiling is the caller's job.

    The `next` convention is KerasHub's. For each position `i` from `index` to
    `max_length - 1`, the loop calls `logits, hidden_states, cache = next(prompt, cache, i)`:
    `i` is the position of the token being generated, and `logits` (batch, vocab) must be the
    prediction made at position `i - 1`, that is the distribution of token `i` given the
    tokens before `i`. A KV-cached model therefore feeds `prompt[:, i - 1]`, writes the cache
    at `i - 1`, and needs `index >= 1` (a start token at position 0). `next` returns the
    updated cache, which the loop hands to the following call; `hidden_states` is ignored.

    The chosen token is written at `i` in every row where `mask[:, i]` is False; prompt
    positions (`mask` True) are never overwritten. With `stop_token_ids`, a row is finished
    once it has written one of them (stop ids inside the prompt do not count). Unlike
    KerasHub, a finished row is not extended: its later positions keep what the buffer held
    (the 0 padding), and the loop ends as soon as every row has finished.

    Sampling is reproducible: the random draw at position `i` uses the stateless seed
    `(seed, i)`, so the same seed gives the same output. With `seed=None` a fresh base seed
    is drawn on every call. `temperature=0` always picks the most probable token (greedy).

    Args:
        temperature: float >= 0. Logits are divided by it before the softmax; higher is more
            diverse, 0 means greedy. Defaults to `1.0`.
        seed: int in [0, 2**31 - 1] or None. Base seed of the random draws. Defaults to `None`.

    Call arguments:
        next: callable `(prompt, cache, index) -> (logits, hidden_states, cache)` as above.
        prompt: int32 tensor (batch, max_length), the token buffer padded with 0.
        cache: None or any nest of tensors with a leading batch dimension, passed through
            `next`. Defaults to `None`.
        index: int or scalar int tensor, the first position to fill. Defaults to `0`.
        mask: bool tensor (batch, max_length), True at prompt tokens. Defaults to `None`
            (nothing is protected).
        stop_token_ids: tuple of ints, or None to always fill the buffer to the end.
        hidden_states: accepted for KerasHub compatibility and ignored.
        end_index: int or scalar int tensor, or None. Positions from `end_index` on are left as
            they are; lets a caller reuse one buffer length (one compiled loop) for many
            generation lengths. Defaults to `max_length`.

    Returns the filled int32 buffer (batch, max_length).

    Example:

    ```python
    table = tf.random.normal((50, 50))  # bigram logits: row = previous token

    def next(prompt, cache, index):
        previous = tf.gather(prompt, index - 1, axis=1)
        return tf.gather(table, previous), None, cache

    prompt = tf.constant([[1, 7, 0, 0, 0], [1, 0, 0, 0, 0]])
    mask = prompt != 0
    generate = tf.function(lambda p, m: TopKSampler(k=5, seed=1)(next, p, index=1, mask=m))
    tokens = generate(prompt, mask)  # (2, 5); [1, 7] and [1] are kept
    ```
    """

    def __init__(self, temperature=1.0, seed=None):
        check_temperature(temperature)
        check_seed(seed)
        self.temperature = temperature
        self.seed = seed

    def __call__(
        self,
        next,
        prompt,
        cache=None,
        index=0,
        mask=None,
        stop_token_ids=None,
        hidden_states=None,
        end_index=None,
    ):
        prompt, index, mask, stop_ids = self.prepare_inputs(prompt, index, mask, stop_token_ids)
        has_cache = cache is not None
        base_seed = self.base_seed()
        done = self.finished_rows(prompt, mask, index, stop_ids)

        def cond(prompt, cache, index, done):
            return tf.logical_not(tf.reduce_all(done))

        def body(prompt, cache, index, done):
            logits, _, new_cache = next(prompt, cache if has_cache else None, index)
            token = self.choose_token(logits, seed=tf.stack([base_seed, index]))
            prompt, done = self.write_tokens(prompt, mask, done, index, token, stop_ids)
            return prompt, new_cache if has_cache else (), index + 1, done

        max_length = tf.shape(prompt)[1]
        prompt, _, _, _ = tf.while_loop(
            cond,
            body,
            (prompt, cache if has_cache else (), index, done),
            maximum_iterations=self.end(end_index, max_length) - index,
        )
        return prompt

    @staticmethod
    def end(end_index, max_length):
        """The position (exclusive) where filling stops: `end_index`, at most `max_length`."""
        if end_index is None:
            return max_length
        return tf.minimum(tf.cast(end_index, tf.int32), max_length)

    def compute_probabilities(self, logits):
        """Softmax of `logits / temperature`, in float32 whatever the logits' dtype."""
        return tf.nn.softmax(tf.cast(logits, tf.float32) / self.temperature, axis=-1)

    def choose_token(self, logits, seed):
        """int32 (batch,) tokens for `logits` (batch, vocab); temperature 0 is greedy."""
        if self.temperature == 0:
            return most_probable(logits)
        probabilities = self.compute_probabilities(logits)
        return tf.cast(self.get_next_token(probabilities, seed=seed), tf.int32)

    def get_next_token(self, probabilities, seed):
        """Chooses int32 (batch,) tokens from `probabilities` (batch, vocab).

        `seed` is the int32 (2,) stateless seed of this step. The base choice is the most
        probable token; sampling subclasses override this method.
        """
        return most_probable(probabilities)

    def base_seed(self):
        """int32 scalar: the configured seed, or a fresh one per call when it is None."""
        if self.seed is not None:
            return tf.constant(self.seed, tf.int32)
        return tf.random.uniform((), maxval=MAX_SEED, dtype=tf.int32)

    @staticmethod
    def prepare_inputs(prompt, index, mask, stop_token_ids):
        """Converts the call arguments to tensors: int32 prompt/index, bool mask, stop ids."""
        prompt = tf.convert_to_tensor(prompt)
        index = tf.cast(index, tf.int32)
        mask = tf.zeros_like(prompt, tf.bool) if mask is None else tf.cast(mask, tf.bool)
        stop_ids = None
        if stop_token_ids is not None:
            stop_ids = tf.constant(list(stop_token_ids), dtype=prompt.dtype)
        return prompt, index, mask, stop_ids

    @staticmethod
    def is_stop(tokens, stop_ids):
        """True where `tokens` (any shape) holds one of `stop_ids`; all False without them."""
        if stop_ids is None:
            return tf.zeros_like(tokens, tf.bool)
        return tf.reduce_any(tf.equal(tokens[..., None], stop_ids), axis=-1)

    @classmethod
    def finished_rows(cls, prompt, mask, index, stop_ids):
        """bool (batch,): rows that already generated a stop token before `index`."""
        before = tf.range(tf.shape(prompt)[1]) < index
        generated = tf.logical_and(tf.logical_not(mask), before[None, :])
        return tf.reduce_any(tf.logical_and(cls.is_stop(prompt, stop_ids), generated), axis=1)

    @classmethod
    def write_tokens(cls, prompt, mask, done, index, token, stop_ids):
        """Writes `token` at column `index` outside the prompt and finished rows.

        Returns the new buffer and the updated finished flags.
        """
        current = tf.gather(prompt, index, axis=1)
        free = tf.logical_not(tf.logical_or(tf.gather(mask, index, axis=1), done))
        column = tf.where(free, tf.cast(token, prompt.dtype), current)
        # A full-width `where` rather than a scatter keeps the static shape for XLA.
        at_index = tf.equal(tf.range(tf.shape(prompt)[1]), index)[None, :]
        prompt = tf.where(at_index, column[:, None], prompt)
        done = tf.logical_or(done, tf.logical_and(free, cls.is_stop(column, stop_ids)))
        return prompt, done

    def get_config(self):
        return {"temperature": self.temperature, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
