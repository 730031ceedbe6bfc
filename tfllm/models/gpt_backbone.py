"""GPT decoder (or bidirectional encoder) backbone: token ids to final hidden states."""

import keras
import tensorflow as tf

from tfllm.layers.position_embedding import PositionEmbedding
from tfllm.layers.token_embedding import TokenEmbedding
from tfllm.layers.transformer_block import TransformerBlock, normalization

POSITION_KINDS = ("learned", "rope")


def _validate(
    vocabulary_size,
    num_layers,
    num_heads,
    hidden_dim,
    intermediate_dim,
    max_sequence_length,
    dropout,
    position,
):
    for arg_name, value in (
        ("vocabulary_size", vocabulary_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("intermediate_dim", intermediate_dim),
        ("max_sequence_length", max_sequence_length),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(
                f"{arg_name} must be a positive integer. Received: {arg_name}={value!r}"
            )
    if hidden_dim % num_heads != 0:
        raise ValueError(
            "num_heads must divide hidden_dim. "
            f"Received: num_heads={num_heads}, hidden_dim={hidden_dim}"
        )
    if position not in POSITION_KINDS:
        raise ValueError(
            f"position must be one of {POSITION_KINDS}. Received: position={position!r}"
        )
    if position == "rope" and (hidden_dim // num_heads) % 2 != 0:
        raise ValueError(
            "position='rope' needs an even head_dim = hidden_dim / num_heads. "
            f"Received: num_heads={num_heads}, hidden_dim={hidden_dim}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")


def segment_positions(segment_ids):
    """The position of every token within its document of a packed row.

    A document is a run of equal ids; its first token is at position 0, so
    `[[1, 1, 1, 2, 2, 0]]` gives `[[0, 1, 2, 0, 1, 0]]`.

    Args:
        segment_ids: int tensor of shape `(batch, seq)`.

    Returns:
        int32 tensor of shape `(batch, seq)`: the index of each token minus
        the index of the first token of its run within the row.
    """
    segment_ids = tf.convert_to_tensor(segment_ids)
    shape = tf.shape(segment_ids)
    batch_size, sequence_length = shape[0], shape[1]
    # (batch, seq): True where a run starts (the first token, and every change of id).
    starts = tf.concat(
        [
            tf.ones((batch_size, 1), "bool"),
            tf.not_equal(segment_ids[:, 1:], segment_ids[:, :-1]),
        ],
        axis=1,
    )
    # (batch, seq): one id per run, unique over the batch (rows offset by seq).
    run_ids = tf.cumsum(tf.cast(starts, "int32"), axis=1) - 1
    run_ids += tf.range(batch_size)[:, None] * sequence_length
    # (batch, seq)
    index = tf.broadcast_to(tf.range(sequence_length)[None, :], shape)
    # A segment min over runs instead of a (seq, seq) comparison: linear in the
    # tokens, and its output size is static under XLA.
    # (batch * seq,)
    first_index = tf.math.unsorted_segment_min(
        tf.reshape(index, [-1]), tf.reshape(run_ids, [-1]), batch_size * sequence_length
    )
    return index - tf.gather(first_index, run_ids)


class _SegmentPositions(keras.layers.Layer):
    """`segment_positions` as a layer of the functional graph; `None` stays `None`."""

    def call(self, segment_ids):
        if segment_ids is None:
            return None
        return segment_positions(segment_ids)


@keras.saving.register_keras_serializable(package="tfllm")
class GPTBackbone(keras.Model):
    """A decoder-only Transformer as a functional model.

    Token embedding (+ learned positions when `position="learned"`), dropout,
    `num_layers` pre-norm `TransformerBlock`s named `transformer_layer_{i}`
    and a final norm. With `position="rope"` the blocks rotate queries and
    keys instead and there is no position matrix. Kernels and embeddings start
    from N(0, 0.02), as GPT-2. With `causal=False` the same layers make a
    BERT-style bidirectional encoder; with `norm_first=False` the blocks are
    post-norm (BERT) and the norm moves from the end to the embeddings.

    The defaults are GPT-2's architecture. Llama's: `norm="rms"`,
    `mlp="swiglu"`, `position="rope"`, `use_bias=False`, and often
    `num_key_value_heads` below `num_heads` and `tie_embeddings=False`.

    Packed rows carry `segment_ids`: a token then attends only tokens of its
    own document (earlier ones when causal), and positions restart at 0 at
    each document, so a document gives the same hidden states packed or
    alone.

    Args:
        vocabulary_size: int. The number of token ids.
        num_layers: int. The number of transformer blocks.
        num_heads: int. Attention heads per block; must divide `hidden_dim`.
        hidden_dim: int. The size of the residual stream.
        intermediate_dim: int. The hidden size of each block's MLP.
        max_sequence_length: int. The longest sequence; the size of the
            learned position matrix and the longest decoding cache.
        dropout: float. Dropout on embeddings, residual branches and attention
            probabilities. Defaults to `0.0`.
        position: `"learned"` or `"rope"`. Defaults to `"learned"`.
        causal: bool. `True` for a decoder, `False` for a bidirectional
            encoder (no cached decoding). Defaults to `True`.
        norm: `"layer"` or `"rms"`. Defaults to `"layer"`.
        norm_epsilon: float. Every norm's epsilon. Defaults to `1e-5`.
        mlp: `"gelu_tanh"`, `"gelu"` or `"swiglu"`. Defaults to `"gelu_tanh"`.
        num_key_value_heads: int or `None`: grouped-query attention's
            key-value heads, dividing `num_heads`. Defaults to `None`
            (`num_heads`).
        rope_theta: float. The rotary maximum wavelength. Defaults to `10000`.
        llama3_scaling: `None` or `(factor, low_frequency_factor,
            high_frequency_factor, original_max_position)`, Llama 3.1's
            rotary frequency scaling (see `RotaryEmbedding`). Defaults to `None`.
        use_bias: bool. Biases on the attention projections and the MLP.
            Defaults to `True`.
        qkv_bias: bool or `None`. A bias on the query/key/value projection
            alone (Qwen2: `use_bias=False, qkv_bias=True`); `None` follows
            `use_bias`. Defaults to `None`.
        tie_embeddings: bool. The output head is the token embedding matrix.
            Defaults to `True`.
        norm_first: bool. Pre-norm blocks with a final norm (`True`), or
            post-norm blocks after a norm of the embeddings (`False`).
            Defaults to `True`.
        pooler: bool. Builds `pooler_dense`, BERT's pooler: a
            `Dense(hidden_dim, "tanh")` that a `Classifier` applies to the
            hidden state of the token it reads (BERT's first, `[CLS]`); the
            backbone's output does not go through it. It starts frozen and the
            `Classifier` makes it trainable: under any other head it has no
            gradient, which could be neither accumulated nor all-reduced.
        recompute: bool. Gradient checkpointing: each block's activations are
            computed again in the backward pass instead of kept (see
            `TransformerBlock`); needs `dropout=0`. Defaults to `False`.
            Defaults to `False`.
        dtype: dtype or dtype policy of every layer; `None` takes the global
            policy.
        **kwargs: base model arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with `"token_ids"` and `"padding_mask"`, int tensors of
            shape `(batch, seq)`; `padding_mask` is 1 for real tokens. An
            optional `"segment_ids"` (same shape; absent or `None` means one
            document per row) numbers the documents of a packed row.

    Returns:
        Hidden states of shape `(batch, seq, hidden_dim)`.

    Example:
    ```python
    backbone = GPTBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=64, max_sequence_length=32,
    )
    hidden = backbone({
        "token_ids": np.array([[5, 6, 7, 0]]),
        "padding_mask": np.array([[1, 1, 1, 0]]),
    })  # (1, 4, 16)
    packed = backbone({
        "token_ids": np.array([[5, 6, 7, 8, 9, 0]]),
        "padding_mask": np.array([[1, 1, 1, 1, 1, 0]]),
        "segment_ids": np.array([[1, 1, 1, 2, 2, 0]]),
    })  # (1, 6, 16): [8, 9] as if alone

    cache = backbone.build_cache(batch_size=1, max_length=32)
    hidden, cache = backbone.call_with_cache(np.array([[5]]), cache, 0)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length,
        dropout=0.0,
        position="learned",
        causal=True,
        norm="layer",
        norm_epsilon=1e-5,
        mlp="gelu_tanh",
        num_key_value_heads=None,
        rope_theta=10000,
        llama3_scaling=None,
        use_bias=True,
        qkv_bias=None,
        tie_embeddings=True,
        norm_first=True,
        pooler=False,
        recompute=False,
        dtype=None,
        **kwargs,
    ):
        _validate(
            vocabulary_size,
            num_layers,
            num_heads,
            hidden_dim,
            intermediate_dim,
            max_sequence_length,
            dropout,
            position,
        )
        initializer = keras.initializers.RandomNormal(stddev=0.02)

        # === Layers ===
        token_embedding = TokenEmbedding(
            vocabulary_size=vocabulary_size,
            hidden_dim=hidden_dim,
            embeddings_initializer=initializer,
            tie_weights=tie_embeddings,
            dtype=dtype,
            name="token_embedding",
        )
        position_embedding = None
        if position == "learned":
            position_embedding = PositionEmbedding(
                sequence_length=max_sequence_length,
                initializer=initializer,
                dtype=dtype,
                name="position_embedding",
            )
        embeddings_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name="embeddings_dropout"
        )
        transformer_layers = [
            TransformerBlock(
                num_heads=num_heads,
                hidden_dim=hidden_dim,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                use_rotary=position == "rope",
                max_wavelength=rope_theta,
                llama3_scaling=llama3_scaling,
                causal=causal,
                layer_norm_epsilon=norm_epsilon,
                norm=norm,
                mlp=mlp,
                num_key_value_heads=num_key_value_heads,
                use_bias=use_bias,
                qkv_bias=qkv_bias,
                mlp_use_bias=use_bias,
                norm_first=norm_first,
                kernel_initializer=initializer,
                recompute=recompute,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        # Pre-norm: after the last block; post-norm: on the embeddings, before the first.
        layer_norm = normalization(norm, norm_epsilon, dtype, "layer_norm")
        pooler_dense = None
        if pooler:
            pooler_dense = keras.layers.Dense(
                hidden_dim,
                activation="tanh",
                kernel_initializer=initializer,
                dtype=dtype,
                trainable=False,
                name="pooler_dense",
            )
        # No weights: variables and their order are those of a backbone
        # without packing, so its checkpoints still restore.
        positions_layer = _SegmentPositions(dtype=dtype, name="segment_positions")

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        # At run time `None` unless the rows are packed; every layer below
        # then takes its unpacked path.
        segment_ids = keras.Input(
            shape=(None,), dtype="int32", name="segment_ids", optional=True
        )
        positions = positions_layer(segment_ids)
        x = token_embedding(token_ids)
        if position_embedding is not None:
            x = x + position_embedding(x, positions=positions)
        if not norm_first:
            x = layer_norm(x)
        if dropout > 0:
            x = embeddings_dropout(x)
        for block in transformer_layers:
            x = block(
                x, padding_mask=padding_mask, segment_ids=segment_ids, positions=positions
            )
        hidden = layer_norm(x) if norm_first else x
        super().__init__(
            inputs={
                "token_ids": token_ids,
                "padding_mask": padding_mask,
                "segment_ids": segment_ids,
            },
            outputs=hidden,
            **kwargs,
        )
        # The functional constructor does not take a dtype; the layers above
        # already compute in it, this makes the model report it.
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

        # Attributes are set after the functional constructor, which owns
        # layer tracking.
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.embeddings_dropout = embeddings_dropout
        self.transformer_layers = transformer_layers
        self.layer_norm = layer_norm
        # Outside the functional graph, so its weights come after every other
        # one: a backbone without it keeps its variables and their order.
        self.pooler_dense = pooler_dense
        if pooler_dense is not None:
            pooler_dense.build((None, hidden_dim))

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.position = position
        self.causal = causal
        self.norm = norm
        self.norm_epsilon = norm_epsilon
        self.mlp = mlp
        self.num_key_value_heads = num_heads if num_key_value_heads is None else num_key_value_heads
        self.rope_theta = rope_theta
        self.llama3_scaling = None if llama3_scaling is None else tuple(llama3_scaling)
        self.use_bias = use_bias
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.tie_embeddings = tie_embeddings
        self.norm_first = norm_first
        self.pooler = pooler
        self.recompute = recompute

    def __call__(self, inputs, *args, **kwargs):
        # Keras 3.15 lets an optional input be `None` but not a missing key.
        if isinstance(inputs, dict) and "segment_ids" not in inputs:
            inputs = {**inputs, "segment_ids": None}
        return super().__call__(inputs, *args, **kwargs)

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def build_cache(self, batch_size, max_length):
        """A zero decoding cache: one `(keys, values)` pair per block, each
        `(batch, num_key_value_heads, max_length, head_dim)` (`tfllm.layers.kv_cache`)."""
        return tuple(block.self_attention.empty_cache(batch_size, max_length) for block in self.transformer_layers)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Runs new tokens through the blocks one by one, reading and writing the cache.

        Args:
            token_ids: int tensor of shape `(batch, new)`, the tokens at
                positions `cache_index .. cache_index + new - 1`.
            cache: the tuple of `build_cache`, one `(keys, values)` pair per block.
            cache_index: int or scalar int tensor.

        Returns:
            `(hidden, new_cache)`: hidden states of shape
            `(batch, new, hidden_dim)` and the updated cache.
        """
        if not self.causal:
            raise ValueError(
                "call_with_cache needs a causal backbone; this one was built "
                "with causal=False (a bidirectional encoder)."
            )
        x = self.token_embedding(token_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(x, start_index=cache_index)
        if not self.norm_first:
            x = self.layer_norm(x)
        layer_caches = []
        for block, layer_cache in zip(self.transformer_layers, cache):
            x, layer_cache = block(x, cache=layer_cache, cache_index=cache_index)
            layer_caches.append(layer_cache)
        hidden = self.layer_norm(x) if self.norm_first else x
        return hidden, tuple(layer_caches)

    def get_config(self):
        # Not the functional config: the constructor rebuilds the graph.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "position": self.position,
            "causal": self.causal,
            "norm": self.norm,
            "norm_epsilon": self.norm_epsilon,
            "mlp": self.mlp,
            "num_key_value_heads": self.num_key_value_heads,
            "rope_theta": self.rope_theta,
            "llama3_scaling": self.llama3_scaling,
            "use_bias": self.use_bias,
            "qkv_bias": self.qkv_bias,
            "tie_embeddings": self.tie_embeddings,
            "norm_first": self.norm_first,
            "pooler": self.pooler,
            "recompute": self.recompute,
        }
