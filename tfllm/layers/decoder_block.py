"""Encoder-decoder decoder block: causal self-attention, cross-attention over the encoder, MLP."""

import keras

from tfllm.layers.cross_attention import CrossAttention
from tfllm.layers.transformer_block import TransformerBlock, normalization


@keras.saving.register_keras_serializable(package="tfllm")
class DecoderBlock(TransformerBlock):
    """A `TransformerBlock` with cross-attention between its self-attention and its MLP.

    Pre-norm (`norm_first=True`): `x + dropout(self_attention(norm(x)))`, then
    `x + dropout(cross_attention(norm(x), encoder_outputs))`, then `x + dropout(mlp(norm(x)))`;
    post-norm (BART, Marian) normalizes after each residual instead. Self-attention is causal
    and has the KV cache of `CausalSelfAttention`; cross-attention attends every real token of
    the encoder's outputs (`encoder_padding_mask`), and while generating takes their keys and
    values computed once (`cross_attention.key_value(encoder_outputs)`) as `cross_key_value`.

    Args:
        The arguments of `TransformerBlock`, except `causal` (always `True`). Cross-attention
        has `num_heads` heads (no grouping) and biases when `use_bias`.

    Call arguments:
        x: float tensor `(batch, seq, hidden_dim)`, the decoder's stream.
        encoder_outputs: float tensor `(batch, source_len, hidden_dim)`; not needed with
            `cross_key_value`.
        encoder_padding_mask: optional int tensor `(batch, source_len)`, 1 = real token.
        padding_mask, cache, cache_index: the self-attention's; see `CausalSelfAttention`.
        cross_key_value: optional `(batch, 2, source_len, num_heads, head_dim)`.
        training: bool. Enables dropout.

    Returns:
        `out` of shape `(batch, seq, hidden_dim)` without cache, else `(out, new_cache)`.

    Example:
    ```python
    block = DecoderBlock(num_heads=2, hidden_dim=16, intermediate_dim=64)
    y = block(np.random.rand(2, 4, 16), encoder_outputs=np.random.rand(2, 6, 16),
              encoder_padding_mask=np.ones((2, 6), "int32"))  # (2, 4, 16)
    ```
    """

    def __init__(self, num_heads, hidden_dim, intermediate_dim, causal=True, **kwargs):
        if not causal:
            raise ValueError("A DecoderBlock attends causally. Received: causal=False")
        super().__init__(num_heads, hidden_dim, intermediate_dim, causal=True, **kwargs)
        self.cross_attention_layer_norm = normalization(
            self.norm, self.layer_norm_epsilon, self.dtype_policy, "cross_attention_layer_norm"
        )
        self.cross_attention = CrossAttention(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="cross_attention",
        )
        self.cross_attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="cross_attention_dropout"
        )

    def build(self, inputs_shape):
        super().build(inputs_shape)
        self.cross_attention_layer_norm.build(inputs_shape)
        self.cross_attention.build(inputs_shape)

    def call(
        self,
        x,
        encoder_outputs=None,
        encoder_padding_mask=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        cross_key_value=None,
        training=None,
    ):
        if cache is None and cross_key_value is None:
            # Recomputed (with `recompute`) as a function of the encoder's outputs too: they need
            # their gradient.
            return self.recomputed_in_backward(
                lambda x, encoder_outputs: self._forward(x, encoder_outputs, encoder_padding_mask, padding_mask,
                                                         training=training), training, x, encoder_outputs)
        return self._forward(x, encoder_outputs, encoder_padding_mask, padding_mask, cache, cache_index,
                             cross_key_value, training)

    def _forward(
        self,
        x,
        encoder_outputs=None,
        encoder_padding_mask=None,
        padding_mask=None,
        cache=None,
        cache_index=None,
        cross_key_value=None,
        training=None,
    ):
        attention_input = self.self_attention_layer_norm(x) if self.norm_first else x
        attention_output = self.self_attention(
            attention_input, padding_mask=padding_mask, cache=cache, cache_index=cache_index, training=training
        )
        if cache is not None:
            attention_output, cache = attention_output
        x = self._residual(x, attention_output, self.self_attention_layer_norm, self.self_attention_dropout, training)

        cross_input = self.cross_attention_layer_norm(x) if self.norm_first else x
        cross_output = self.cross_attention(
            cross_input, encoder_outputs, memory_padding_mask=encoder_padding_mask, key_value=cross_key_value,
            training=training,
        )
        x = self._residual(x, cross_output, self.cross_attention_layer_norm, self.cross_attention_dropout, training)

        mlp_input = self.feedforward_layer_norm(x) if self.norm_first else x
        x = self._residual(x, self._feedforward(mlp_input), self.feedforward_layer_norm, self.feedforward_dropout,
                           training)
        if cache is None:
            return x
        return x, cache

    def _residual(self, x, branch, norm, dropout_layer, training):
        """`x` plus a branch's output; normalized after the sum when the block is post-norm."""
        x = x + self._residual_dropout(dropout_layer, branch, training)
        return x if self.norm_first else norm(x)

    def get_config(self):
        config = super().get_config()
        del config["causal"]
        return config
