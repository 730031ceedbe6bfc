"""Next-token prediction task model around a `GPTBackbone`."""

import keras

from tfllm.models.task_model import TaskModel, backbone_inputs


@keras.saving.register_keras_serializable(package="tfllm")
class CausalLM(TaskModel):
    """A language model: backbone hidden states to float32 next-token logits.

    The head is the backbone's token embedding, transposed (weight tying).
    Train with Keras's own `fit`: `x` is either a dict with `"token_ids"`,
    `"padding_mask"` and optionally `"segment_ids"` (packed documents that
    must not see each other), or a plain int tensor of token ids in which every
    position is real (packed pretraining blocks); `y` holds the next-token ids
    and an optional `sample_weight` zeroes out positions that must not count.

    Args:
        backbone: a `GPTBackbone` (anything with the same inputs, a
            `token_embedding` with `logits`, and `call_with_cache`).
        **kwargs: base model arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict `{"token_ids", "padding_mask"}` (and optionally
            `"segment_ids"`) or an int tensor of token ids, shape
            `(batch, seq)`.
        training: bool. Enables dropout.

    Returns:
        float32 logits of shape `(batch, seq, vocabulary_size)`.

    Example:
    ```python
    backbone = GPTBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=64, max_sequence_length=32,
    )
    model = CausalLM(backbone)
    model.compile()
    tokens = np.random.randint(1, 100, size=(8, 17))
    model.fit(tokens[:, :-1], tokens[:, 1:], epochs=1)

    cache = model.build_cache(batch_size=1, max_length=32)
    logits, hidden, cache = model.call_with_cache(tokens[:1, :4], cache, 0)
    ```
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        # Every weight lives in the already-built backbone.
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.backbone(backbone_inputs(inputs), training=training)
        return self.backbone.token_embedding.logits(hidden)

    def build_cache(self, batch_size, max_length):
        """A zero decoding cache of `max_length` positions; see `GPTBackbone.build_cache`."""
        backbone = self.backbone
        # Sizes may be tensors inside a tf.function; only Python ints are checked.
        too_long = (
            isinstance(max_length, int) and max_length > backbone.max_sequence_length
        )
        if backbone.position == "learned" and too_long:
            raise ValueError(
                "max_length must not exceed the backbone's max_sequence_length "
                "with learned positions. Received: "
                f"max_length={max_length}, "
                f"max_sequence_length={backbone.max_sequence_length}"
            )
        return backbone.build_cache(batch_size, max_length)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Decodes `token_ids` at positions `cache_index ..`.

        Returns:
            `(logits, hidden, new_cache)`: float32 logits
            `(batch, new, vocabulary_size)`, hidden states
            `(batch, new, hidden_dim)` and the updated cache.
        """
        hidden, cache = self.backbone.call_with_cache(token_ids, cache, cache_index)
        logits = self.backbone.token_embedding.logits(hidden)
        return logits, hidden, cache
