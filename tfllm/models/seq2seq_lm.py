"""Sequence-to-sequence task model (translation, summarization) around a `Seq2SeqBackbone`."""

import keras
from keras import ops

from tfllm.models.task_model import TaskModel


@keras.saving.register_keras_serializable(package="tfllm")
class Seq2SeqLM(TaskModel):
    """Source text in, target text out: the decoder's hidden states to float32 next-token logits.

    Trained with teacher forcing: `x` holds the source (`"encoder_token_ids"`,
    `"encoder_padding_mask"`) and the target shifted right behind the start id
    (`"decoder_token_ids"`, `"decoder_padding_mask"`); `y` the target's next ids and
    `sample_weight` 1 at target tokens, so that the loss counts them only. The head is the
    shared token embedding (`tie_embeddings`) or its own output matrix.

    For generation, `build_cache` runs the encoder once and computes every decoder block's
    cross-attention keys and values; `call_with_cache` then decodes as `CausalLM`'s does, so
    the samplers and `tfllm.decoding` work unchanged.

    Args:
        backbone: a `Seq2SeqBackbone`.
        **kwargs: base model arguments (`name`, `trainable`).

    Example:
    ```python
    model = Seq2SeqLM(Seq2SeqBackbone(vocabulary_size=100, num_encoder_layers=2,
                                      num_decoder_layers=2, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_source_length=32,
                                      max_sequence_length=16))
    model.compile()
    cache = model.build_cache(1, 16, np.array([[5, 6, 7]]), np.array([[1, 1, 1]]))
    logits, hidden, cache = model.call_with_cache(np.array([[1]]), cache, 0)
    ```
    """

    # As Hugging Face's `config.is_encoder_decoder`: prompts are sources, decoded from the start id.
    is_encoder_decoder = True

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        # Every weight lives in the already-built backbone.
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.backbone(inputs, training=training)
        return self.backbone.token_embedding.logits(hidden)

    def build_cache(self, batch_size, max_length, encoder_token_ids, encoder_padding_mask):
        """The decoding cache of a source batch: the encoder runs here, once.

        Returns a dict: `"self"`, a zero self-attention cache (`build_self_cache`); `"cross"`,
        the cross-attention keys and values of the encoded source (`cross_key_values`);
        `"encoder_padding_mask"` `(batch, source_len)`.
        """
        backbone = self.backbone
        encoder_outputs = backbone.encode(encoder_token_ids, encoder_padding_mask, training=False)
        return {
            "self": backbone.build_self_cache(batch_size, max_length),
            "cross": backbone.cross_key_values(encoder_outputs),
            "encoder_padding_mask": ops.cast(encoder_padding_mask, "int32"),
        }

    def call_with_cache(self, token_ids, cache, cache_index):
        """Decodes target `token_ids` at positions `cache_index ..`; see `CausalLM.call_with_cache`."""
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_index)
        return self.backbone.token_embedding.logits(hidden), hidden, cache
