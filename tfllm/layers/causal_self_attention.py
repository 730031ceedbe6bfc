"""Multi-head causal self-attention with a fused qkv projection and a KV cache."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.layers import kv_cache
from tfllm.layers.lora import AdaptableDense
from tfllm.layers.rotary_embedding import RotaryEmbedding
from tfllm.layers.initializers import clone_initializer
from tfllm.layers.validation import check_heads_and_dropout

# Added to the float32 scores of masked pairs. Finite, so that a query row with
# every key masked (left padding) gives a uniform row instead of NaN.
_MASK_VALUE = -1e9


def attention_bias(
    query_length,
    key_length,
    query_start=0,
    causal=True,
    padding_mask=None,
    segment_ids=None,
):
    """Float32 additive mask: 0 where a query may attend a key, -1e9 elsewhere.

    Query `i` sits at position `query_start + i` and key `j` at position `j`.
    A query attends keys at or before its position when `causal`, that are
    real tokens (`padding_mask` of shape `(batch, key_length)`, 1 = real) and
    that carry its own segment id (`segment_ids` of shape `(batch, seq)`,
    self-attention without cache only). Returns shape
    `(1 or batch, 1, query_length, key_length)`.
    """
    if causal:
        query_positions = ops.arange(query_length) + ops.cast(query_start, "int32")
        key_positions = ops.arange(key_length)
        # (query_length, key_length)
        allowed = ops.expand_dims(key_positions, 0) <= ops.expand_dims(query_positions, 1)
        # (1, 1, query_length, key_length)
        allowed = allowed[None, None, :, :]
    else:
        # (1, 1, query_length, key_length)
        allowed = ops.ones((1, 1, query_length, key_length), "bool")
    if padding_mask is not None:
        # (batch, 1, 1, key_length)
        real_keys = ops.cast(padding_mask, "bool")[:, None, None, :]
        allowed = ops.logical_and(allowed, real_keys)
    if segment_ids is not None:
        # (batch, 1, seq, seq)
        same_segment = ops.equal(
            segment_ids[:, None, :, None], segment_ids[:, None, None, :]
        )
        allowed = ops.logical_and(allowed, same_segment)
    return ops.where(allowed, 0.0, _MASK_VALUE)


def attend(query, key, value, bias, dropout=None, training=None):
    """Softmax attention of `(batch, heads, query_len, head_dim)` queries over keys and values
    `(batch, key_value_heads, key_len, head_dim)`, with the float32 additive `bias` of
    `attention_bias`.

    With fewer key-value heads than query heads (grouped-query attention), query head `i` reads
    key-value head `i // (heads / key_value_heads)`: the queries of a group are stacked along the
    query axis of one matmul, so the keys and values are read as they are, never repeated.
    Scores are computed in the compute dtype and softmaxed in float32; `dropout` (a Dropout
    layer or None) drops attention probabilities. Returns `(batch, heads, query_len, head_dim)`.
    """
    # Scaling the queries is cheaper than scaling the (seq, seq) scores.
    query = query * ops.cast(query.shape[-1] ** -0.5, query.dtype)
    heads, key_value_heads = query.shape[1], key.shape[1]
    groups = heads // key_value_heads
    if groups > 1:
        shape = ops.shape(query)
        # (batch, key_value_heads, groups * query_len, head_dim): heads are grouped consecutively.
        query = ops.reshape(query, (shape[0], key_value_heads, groups * shape[2], shape[3]))
    # tf.matmul's transpose_b folds the key transpose into the MatMul.
    # (batch, key_value_heads, groups * query_len, key_len)
    scores = ops.cast(tf.matmul(query, key, transpose_b=True), "float32")
    if groups > 1:
        # (batch, key_value_heads, groups, query_len, key_len) + (batch, 1, 1, query_len, key_len)
        scores = ops.reshape(scores, (shape[0], key_value_heads, groups, shape[2], -1)) + bias[:, :, None]
        scores = ops.reshape(scores, (shape[0], key_value_heads, groups * shape[2], -1))
    else:
        scores = scores + bias
    probabilities = ops.cast(ops.softmax(scores, axis=-1), query.dtype)
    if dropout is not None:
        probabilities = dropout(probabilities, training=training)
    # (batch, key_value_heads, groups * query_len, head_dim)
    out = tf.matmul(probabilities, value)
    if groups > 1:
        out = ops.reshape(out, shape)
    # (batch, heads, query_len, head_dim)
    return out


@keras.saving.register_keras_serializable(package="tfllm")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention where each token sees only earlier tokens.

    With `causal=False` every token sees every other one (a bidirectional
    encoder, as BERT); padding and segment masks apply either way.

    Queries, keys and values come from ONE `Dense` whose output is laid out as
    `(num_heads + 2 * num_key_value_heads, head_dim)`: the query heads, then
    the key heads, then the value heads, so a single MatMul and a single
    transpose serve all three. With fewer key-value heads than query heads
    (grouped-query attention, as Llama 2 70B and Llama 3) each key-value head
    serves `num_heads / num_key_value_heads` consecutive query heads, and the
    cache holds only the key-value heads. Scores are computed in the compute
    dtype and softmaxed in float32.

    With a cache the layer decodes incrementally: `x` holds the new tokens at
    positions `cache_index .. cache_index + len - 1`, their keys and values are
    written into the cache, and they attend every cache slot up to their own
    position.

    Args:
        num_heads: int. The number of attention heads.
        hidden_dim: int. The size of the input and output vectors; must be a
            multiple of `num_heads`.
        dropout: float. Dropout rate on the attention probabilities.
            Defaults to `0.0` (no dropout op at all).
        use_rotary: bool. Rotate queries and keys by their positions (RoPE).
            Defaults to `False`.
        max_wavelength: float. The RoPE maximum wavelength (a checkpoint's
            `rope_theta`). Defaults to `10000`.
        causal: bool. Mask out later tokens. A cache needs `True`.
            Defaults to `True`.
        num_key_value_heads: int or `None`. Key and value heads; must divide
            `num_heads`. Defaults to `None`, one per query head.
        use_bias: bool. Biases on both projections (GPT-2, BERT); Llama has
            none. Defaults to `True`.
        qkv_bias: bool or `None`. A bias on the query/key/value projection
            alone, overriding `use_bias` there (Qwen2: `use_bias=False`,
            `qkv_bias=True`). Defaults to `None` (`use_bias`).
        llama3_scaling: `None` or Llama 3.1's rotary frequency scaling; see
            `RotaryEmbedding`. Defaults to `None`.
        kernel_initializer: initializer of both projection kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of both projection biases.
            Defaults to `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: float tensor of shape `(batch, seq, hidden_dim)`.
        padding_mask: optional bool/int tensor, 1 = real token. Shape
            `(batch, seq)` without cache, `(batch, max_len)` (one entry per
            cache slot) with cache.
        segment_ids: optional int tensor of shape `(batch, seq)`. Tokens attend
            only tokens with an equal id (packed documents). Not allowed with
            a cache.
        positions: optional int tensor of shape `(batch, seq)`, the position
            of every token for rotary embeddings, so that each packed
            document starts at 0. Not allowed with a cache.
        cache: optional `(keys, values)` pair, each of shape
            `(batch, num_key_value_heads, max_len, head_dim)` (`kv_cache`),
            written at `cache_index` (`kv_cache.write`).
        cache_index: int or scalar int tensor, the position of `x[:, 0]`;
            required with `cache`.
        training: bool. Enables attention dropout.

    Returns:
        `out` of shape `(batch, seq, hidden_dim)` without cache, else
        `(out, new_cache)`.

    Example:
    ```python
    attention = CausalSelfAttention(num_heads=2, hidden_dim=16)
    x = np.random.rand(2, 8, 16).astype("float32")
    out = attention(x, padding_mask=np.ones((2, 8), "int32"))  # (2, 8, 16)

    cache = attention.empty_cache(batch_size=2, max_length=12)
    out, cache = attention(x, cache=cache, cache_index=0)  # prompt
    step, cache = attention(x[:, :1], cache=cache, cache_index=8)  # next token

    encoder = CausalSelfAttention(num_heads=2, hidden_dim=16, causal=False)
    out = encoder(x, segment_ids=np.array([[1, 1, 1, 2, 2, 2, 2, 2]] * 2))
    ```
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        dropout=0.0,
        use_rotary=False,
        max_wavelength=10000,
        causal=True,
        num_key_value_heads=None,
        use_bias=True,
        qkv_bias=None,
        llama3_scaling=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_heads_and_dropout(num_heads, hidden_dim, dropout)
        num_key_value_heads = num_heads if num_key_value_heads is None else num_key_value_heads
        if num_key_value_heads <= 0 or num_heads % num_key_value_heads != 0:
            raise ValueError(
                "num_key_value_heads must be positive and divide num_heads. "
                f"Received: num_key_value_heads={num_key_value_heads}, num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.use_rotary = use_rotary
        self.max_wavelength = max_wavelength
        self.causal = causal
        self.num_key_value_heads = num_key_value_heads
        self.use_bias = use_bias
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.llama3_scaling = llama3_scaling
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.head_dim = hidden_dim // num_heads
        if use_rotary and self.head_dim % 2 != 0:
            raise ValueError(
                "Rotary positions need an even head_dim = hidden_dim / num_heads. "
                f"Received: num_heads={num_heads}, hidden_dim={hidden_dim}"
            )

        query_width, key_width = num_heads * self.head_dim, num_key_value_heads * self.head_dim
        self.query_key_value_dense = AdaptableDense(
            query_width + 2 * key_width,
            adapter_parts={"query": (0, query_width), "key": (query_width, query_width + key_width),
                           "value": (query_width + key_width, query_width + 2 * key_width)},
            use_bias=self.qkv_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="query_key_value_dense",
        )
        self.output_dense = AdaptableDense(
            hidden_dim,
            adapter_parts={"attention_output": None},
            use_bias=use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="output_dense",
        )
        self.rotary_embedding = None
        if use_rotary:
            # Applied to (batch, heads, seq, head_dim) queries and keys.
            self.rotary_embedding = RotaryEmbedding(
                max_wavelength=max_wavelength,
                sequence_axis=-2,
                llama3_scaling=llama3_scaling,
                dtype=self.dtype_policy,
                name="rotary_embedding",
            )
        self.probabilities_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="probabilities_dropout"
        )

    def build(self, inputs_shape):
        if inputs_shape[-1] != self.hidden_dim:
            raise ValueError(
                "The last axis of the input must equal hidden_dim. "
                f"Received: inputs_shape={inputs_shape}, hidden_dim={self.hidden_dim}"
            )
        # The projections always see flattened (tokens, features) inputs.
        self.query_key_value_dense.build((None, self.hidden_dim))
        self.output_dense.build((None, self.hidden_dim))
        self.built = True

    def call(
        self,
        x,
        padding_mask=None,
        segment_ids=None,
        positions=None,
        cache=None,
        cache_index=None,
        training=None,
    ):
        if cache is not None:
            if not self.causal:
                raise ValueError(
                    "A cache needs causal attention: later tokens are not in it "
                    "yet. Received: causal=False with a cache."
                )
            if cache_index is None:
                raise ValueError("cache_index is required when a cache is given.")
            if segment_ids is not None or positions is not None:
                raise ValueError(
                    "segment_ids and positions cannot be combined with a cache."
                )
        shape = ops.shape(x)
        batch_size, sequence_length = shape[0], shape[1]

        # (tokens, hidden_dim): 2-D MatMuls are the fastest path and their
        # kernel gradient needs no reduction over a broadcast batch axis.
        qkv = self.query_key_value_dense(ops.reshape(x, (-1, self.hidden_dim)))
        start = 0 if cache is None else cache_index
        if self.num_key_value_heads == self.num_heads:
            query, key, value = self._split_heads(qkv, batch_size, sequence_length, start, positions)
        else:
            query, key, value = self._split_grouped_heads(qkv, batch_size, sequence_length, start, positions)

        if cache is None:
            bias = attention_bias(
                sequence_length,
                sequence_length,
                causal=self.causal,
                padding_mask=padding_mask,
                segment_ids=segment_ids,
            )
        else:
            cache = (kv_cache.write(cache[0], key, cache_index), kv_cache.write(cache[1], value, cache_index))
            key, value = (ops.cast(entries, query.dtype) for entries in cache)
            max_length = ops.shape(key)[2]
            bias = attention_bias(sequence_length, max_length, query_start=cache_index, padding_mask=padding_mask)
            # A (1, 1, q, k) bias sends TensorFlow's oneDNN fused matmul + add down a path
            # 100x slower than a per-batch one when filling the cache with a prompt.
            # (batch, 1, query_length, key_length)
            bias = ops.broadcast_to(bias, (batch_size, 1, sequence_length, max_length))

        out = self._attend(query, key, value, bias, training)
        # (batch, seq, heads, head_dim)
        out = ops.transpose(out, (0, 2, 1, 3))
        # (tokens, hidden_dim)
        out = self.output_dense(ops.reshape(out, (-1, self.hidden_dim)))
        # (batch, seq, hidden_dim)
        out = ops.reshape(out, (batch_size, sequence_length, self.hidden_dim))
        if cache is None:
            return out
        return out, cache

    def _split_heads(self, qkv, batch_size, sequence_length, start, positions):
        """Queries, keys and values `(batch, heads, seq, head_dim)` of a fused projection with
        as many key-value heads as query heads, rotated when the layer uses RoPE."""
        # (batch, seq, 3, heads, head_dim)
        qkv = ops.reshape(qkv, (batch_size, sequence_length, 3, self.num_heads, self.head_dim))
        # (3, batch, heads, seq, head_dim): one transpose for q, k and v, each a contiguous slice.
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        if self.rotary_embedding is None:
            return ops.unstack(qkv, 3, axis=0)
        # One rotation for the stacked (2, batch, heads, seq, head_dim) queries and keys.
        if positions is None:
            query_key = self.rotary_embedding(qkv[:2], start_index=start)
        else:
            # (1, batch, 1, seq): the axes of the stack up to the sequence axis.
            query_key = self.rotary_embedding(qkv[:2], positions=positions[None, :, None, :])
        query, key = ops.unstack(query_key, 2, axis=0)
        return query, key, qkv[2]

    def _split_grouped_heads(self, qkv, batch_size, sequence_length, start, positions):
        """`_split_heads` for fewer key-value heads than query heads: keys and values
        `(batch, key_value_heads, seq, head_dim)`."""
        heads, key_value_heads = self.num_heads, self.num_key_value_heads
        # (batch, seq, heads + 2 * key_value_heads, head_dim)
        qkv = ops.reshape(qkv, (batch_size, sequence_length, heads + 2 * key_value_heads, self.head_dim))
        # (batch, heads + 2 * key_value_heads, seq, head_dim)
        qkv = ops.transpose(qkv, (0, 2, 1, 3))
        query = qkv[:, :heads]
        key = qkv[:, heads : heads + key_value_heads]
        value = qkv[:, heads + key_value_heads :]
        if self.rotary_embedding is not None:
            # (batch, 1, seq): the axes of (batch, heads, seq, head_dim) up to the sequence axis.
            positions = None if positions is None else positions[:, None, :]
            query = self.rotary_embedding(query, start_index=start, positions=positions)
            key = self.rotary_embedding(key, start_index=start, positions=positions)
        return query, key, value

    def _attend(self, query, key, value, bias, training):
        """Softmax attention on `(batch, heads, seq, head_dim)` tensors (keys and values with
        `num_key_value_heads` heads)."""
        dropout = self.probabilities_dropout if self.dropout > 0 else None
        return attend(query, key, value, bias, dropout, training)

    def empty_cache(self, batch_size, max_length):
        """A zero cache of `max_length` positions for `batch_size` rows; see `kv_cache`."""
        return kv_cache.empty_cache(batch_size, self.num_key_value_heads, max_length, self.head_dim,
                                    self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "use_rotary": self.use_rotary,
                "max_wavelength": self.max_wavelength,
                "causal": self.causal,
                "num_key_value_heads": self.num_key_value_heads,
                "use_bias": self.use_bias,
                "qkv_bias": self.qkv_bias,
                "llama3_scaling": self.llama3_scaling,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
