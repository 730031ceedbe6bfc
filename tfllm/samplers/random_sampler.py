"""Ancestral sampling from the whole distribution."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler


class RandomSampler(Sampler):
    """Draws each token from the full softmax of `logits / temperature`.

    Args:
        temperature: float >= 0; 0 is greedy. Defaults to `1.0`.
        seed: int in [0, 2**31 - 1] or None; the same seed gives the same tokens.
            Defaults to `None` (a fresh seed per call).

    Call arguments:
        See `Sampler`.

    Example:

    ```python
    sampler = RandomSampler(temperature=0.8, seed=7)
    tokens = tf.function(lambda p: sampler(next, p, index=1))(prompt)
    ```
    """

    def __init__(self, temperature=1.0, seed=None):
        super().__init__(temperature=temperature, seed=seed)

    def get_next_token(self, probabilities, seed):
        # log(0) = -inf gives a zero chance, which is what a zero probability means.
        token = tf.random.stateless_categorical(
            tf.math.log(probabilities), 1, seed=seed, dtype=tf.int32
        )
        return token[:, 0]
