"""Transformer block: attention and MLP, each around a residual, normalized before (GPT-2,
Llama) or after (BERT)."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.layers.causal_self_attention import CausalSelfAttention
from tfllm.layers.initializers import clone_initializer
from tfllm.layers.lora import AdaptableDense
from tfllm.layers.validation import check_positive_size

NORMS = ("layer", "rms")
MLPS = ("gelu_tanh", "gelu", "swiglu")


def normalization(kind, epsilon, dtype, name):
    """A `LayerNormalization` (`"layer"`) or an `RMSNormalization` (`"rms"`, Llama)."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}. Received: norm={kind!r}")
    if kind == "rms":
        return keras.layers.RMSNormalization(epsilon=epsilon, dtype=dtype, name=name)
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="tfllm")
class TransformerBlock(keras.layers.Layer):
    """One decoder block (or encoder block, with `causal=False`).

    Pre-norm (`norm_first=True`, GPT-2 and Llama): `x + dropout(attention(norm(x)))`,
    then `x + dropout(mlp(norm(x)))`. Normalizing before each branch keeps the
    residual stream an identity path, which is what lets deep stacks train
    without warmup tricks. Post-norm (`norm_first=False`, BERT):
    `norm(x + dropout(attention(x)))`, then `norm(x + dropout(mlp(x)))`.
    The MLP is `Dense(hidden_dim)(act(Dense(intermediate_dim)(.)))` with GELU
    (tanh approximation as GPT-2, or exact as BERT), or SwiGLU (Llama):
    `Dense(hidden_dim)(silu(gate(.)) * Dense(intermediate_dim)(.))`.

    Args:
        num_heads: int. The number of attention heads.
        hidden_dim: int. The size of the residual stream; a multiple of
            `num_heads`.
        intermediate_dim: int. The hidden size of the MLP.
        dropout: float. Dropout rate on both residual branches and on the
            attention probabilities. Defaults to `0.0`.
        use_rotary: bool. Rotary positions in attention. Defaults to `False`.
        max_wavelength: float. The RoPE maximum wavelength. Defaults to `10000`.
        causal: bool. Causal attention; `False` lets every token attend every
            other one (a BERT-style encoder block). Defaults to `True`.
        layer_norm_epsilon: float. The epsilon of both norms. Defaults to `1e-5`.
        norm: `"layer"` (LayerNorm) or `"rms"` (RMSNorm). Defaults to `"layer"`.
        mlp: `"gelu_tanh"`, `"gelu"` or `"swiglu"`. Defaults to `"gelu_tanh"`.
        num_key_value_heads: int or `None`. Grouped-query attention's key-value
            heads; `None` means `num_heads`. Defaults to `None`.
        use_bias: bool. Biases on the attention projections. Defaults to `True`.
        qkv_bias: bool or `None`. A bias on the query/key/value projection
            alone (Qwen2); `None` follows `use_bias`. Defaults to `None`.
        llama3_scaling: `None` or Llama 3.1's rotary frequency scaling; see
            `RotaryEmbedding`. Defaults to `None`.
        mlp_use_bias: bool. Biases on the MLP's dense layers. Defaults to `True`.
        norm_first: bool. Pre-norm (`True`) or post-norm (`False`).
            Defaults to `True`.
        kernel_initializer: initializer of every kernel.
            Defaults to `"glorot_uniform"`.
        recompute: bool. While training, keep only the block's input for the
            backward pass and compute its activations again there (gradient
            checkpointing): the activations of a whole stack no longer sit in
            memory at once, for about one more forward pass of compute. Needs
            `dropout=0`, since a second forward pass would draw other masks.
            Defaults to `False`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        x: float tensor of shape `(batch, seq, hidden_dim)`.
        padding_mask, segment_ids, positions, cache, cache_index: passed to
            `CausalSelfAttention` unchanged; see there.
        training: bool. Enables dropout.

    Returns:
        `out` of shape `(batch, seq, hidden_dim)` without cache, else
        `(out, new_cache)`.

    Example:
    ```python
    block = TransformerBlock(num_heads=2, hidden_dim=16, intermediate_dim=64)
    x = np.random.rand(2, 8, 16).astype("float32")
    y = block(x, padding_mask=np.ones((2, 8), "int32"))  # (2, 8, 16)
    ```
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.0,
        use_rotary=False,
        max_wavelength=10000,
        causal=True,
        layer_norm_epsilon=1e-5,
        norm="layer",
        mlp="gelu_tanh",
        num_key_value_heads=None,
        use_bias=True,
        qkv_bias=None,
        llama3_scaling=None,
        mlp_use_bias=True,
        norm_first=True,
        kernel_initializer="glorot_uniform",
        recompute=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_size("intermediate_dim", intermediate_dim)
        if mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}. Received: mlp={mlp!r}")
        if recompute and dropout > 0:
            raise ValueError("recompute needs dropout=0: the recomputed forward pass would draw other dropout "
                             f"masks. Received: dropout={dropout}")
        self.recompute = recompute
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.use_rotary = use_rotary
        self.max_wavelength = max_wavelength
        self.causal = causal
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm = norm
        self.mlp = mlp
        self.num_key_value_heads = num_key_value_heads
        self.use_bias = use_bias
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.llama3_scaling = llama3_scaling
        self.mlp_use_bias = mlp_use_bias
        self.norm_first = norm_first
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        self.self_attention_layer_norm = normalization(
            norm, layer_norm_epsilon, self.dtype_policy, "self_attention_layer_norm"
        )
        self.self_attention = CausalSelfAttention(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            dropout=dropout,
            use_rotary=use_rotary,
            max_wavelength=max_wavelength,
            causal=causal,
            num_key_value_heads=num_key_value_heads,
            use_bias=use_bias,
            qkv_bias=self.qkv_bias,
            llama3_scaling=llama3_scaling,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.self_attention_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="self_attention_dropout"
        )
        self.feedforward_layer_norm = normalization(
            norm, layer_norm_epsilon, self.dtype_policy, "feedforward_layer_norm"
        )
        self.feedforward_gate_dense = None
        if mlp == "swiglu":
            self.feedforward_gate_dense = self._mlp_dense(intermediate_dim, "feedforward_gate_dense")
        self.feedforward_intermediate_dense = self._mlp_dense(intermediate_dim, "feedforward_intermediate_dense")
        self.feedforward_output_dense = self._mlp_dense(hidden_dim, "feedforward_output_dense")
        self.feedforward_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="feedforward_dropout"
        )

    def _mlp_dense(self, units, name):
        """One projection of the MLP, with its own draw of the kernel initializer."""
        return AdaptableDense(units, adapter_parts={"mlp": None}, use_bias=self.mlp_use_bias,
                              dtype=self.dtype_policy, name=name,
                              kernel_initializer=clone_initializer(self.kernel_initializer))

    def build(self, inputs_shape):
        self.self_attention_layer_norm.build(inputs_shape)
        self.self_attention.build(inputs_shape)
        self.feedforward_layer_norm.build(inputs_shape)
        # The MLP always sees flattened (tokens, features) inputs.
        if self.feedforward_gate_dense is not None:
            self.feedforward_gate_dense.build((None, self.hidden_dim))
        self.feedforward_intermediate_dense.build((None, self.hidden_dim))
        self.feedforward_output_dense.build((None, self.intermediate_dim))
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
        options = dict(padding_mask=padding_mask, segment_ids=segment_ids, positions=positions, training=training)
        if cache is None:
            return self.recomputed_in_backward(lambda x: self._forward(x, **options), training, x)
        return self._forward(x, cache=cache, cache_index=cache_index, **options)

    def recomputed_in_backward(self, forward, training, *tensors):
        """`forward(*tensors)`; with `recompute` while training, through `tf.recompute_grad`, which
        differentiates it in `tensors` and the variables it reads. (Everything else `forward`
        uses, masks and positions, needs no gradient.)"""
        if self.recompute and training:
            return tf.recompute_grad(forward)(*tensors)
        return forward(*tensors)

    def _forward(
        self,
        x,
        padding_mask=None,
        segment_ids=None,
        positions=None,
        cache=None,
        cache_index=None,
        training=None,
    ):
        attention_input = self.self_attention_layer_norm(x) if self.norm_first else x
        attention_output = self.self_attention(
            attention_input,
            padding_mask=padding_mask,
            segment_ids=segment_ids,
            positions=positions,
            cache=cache,
            cache_index=cache_index,
            training=training,
        )
        if cache is not None:
            attention_output, cache = attention_output
        x = x + self._residual_dropout(self.self_attention_dropout, attention_output, training)
        if not self.norm_first:
            x = self.self_attention_layer_norm(x)

        mlp_input = self.feedforward_layer_norm(x) if self.norm_first else x
        x = x + self._residual_dropout(self.feedforward_dropout, self._feedforward(mlp_input), training)
        if not self.norm_first:
            x = self.feedforward_layer_norm(x)
        if cache is None:
            return x
        return x, cache

    def _feedforward(self, x):
        shape = ops.shape(x)
        # (tokens, hidden_dim): one 2-D MatMul per Dense.
        hidden = ops.reshape(x, (-1, self.hidden_dim))
        if self.mlp == "swiglu":
            hidden = ops.silu(self.feedforward_gate_dense(hidden)) * self.feedforward_intermediate_dense(hidden)
        else:
            hidden = ops.gelu(self.feedforward_intermediate_dense(hidden), approximate=self.mlp == "gelu_tanh")
        hidden = self.feedforward_output_dense(hidden)
        # (batch, seq, hidden_dim)
        return ops.reshape(hidden, shape)

    def _residual_dropout(self, dropout_layer, x, training):
        if self.dropout > 0:
            return dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "use_rotary": self.use_rotary,
                "max_wavelength": self.max_wavelength,
                "causal": self.causal,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "norm": self.norm,
                "mlp": self.mlp,
                "num_key_value_heads": self.num_key_value_heads,
                "use_bias": self.use_bias,
                "qkv_bias": self.qkv_bias,
                "llama3_scaling": self.llama3_scaling,
                "mlp_use_bias": self.mlp_use_bias,
                "norm_first": self.norm_first,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recompute": self.recompute,
            }
        )
        return config
