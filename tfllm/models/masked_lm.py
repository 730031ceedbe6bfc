"""Masked-token prediction task model around a bidirectional `GPTBackbone`."""

import keras
from keras import ops

from tfllm.layers.initializers import clone_initializer
from tfllm.models.task_model import TaskModel, backbone_inputs


class _MaskedLMHead(keras.layers.Layer):
    """`Dense(hidden_dim)` -> GELU -> LayerNorm -> tied-embedding logits + bias.

    The BERT / KerasHub `MaskedLMHead`. It holds the backbone's token
    embedding (as KerasHub's does) only to call its `logits`; Keras lists each
    variable once, under the backbone that created it.

    Args:
        token_embedding: the backbone's `TokenEmbedding`.
        layer_norm_epsilon: float.
        kernel_initializer: initializer of the dense kernel.
        **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(self, token_embedding, layer_norm_epsilon, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        hidden_dim = token_embedding.hidden_dim
        self.intermediate_dense = keras.layers.Dense(
            hidden_dim,
            activation="gelu",
            kernel_initializer=clone_initializer(kernel_initializer),
            dtype=self.dtype_policy,
            name="intermediate_dense",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    def build(self, inputs_shape):
        hidden_dim = self.token_embedding.hidden_dim
        # The dense always sees flattened (tokens, features) inputs.
        self.intermediate_dense.build((None, hidden_dim))
        self.layer_norm.build((None, hidden_dim))
        # Added to float32 logits, so read in float32 whatever the policy.
        self.output_bias = self.add_weight(
            name="output_bias",
            shape=(self.token_embedding.vocabulary_size,),
            initializer="zeros",
            autocast=False,
        )
        self.built = True

    def call(self, hidden):
        hidden_dim = self.token_embedding.hidden_dim
        shape = ops.shape(hidden)
        # (tokens, hidden_dim): one 2-D MatMul.
        x = self.intermediate_dense(ops.reshape(hidden, (-1, hidden_dim)))
        x = self.layer_norm(x)
        # (batch, seq, hidden_dim)
        x = ops.reshape(x, shape)
        return self.token_embedding.logits(x) + self.output_bias


@keras.saving.register_keras_serializable(package="tfllm")
class MaskedLM(TaskModel):
    """A masked language model: encoder hidden states to float32 token logits.

    The head transforms each hidden state (`Dense` -> GELU -> LayerNorm) and
    scores it against the backbone's token embedding (weight tying) plus a
    learned bias per token id, as BERT. Train with Keras's own `fit`: `x` is a
    dict with `"token_ids"` (some replaced by the mask id), `"padding_mask"`
    and optionally `"segment_ids"`; `y` holds the original token ids and
    `sample_weight` is 1 on the masked positions only, so the loss and the
    `"accuracy"` metric count masked tokens alone.

    Args:
        backbone: a `GPTBackbone` built with `causal=False`.
        **kwargs: base model arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict `{"token_ids", "padding_mask"}` (and optionally
            `"segment_ids"`) of int tensors of shape `(batch, seq)`, or an int
            tensor of token ids in which every position is real.
        training: bool. Enables dropout.

    Returns:
        float32 logits of shape `(batch, seq, vocabulary_size)`.

    Example:
    ```python
    backbone = GPTBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=64, max_sequence_length=32, causal=False,
    )
    model = MaskedLM(backbone)
    model.compile()
    tokens = np.random.randint(4, 100, size=(8, 16))
    masked = np.random.rand(8, 16) < 0.15
    x = {"token_ids": np.where(masked, 3, tokens), "padding_mask": np.ones((8, 16))}
    model.fit(x, tokens, sample_weight=masked.astype("float32"), epochs=1)
    ```
    """

    def __init__(self, backbone, **kwargs):
        if getattr(backbone, "causal", False):
            raise ValueError(
                "MaskedLM needs a bidirectional backbone: build it with "
                "causal=False. Received: a backbone with causal=True."
            )
        super().__init__(**kwargs)
        # The backbone is tracked first, so its variables lead `self.weights`
        # and its checkpoints restore as a prefix.
        self.backbone = backbone
        self.head = _MaskedLMHead(
            token_embedding=backbone.token_embedding,
            layer_norm_epsilon=getattr(backbone, "norm_epsilon", 1e-5),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=backbone.dtype_policy,
            name="masked_lm_head",
        )
        self.head.build((None, None, backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.backbone(backbone_inputs(inputs), training=training)
        return self.head(hidden)
