"""Token embedding whose matrix is also the language-model head."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.layers import int8
from tfllm.layers.initializers import clone_initializer
from tfllm.layers.lora import LowRankAdapter, adapter_scale, release, unlocked
from tfllm.layers.validation import check_positive_size


@keras.saving.register_keras_serializable(package="tfllm")
class TokenEmbedding(keras.layers.Layer):
    """Maps token ids to vectors, and hidden states back to token logits.

    One `(vocabulary_size, hidden_dim)` matrix serves both directions (weight
    tying), so the head adds no parameters; with `tie_weights=False` the head
    has its own `(vocabulary_size, hidden_dim)` matrix, `output_embeddings`
    (Llama's untied `lm_head`). `logits` multiplies in the compute
    dtype (bfloat16 under `mixed_bfloat16`) and casts the result to float32,
    so that softmax and loss see float32 while the large matmul stays fast.

    `add_adapters(("embedding",), rank, alpha)` freezes the matrices and adds a low-rank
    adapter to the embedding matrix, `E + A @ B * alpha / rank` (A `(vocabulary, rank)`, zeros
    at first, as PEFT's embedding adapters), applied to the lookup and, when tied, to the head,
    so that merging it changes nothing. `quantize_int8` holds the frozen matrices as int8 rows
    with one scale each.

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
        self.adapter = None
        self.int8 = False

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
        if self.int8:
            rows = ops.cast(tf.gather(self.embeddings_int8, token_ids), self.compute_dtype)
            x = rows * ops.cast(tf.gather(self.embeddings_scale, token_ids), self.compute_dtype)[..., None]
        else:
            # tf.gather directly: ops.take adds index-wrapping ops on every step.
            x = tf.gather(self.embeddings, token_ids)
        if self.adapter is not None:
            a = ops.cast(tf.gather(self.adapter.a, token_ids), x.dtype)
            x = x + ops.matmul(a, ops.cast(self.adapter.b, x.dtype)) * self.adapter.scale
        return x

    def logits(self, hidden):
        """Float32 logits `hidden @ head^T` over the last axis of `hidden`, the head being the
        embeddings, or `output_embeddings` when untied."""
        # Called outside `__call__`, so no autocast scope: cast explicitly.
        hidden = ops.cast(hidden, self.compute_dtype)
        # A 2-D MatMul rather than a broadcast batch matmul: the gradient of
        # the latter materializes one (vocabulary, hidden) matrix per example.
        # (tokens, hidden_dim)
        flat_hidden = tf.reshape(hidden, (-1, self.hidden_dim))
        # (tokens, vocabulary_size)
        if self.int8:
            q, scale = ((self.embeddings_int8, self.embeddings_scale) if self.tie_weights
                        else (self.output_embeddings_int8, self.output_embeddings_scale))
            logits = int8.int8_matmul(flat_hidden, q, scale)
        else:
            head = self.embeddings if self.tie_weights else self.output_embeddings
            logits = tf.matmul(flat_hidden, ops.cast(head, self.compute_dtype), transpose_b=True)
        if self.adapter is not None and self.tie_weights:
            # h @ (A @ B)^T, as (h @ B^T) @ A^T: no (vocabulary, hidden) matrix is formed.
            low_rank = tf.matmul(flat_hidden, ops.cast(self.adapter.b, flat_hidden.dtype), transpose_b=True)
            logits += tf.matmul(low_rank, ops.cast(self.adapter.a, flat_hidden.dtype), transpose_b=True) * (
                self.adapter.scale)
        # (..., vocabulary_size)
        logits = tf.reshape(
            logits, tf.concat([tf.shape(hidden)[:-1], [self.vocabulary_size]], 0)
        )
        return ops.cast(logits, "float32")

    def add_adapters(self, targets, rank, alpha, dropout=0.0, seed=None):
        """Freeze the matrices and, when `targets` names "embedding", add the embedding adapter;
        returns how many adapters it added (`dropout` is unused: a lookup has no input to drop)."""
        if "embedding" not in targets:
            return 0
        for weight in self.weights:
            weight.trainable = False
        with unlocked(self):
            a = self.add_weight(name="lora_embedding_a", shape=(self.vocabulary_size, rank), dtype="float32",
                                initializer="zeros")
            b = self.add_weight(name="lora_embedding_b", shape=(rank, self.hidden_dim), dtype="float32",
                                initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))
        self.adapter = LowRankAdapter(a, b, 0, self.hidden_dim, adapter_scale(rank, alpha), 0.0, None)
        return 1

    def merge_adapters(self):
        """Fold the adapter into the embedding matrix (float) and drop it."""
        if self.adapter is None:
            return
        if self.int8:
            self._dequantize()
        self.embeddings.assign(self.embeddings + ops.cast(self.adapter.update(), self.embeddings.dtype))
        for weight in self.adapter.weights:
            self._untrack_variable(weight)
        self.adapter = None

    def quantize_int8(self):
        """Hold the (frozen) matrices as int8 rows, one scale per row."""
        if self.int8:
            return
        for name in self._matrix_names:
            matrix = getattr(self, name)
            q, scale = int8.quantize(matrix)
            with unlocked(self):
                setattr(self, f"{name}_int8", self.add_weight(name=f"{name}_int8", shape=q.shape, dtype="int8",
                                                              initializer="zeros", trainable=False))
                setattr(self, f"{name}_scale", self.add_weight(name=f"{name}_scale", shape=scale.shape,
                                                               initializer="ones", trainable=False))
            getattr(self, f"{name}_int8").assign(q)
            getattr(self, f"{name}_scale").assign(scale)
            release(self, name)
        self.int8 = True

    @property
    def _matrix_names(self):
        """The attribute names of its matrices: the embeddings, and the head's when untied."""
        return ("embeddings",) if self.tie_weights else ("embeddings", "output_embeddings")

    def _dequantize(self):
        for name in self._matrix_names:
            q, scale = getattr(self, f"{name}_int8"), getattr(self, f"{name}_scale")
            matrix = int8.dequantize(q, scale)
            release(self, f"{name}_int8")
            release(self, f"{name}_scale")
            with unlocked(self):
                setattr(self, name, self.add_weight(name=name, shape=matrix.shape, initializer="zeros",
                                                    trainable=False))
            getattr(self, name).assign(matrix)
        self.int8 = False

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
