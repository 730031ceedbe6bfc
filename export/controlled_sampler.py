"""A sampler whose settings are runtime tensors, for a SavedModel that takes them as inputs."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler, most_probable
from tfllm.samplers.validation import MAX_SEED


class ControlledSampler(Sampler):
    """Greedy, random, top-k and nucleus sampling chosen at run time by scalar tensors.

    The loop, the `next` convention, prompt masking, stop tokens and `end_index` are those of
    `tfllm.samplers.Sampler`; only the choice of each token differs. Because the settings are
    tensors, one traced loop serves every combination, which a serving signature needs:
    `temperature` 0 is greedy, `top_k` 0 and `top_p` 1 switch those cuts off, and a `seed`
    below 0 draws a fresh seed per call. With the cuts off the draw is exactly that of
    `RandomSampler`, with only `top_p` that of `TopPSampler`, and greedy is `GreedySampler`, so
    a served model and in-process generation agree token for token for the same seed, as long
    as both run in the same mode: stateless draws differ between XLA and graph mode.

    Args:
        temperature: float32 scalar tensor >= 0.
        top_k: int32 scalar tensor >= 0; 0 keeps the whole vocabulary.
        top_p: float32 scalar tensor in (0, 1]; 1 keeps the whole vocabulary.
        seed: int32 scalar tensor; the same seed >= 0 gives the same tokens.

    Call arguments:
        See `tfllm.samplers.Sampler`.

    Example:

    ```python
    sampler = ControlledSampler(temperature=tf.constant(0.8), top_k=tf.constant(20),
                                top_p=tf.constant(1.0), seed=tf.constant(7))
    tokens = sampler(next, prompt, cache=cache, index=index, mask=mask, stop_token_ids=(1,))
    ```
    """

    def __init__(self, temperature, top_k, top_p, seed):
        # The base checks Python numbers; these are tensors, checked by the caller's graph.
        super().__init__()
        self.temperature = tf.convert_to_tensor(temperature, tf.float32)
        self.top_k = tf.convert_to_tensor(top_k, tf.int32)
        self.top_p = tf.convert_to_tensor(top_p, tf.float32)
        self.seed = tf.convert_to_tensor(seed, tf.int32)

    def base_seed(self):
        fresh = lambda: tf.random.uniform((), maxval=MAX_SEED, dtype=tf.int32)  # noqa: E731
        return tf.cond(self.seed >= 0, lambda: self.seed, fresh)

    def choose_token(self, logits, seed):
        logits = tf.cast(logits, tf.float32)
        # The argmax of the softmax, as `GreedySampler` takes it: two logits that round to
        # the same probability then tie the same way in both.
        greedy = lambda: most_probable(tf.nn.softmax(logits, axis=-1))  # noqa: E731
        return tf.cond(self.temperature > 0, lambda: self.draw(logits, seed), greedy)

    def draw(self, logits, seed):
        """int32 (batch,) tokens drawn from `logits` (batch, vocab) under the settings."""
        probabilities = tf.nn.softmax(logits / self.temperature, axis=-1)
        cut = tf.logical_or(self.top_k > 0, self.top_p < 1.0)
        return tf.cond(
            cut,
            lambda: self.draw_from_head(probabilities, seed),
            lambda: self.draw_from(probabilities, seed),
        )

    @staticmethod
    def draw_from(probabilities, seed):
        # log(0) = -inf gives a zero chance, which is what a zero probability means.
        token = tf.random.stateless_categorical(
            tf.math.log(probabilities), 1, seed=seed, dtype=tf.int32
        )
        return token[:, 0]

    def draw_from_head(self, probabilities, seed):
        """Draws among the `top_k` most probable tokens whose preceding mass is below `top_p`."""
        # A static size keeps `top_k` static, as XLA requires.
        vocabulary_size = probabilities.shape[-1] or tf.shape(probabilities)[-1]
        k = tf.where(self.top_k > 0, tf.minimum(self.top_k, vocabulary_size), vocabulary_size)
        # Sorted descending: (batch, vocab) probabilities and their token ids.
        sorted_probabilities, sorted_ids = tf.math.top_k(
            probabilities, k=vocabulary_size, sorted=True
        )
        mass_before = tf.math.cumsum(sorted_probabilities, axis=-1, exclusive=True)
        in_top_k = tf.range(vocabulary_size)[None, :] < k  # (1, vocab)
        kept = tf.logical_and(in_top_k, mass_before < self.top_p)
        choice = self.draw_from(tf.where(kept, sorted_probabilities, 0.0), seed)
        return tf.gather(sorted_ids, choice[:, None], batch_dims=1)[:, 0]

    def get_config(self):
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
        }
