"""Encoder-decoder Transformer backbone: source and target token ids to the decoder's hidden states."""

import keras
from keras import ops

from tfllm.layers.decoder_block import DecoderBlock
from tfllm.layers.position_embedding import PositionEmbedding
from tfllm.layers.transformer_block import normalization
from tfllm.layers.validation import check_positive_size
from tfllm.models.gpt_backbone import GPTBackbone


@keras.saving.register_keras_serializable(package="tfllm")
class Seq2SeqBackbone(keras.Model):
    """The Transformer of "Attention Is All You Need": an encoder and a decoder joined by
    cross-attention.

    The encoder is a bidirectional `GPTBackbone` (`encoder`, `causal=False`) over the source, so
    a `masked_lm` backbone of the same shape loads into it as it is. The decoder embeds the
    target with the encoder's token embedding (one matrix for source, target and output),
    adds its own learned positions (`decoder_position_embedding`) unless `position="rope"`, and
    runs `num_decoder_layers` `DecoderBlock`s (`decoder_layer_{i}`), each attending causally to
    the target and to every real source token. A final norm (`decoder_layer_norm`) follows the
    last block when pre-norm, or normalizes the embeddings when post-norm, as in the encoder.

    While generating, the encoder runs once per request; `cross_key_values` computes every
    decoder block's cross-attention keys and values once, and `call_with_cache` decodes new
    target tokens against them and a growing self-attention cache.

    Args:
        vocabulary_size, num_heads, hidden_dim, intermediate_dim, dropout, position, norm,
            norm_epsilon, mlp, num_key_value_heads, rope_theta, use_bias, tie_embeddings,
            norm_first, recompute, dtype: as `GPTBackbone`, for both stacks (`num_key_value_heads` applies
            to self-attention; cross-attention has `num_heads` key-value heads).
        num_encoder_layers: int. Encoder blocks.
        num_decoder_layers: int. Decoder blocks.
        max_source_length: int. The longest source (the encoder's position table).
        max_sequence_length: int. The longest target (the decoder's position table and cache).
        **kwargs: base model arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict of int tensors: `"encoder_token_ids"` and `"encoder_padding_mask"`
            `(batch, source_len)`, `"decoder_token_ids"` and `"decoder_padding_mask"`
            `(batch, target_len)`; padding masks are 1 at real tokens.

    Returns:
        The decoder's hidden states `(batch, target_len, hidden_dim)`.

    Example:
    ```python
    backbone = Seq2SeqBackbone(vocabulary_size=100, num_encoder_layers=2, num_decoder_layers=2,
                               num_heads=2, hidden_dim=16, intermediate_dim=32,
                               max_source_length=32, max_sequence_length=16)
    hidden = backbone({"encoder_token_ids": np.array([[5, 6, 7, 0]]),
                       "encoder_padding_mask": np.array([[1, 1, 1, 0]]),
                       "decoder_token_ids": np.array([[1, 8]]),
                       "decoder_padding_mask": np.array([[1, 1]])})  # (1, 2, 16)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_encoder_layers,
        num_decoder_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_source_length,
        max_sequence_length,
        dropout=0.0,
        position="learned",
        norm="layer",
        norm_epsilon=1e-5,
        mlp="gelu_tanh",
        num_key_value_heads=None,
        rope_theta=10000,
        use_bias=True,
        tie_embeddings=True,
        norm_first=True,
        recompute=False,
        dtype=None,
        **kwargs,
    ):
        check_positive_size("num_decoder_layers", num_decoder_layers)
        check_positive_size("max_sequence_length", max_sequence_length)
        super().__init__(dtype=dtype, **kwargs)
        initializer = keras.initializers.RandomNormal(stddev=0.02)
        # The arguments the encoder and every decoder block share.
        shared = dict(num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
                      norm=norm, mlp=mlp, num_key_value_heads=num_key_value_heads, use_bias=use_bias,
                      norm_first=norm_first, recompute=recompute, dtype=dtype)
        self.encoder = GPTBackbone(
            vocabulary_size=vocabulary_size, num_layers=num_encoder_layers, max_sequence_length=max_source_length,
            position=position, causal=False, norm_epsilon=norm_epsilon, rope_theta=rope_theta,
            tie_embeddings=tie_embeddings, name="encoder", **shared,
        )
        self.decoder_position_embedding = None
        if position == "learned":
            self.decoder_position_embedding = PositionEmbedding(
                sequence_length=max_sequence_length, initializer=initializer, dtype=dtype,
                name="decoder_position_embedding",
            )
            self.decoder_position_embedding.build((None, None, hidden_dim))
        self.decoder_embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype,
                                                               name="decoder_embeddings_dropout")
        self.decoder_layers = []
        for i in range(num_decoder_layers):
            block = DecoderBlock(
                use_rotary=position == "rope", max_wavelength=rope_theta, layer_norm_epsilon=norm_epsilon,
                mlp_use_bias=use_bias, kernel_initializer=initializer, name=f"decoder_layer_{i}", **shared,
            )
            block.build((None, None, hidden_dim))
            self.decoder_layers.append(block)
        self.decoder_layer_norm = normalization(norm, norm_epsilon, dtype, "decoder_layer_norm")
        self.decoder_layer_norm.build((None, None, hidden_dim))
        self.built = True

        self.vocabulary_size = vocabulary_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_source_length = max_source_length
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.position = position
        self.norm = norm
        self.norm_epsilon = norm_epsilon
        self.mlp = mlp
        self.num_key_value_heads = self.encoder.num_key_value_heads
        self.rope_theta = rope_theta
        self.use_bias = use_bias
        self.tie_embeddings = tie_embeddings
        self.norm_first = norm_first
        self.recompute = recompute

    @property
    def token_embedding(self):
        """The one token embedding of source, target and output (the encoder's)."""
        return self.encoder.token_embedding

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def encode(self, token_ids, padding_mask, training=None):
        """The encoder's hidden states `(batch, source_len, hidden_dim)` of a source batch."""
        return self.encoder({"token_ids": token_ids, "padding_mask": padding_mask}, training=training)

    def call(self, inputs, training=None):
        # As a functional model's int32 inputs do: Keras may hand a symbolic build float specs.
        inputs = {key: ops.cast(value, "int32") for key, value in inputs.items()}
        encoder_outputs = self.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"], training)
        x = self._embed_target(inputs["decoder_token_ids"], 0, training)
        for block in self.decoder_layers:
            x = block(x, encoder_outputs=encoder_outputs, encoder_padding_mask=inputs["encoder_padding_mask"],
                      padding_mask=inputs["decoder_padding_mask"], training=training)
        return self.decoder_layer_norm(x) if self.norm_first else x

    def _embed_target(self, token_ids, start_index, training=None):
        x = self.token_embedding(token_ids)
        if self.decoder_position_embedding is not None:
            x = x + self.decoder_position_embedding(x, start_index=start_index)
        if not self.norm_first:
            x = self.decoder_layer_norm(x)
        if self.dropout > 0:
            x = self.decoder_embeddings_dropout(x, training=training)
        return x

    def cross_key_values(self, encoder_outputs):
        """Every decoder block's cross-attention keys and values of `encoder_outputs`: one
        `(keys, values)` pair of `(batch, num_heads, source_len, head_dim)` tensors per block."""
        return tuple(block.cross_attention.key_value(encoder_outputs) for block in self.decoder_layers)

    def build_self_cache(self, batch_size, max_length):
        """A zero self-attention cache: one `(keys, values)` pair per decoder block, each
        `(batch, num_key_value_heads, max_length, head_dim)` (`tfllm.layers.kv_cache`)."""
        return tuple(block.self_attention.empty_cache(batch_size, max_length) for block in self.decoder_layers)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Decodes target tokens at positions `cache_index ..` against the cache.

        Args:
            token_ids: int tensor `(batch, new)`.
            cache: dict of `"self"` (`build_self_cache`), `"cross"` (`cross_key_values`) and
                `"encoder_padding_mask"` `(batch, source_len)`.
            cache_index: int or scalar int tensor.

        Returns:
            `(hidden, new_cache)`: hidden states `(batch, new, hidden_dim)` and the cache with
            the new self-attention entries.
        """
        x = self._embed_target(token_ids, cache_index)
        layer_caches = []
        for block, self_cache, cross_key_value in zip(self.decoder_layers, cache["self"], cache["cross"]):
            x, self_cache = block(
                x, encoder_padding_mask=cache["encoder_padding_mask"], cache=self_cache,
                cache_index=cache_index, cross_key_value=cross_key_value,
            )
            layer_caches.append(self_cache)
        hidden = self.decoder_layer_norm(x) if self.norm_first else x
        return hidden, {**cache, "self": tuple(layer_caches)}

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "vocabulary_size": self.vocabulary_size,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "max_source_length": self.max_source_length,
            "max_sequence_length": self.max_sequence_length,
            "dropout": self.dropout,
            "position": self.position,
            "norm": self.norm,
            "norm_epsilon": self.norm_epsilon,
            "mlp": self.mlp,
            "num_key_value_heads": self.num_key_value_heads,
            "rope_theta": self.rope_theta,
            "use_bias": self.use_bias,
            "tie_embeddings": self.tie_embeddings,
            "norm_first": self.norm_first,
            "recompute": self.recompute,
        }
