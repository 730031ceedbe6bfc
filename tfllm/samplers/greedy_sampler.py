"""Greedy decoding: always the most probable token."""

import tensorflow as tf

from tfllm.samplers.sampler import Sampler


class GreedySampler(Sampler):
    """Picks the most probable token at every step (ties go to the lowest id).

    Deterministic, so it takes neither a temperature nor a seed. The loop, the `next`
    convention, prompt masking and stop tokens are those of `Sampler`.

    Call arguments:
        See `Sampler`.

    Example:

    ```python
    tokens = GreedySampler()(next, prompt, index=1, mask=prompt != 0, stop_token_ids=(2,))
    ```
    """

    def __init__(self):
        super().__init__(temperature=1.0, seed=None)

    def base_seed(self):
        # Nothing is drawn, so no random op is put in the graph.
        return tf.constant(0, tf.int32)

    def get_config(self):
        return {}
