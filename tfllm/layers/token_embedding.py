"""Token embedding whose matrix is also the language-model head."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.layers.validation import check_positive_size
from tfllm.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="tfllm")
class TokenEmbedding(keras.layers.Layer):
    """Maps token ids to vectors, and hidden states back to token logits.

    One `(vocabulary_size, hidden_dim)` matrix serves both directions (weight
    tying), so the head adds no parameters; with `tie_weights=False` the head
    has its own `(vocabulary_size, hidden_dim)` matrix, `output_embeddings`
    (Llama's untied `lm_head`). `logits` multiplies in the compute
    dtype (bfloat16 under `mixed_bfloat16`) and casts the result to float32,
    so that softmax and loss see float32 while the large matmul stays fast.

    Args:
        vocabulary_size: int. The number of token ids.
        hidden_dim: int. The size of each embedding vector.
        embeddings_initializer: initializer of the embedding matrix (and of
            the head's own). Defaults to `"glorot_uniform"`.
        tie_weights: bool. The head is the embedding matrix. Defaults to `True`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        token_ids: int tensor of shape `(batch, seq)`.

    Returns:
        `call`: embeddings of shape `(batch, seq, hidden_dim)`.
        `logits(hidden)`: float32 logits of shape `(..., vocabulary_size)`.

    Example:
    ```python
    embedding = TokenEmbedding(vocabulary_size=50, hidden_dim=16)
    vectors = embedding(np.array([[1, 2, 3]]))  # (1, 3, 16)
    logits = embedding.logits(vectors)  # (1, 3, 50), float32
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        embeddings_initializer="glorot_uniform",
        tie_weights=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_size("vocabulary_size", vocabulary_size)
        check_positive_size("hidden_dim", hidden_dim)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.tie_weights = tie_weights

    def build(self, inputs_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.hidden_dim),
            initializer=clone_initializer(self.embeddings_initializer),
        )
        if not self.tie_weights:
            self.output_embeddings = self.add_weight(
                name="output_embeddings",
                shape=(self.vocabulary_size, self.hidden_dim),
                initializer=clone_initializer(self.embeddings_initializer),
            )
        self.built = True

    def call(self, token_ids):
        # tf.gather directly: ops.take adds index-wrapping ops on every step.
        return tf.gather(self.embeddings, token_ids)

    def logits(self, hidden):
        """Float32 logits `hidden @ head^T` over the last axis of `hidden`, the head being the
        embeddings, or `output_embeddings` when untied."""
        # Called outside `__call__`, so no autocast scope: cast explicitly.
        head = self.embeddings if self.tie_weights else self.output_embeddings
        embeddings = ops.cast(head, self.compute_dtype)
        hidden = ops.cast(hidden, self.compute_dtype)
        # A 2-D MatMul rather than a broadcast batch matmul: the gradient of
        # the latter materializes one (vocabulary, hidden) matrix per example.
        # (tokens, hidden_dim)
        flat_hidden = tf.reshape(hidden, (-1, self.hidden_dim))
        # (tokens, vocabulary_size)
        logits = tf.matmul(flat_hidden, embeddings, transpose_b=True)
        # (..., vocabulary_size)
        logits = tf.reshape(
            logits, tf.concat([tf.shape(hidden)[:-1], [self.vocabulary_size]], 0)
        )
        return ops.cast(logits, "float32")

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "tie_weights": self.tie_weights,
            }
        )
        return config
