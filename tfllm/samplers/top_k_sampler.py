"""Top-k sampling: draw among the k most probable tokens."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler
from tfllm.samplers.validation import check_top_k


class TopKSampler(Sampler):
    """Draws each token among the `k` most probable ones, in proportion to their probability.

    Args:
        k: int >= 1, the number of candidates kept per step; a `k` larger than the
            vocabulary keeps the whole vocabulary. Defaults to `5`.
        temperature: float >= 0, applied before the cut; 0 is greedy. Defaults to `1.0`.
        seed: int in [0, 2**31 - 1] or None; the same seed gives the same tokens.
            Defaults to `None` (a fresh seed per call).

    Call arguments:
        See `Sampler`.

    Example:

    ```python
    sampler = TopKSampler(k=10, temperature=0.7, seed=0)
    tokens = tf.function(lambda p: sampler(next, p, index=1))(prompt)
    ```
    """

    def __init__(self, k=5, temperature=1.0, seed=None):
        check_top_k(k, name="k")
        super().__init__(temperature=temperature, seed=seed)
        self.k = k

    def get_next_token(self, probabilities, seed):
        vocabulary_size = probabilities.shape[-1]
        k = self.k if vocabulary_size is None else min(self.k, vocabulary_size)
        top_probabilities, top_ids = tf.math.top_k(probabilities, k=k, sorted=False)  # (batch, k)
        choice = tf.random.stateless_categorical(
            tf.math.log(top_probabilities), 1, seed=seed, dtype=tf.int32
        )  # (batch, 1), an index into the k candidates
        return tf.gather(top_ids, choice, batch_dims=1)[:, 0]

    def get_config(self):
        return {"k": self.k, "temperature": self.temperature, "seed": self.seed}
