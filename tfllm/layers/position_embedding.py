"""Learned absolute position embedding."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.layers.validation import check_positive_size
from tfllm.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="tfllm")
class PositionEmbedding(keras.layers.Layer):
    """A learned vector per position, up to a fixed sequence length.

    The layer returns the position vectors for the positions of its input; the
    caller adds them to the token embeddings. The result has a leading axis of
    size 1 so that the addition broadcasts over the batch without materializing
    a `(batch, seq, hidden_dim)` copy. Given per-token `positions` (packed
    documents, each starting again at 0) it returns one vector per token.

    Args:
        sequence_length: int. The number of positions that have a vector.
        initializer: initializer of the `(sequence_length, hidden_dim)` matrix.
            Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, seq, hidden_dim)`, usually the token
            embeddings; only its shape is read.
        start_index: int or scalar int tensor. The position of the first
            element; cached decoding passes the cache index. Defaults to `0`.
        positions: optional int tensor of shape `(batch, seq)`, the position
            of every token, used instead of `start_index`.

    Returns:
        Tensor of shape `(1, seq, hidden_dim)` with rows
        `start_index .. start_index + seq - 1`, or of shape
        `(batch, seq, hidden_dim)` with the rows of `positions`.

    Example:
    ```python
    tokens = np.random.rand(2, 5, 16).astype("float32")
    layer = PositionEmbedding(sequence_length=32)
    embedded = tokens + layer(tokens)  # (2, 5, 16)
    restarted = layer(tokens, positions=np.array([[0, 1, 0, 1, 2]] * 2))  # (2, 5, 16)
    ```
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_size("sequence_length", sequence_length)
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, hidden_dim),
            initializer=clone_initializer(self.initializer),
        )
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        if positions is not None:
            # (batch, seq, hidden_dim)
            return tf.gather(self.position_embeddings, positions)
        sequence_length = ops.shape(inputs)[1]
        hidden_dim = ops.shape(self.position_embeddings)[1]
        positions = ops.slice(
            self.position_embeddings, (start_index, 0), (sequence_length, hidden_dim)
        )
        # (1, seq, hidden_dim)
        return ops.expand_dims(positions, 0)

    def compute_output_shape(self, inputs_shape, positions_shape=None):
        if positions_shape is not None:
            return (positions_shape[0], positions_shape[1], inputs_shape[-1])
        return (1, inputs_shape[1], inputs_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
