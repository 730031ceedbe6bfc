"""Nucleus (top-p) sampling: draw within the smallest set of tokens holding mass p."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler
from tfllm.samplers.validation import check_top_k, check_top_p


class TopPSampler(Sampler):
    """Draws each token from the nucleus: the most probable tokens whose mass first reaches `p`.

    Tokens are sorted by probability and token `j` is kept when the mass of the tokens before
    it is below `p`, so the most probable token is always kept and `p=1` keeps everything.
    The kept tokens are drawn in proportion to their probability.

    Args:
        p: float with 0 < p <= 1, the nucleus mass. Defaults to `0.9`.
        k: int >= 1 or None. If set, only the `k` most probable tokens are candidates before
            the nucleus cut (top-k and top-p together, and a shorter sort). Defaults to `None`.
        temperature: float >= 0, applied before the cut; 0 is greedy. Defaults to `1.0`.
        seed: int in [0, 2**31 - 1] or None; the same seed gives the same tokens.
            Defaults to `None` (a fresh seed per call).

    Call arguments:
        See `Sampler`.

    Example:

    ```python
    sampler = TopPSampler(p=0.9, k=50, seed=0)
    tokens = tf.function(lambda p: sampler(next, p, index=1))(prompt)
    ```
    """

    def __init__(self, p=0.9, k=None, temperature=1.0, seed=None):
        check_top_p(p, name="p")
        if k is not None:
            check_top_k(k, name="k")
        super().__init__(temperature=temperature, seed=seed)
        self.p = p
        self.k = k

    def get_next_token(self, probabilities, seed):
        vocabulary_size = probabilities.shape[-1]
        if vocabulary_size is None:
            vocabulary_size = tf.shape(probabilities)[-1]
            k = vocabulary_size if self.k is None else tf.minimum(self.k, vocabulary_size)
        else:
            # A Python int keeps `top_k` static, as XLA requires.
            k = vocabulary_size if self.k is None else min(self.k, vocabulary_size)
        # Sorted descending: (batch, k) probabilities and their token ids.
        sorted_probabilities, sorted_ids = tf.math.top_k(probabilities, k=k, sorted=True)
        mass_before = tf.math.cumsum(sorted_probabilities, axis=-1, exclusive=True)
        kept = tf.where(mass_before < self.p, sorted_probabilities, 0.0)
        choice = tf.random.stateless_categorical(
            tf.math.log(kept), 1, seed=seed, dtype=tf.int32
        )  # (batch, 1), an index into the sorted candidates
        return tf.gather(sorted_ids, choice, batch_dims=1)[:, 0]

    def get_config(self):
        return {"p": self.p, "k": self.k, "temperature": self.temperature, "seed": self.seed}
