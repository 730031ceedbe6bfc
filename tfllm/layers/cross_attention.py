"""Multi-head cross-attention: a decoder's queries over the encoder's outputs."""

import keras
from keras import ops

from tfllm.layers.causal_self_attention import attention_bias, attend
from tfllm.layers.initializers import clone_initializer
from tfllm.layers.lora import AdaptableDense
from tfllm.layers.validation import check_heads_and_dropout


@keras.saving.register_keras_serializable(package="tfllm")
class CrossAttention(keras.layers.Layer):
    """Attention of every query token over every real token of a memory (the encoder's outputs).

    Queries come from `x` through `query_dense`; keys and values come from the memory through ONE
    `key_value_dense` laid out as `(2 * num_heads, head_dim)`: the key heads, then the value
    heads. The memory does not change while a decoder generates, so its keys and values are
    computed once (`key_value`) and passed to every step as `key_value=`; they use the cache
    layout of `CausalSelfAttention`, a `(keys, values)` pair of `(batch, num_heads, memory_len,
    head_dim)` tensors. No positions are applied: the memory already carries them.

    Args:
        num_heads: int. The number of attention heads.
        hidden_dim: int. The size of the query, memory and output vectors; a multiple of
            `num_heads`.
        dropout: float. Dropout rate on the attention probabilities. Defaults to `0.0`.
        use_bias: bool. Biases on the three projections. Defaults to `True`.
        kernel_initializer: initializer of the projection kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the projection biases. Defaults to `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: float tensor `(batch, seq, hidden_dim)`, the queries' inputs.
        memory: float tensor `(batch, memory_len, hidden_dim)`; not needed with `key_value`.
        memory_padding_mask: optional int/bool tensor `(batch, memory_len)`, 1 = real token.
        key_value: optional `key_value(memory)`, computed once for many calls.
        training: bool. Enables attention dropout.

    Returns:
        `(batch, seq, hidden_dim)`.

    Example:
    ```python
    attention = CrossAttention(num_heads=2, hidden_dim=16)
    x, memory = np.random.rand(2, 3, 16), np.random.rand(2, 5, 16)
    out = attention(x, memory, memory_padding_mask=np.ones((2, 5)))  # (2, 3, 16)
    cached = attention.key_value(memory)  # two (2, 2, 5, 8) tensors
    step = attention(x[:, :1], memory_padding_mask=np.ones((2, 5)), key_value=cached)
    ```
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_heads_and_dropout(num_heads, hidden_dim, dropout)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.head_dim = hidden_dim // num_heads
        self.query_dense = self._dense(hidden_dim, "query_dense", {"query": None})
        self.key_value_dense = self._dense(2 * hidden_dim, "key_value_dense",
                                           {"key": (0, hidden_dim), "value": (hidden_dim, 2 * hidden_dim)})
        self.output_dense = self._dense(hidden_dim, "output_dense", {"attention_output": None})
        self.probabilities_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="probabilities_dropout"
        )

    def _dense(self, units, name, adapter_parts):
        return AdaptableDense(
            units,
            adapter_parts=adapter_parts,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, x_shape, memory_shape=None):
        if x_shape[-1] != self.hidden_dim:
            raise ValueError(
                "The last axis of the input must equal hidden_dim. "
                f"Received: x_shape={x_shape}, hidden_dim={self.hidden_dim}"
            )
        # The projections always see flattened (tokens, features) inputs.
        for dense in (self.query_dense, self.key_value_dense, self.output_dense):
            dense.build((None, self.hidden_dim))
        self.built = True

    def key_value(self, memory):
        """The keys and values of `memory` `(batch, memory_len, hidden_dim)`: a pair of
        `(batch, num_heads, memory_len, head_dim)` tensors."""
        shape = ops.shape(memory)
        key_value = self.key_value_dense(ops.reshape(memory, (-1, self.hidden_dim)))
        # (2, batch, heads, memory_len, head_dim)
        key_value = ops.transpose(
            ops.reshape(key_value, (shape[0], shape[1], 2, self.num_heads, self.head_dim)), (2, 0, 3, 1, 4)
        )
        return key_value[0], key_value[1]

    def call(self, x, memory=None, memory_padding_mask=None, key_value=None, training=None):
        if key_value is None:
            if memory is None:
                raise ValueError("CrossAttention needs the memory or its key_value.")
            key_value = self.key_value(memory)
        shape = ops.shape(x)
        batch_size, sequence_length = shape[0], shape[1]
        query = self.query_dense(ops.reshape(x, (-1, self.hidden_dim)))
        # (batch, heads, seq, head_dim)
        query = ops.transpose(
            ops.reshape(query, (batch_size, sequence_length, self.num_heads, self.head_dim)), (0, 2, 1, 3)
        )
        key, value = (ops.cast(entries, query.dtype) for entries in key_value)
        bias = attention_bias(sequence_length, ops.shape(key)[2], causal=False, padding_mask=memory_padding_mask)
        dropout = self.probabilities_dropout if self.dropout > 0 else None
        out = attend(query, key, value, bias, dropout, training)
        # (tokens, hidden_dim)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, self.hidden_dim))
        return ops.reshape(self.output_dense(out), (batch_size, sequence_length, self.hidden_dim))

    def compute_output_shape(self, x_shape, memory_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
