"""Sequence classification task model around a `GPTBackbone`."""

import keras
import tensorflow as tf
from keras import ops

from tfllm.models.task_model import TaskModel, accuracy

POOLING_KINDS = ("auto", "first", "last")


@keras.saving.register_keras_serializable(package="tfllm")
class Classifier(TaskModel):
    """One label per sequence: a pooled hidden state to float32 class logits.

    The hidden state of one token stands for the sequence: the first one for
    an encoder (BERT reads its `[CLS]` position), the last real one for a
    causal backbone (the only position that has seen the whole row; rows are
    right-padded). A backbone built with `pooler=True` passes it through its
    pooler (`tanh(dense(.))`), as Hugging Face's `BertForSequenceClassification`
    does. It goes through dropout and `Dense(num_classes)`, computed in
    float32. Train with Keras's own `fit`: `x` is a dict with
    `"token_ids"` and `"padding_mask"`, `y` the class ids of shape `(batch,)`.

    Args:
        backbone: a `GPTBackbone`.
        num_classes: int. The number of classes.
        pooling: `"first"`, `"last"` or `"auto"` (`"first"` for a
            bidirectional backbone, `"last"` for a causal one).
            Defaults to `"auto"`.
        dropout: float. Dropout on the pooled hidden state. Defaults to `0.0`.
        **kwargs: base model arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict `{"token_ids", "padding_mask"}` of int tensors of shape
            `(batch, seq)`; `padding_mask` is 1 for real tokens.
        training: bool. Enables dropout.

    Returns:
        float32 logits of shape `(batch, num_classes)`.

    Example:
    ```python
    backbone = GPTBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=64, max_sequence_length=32,
    )
    model = Classifier(backbone, num_classes=3)  # pools the last real token
    model.compile()
    x = {"token_ids": np.random.randint(4, 100, size=(8, 16)),
         "padding_mask": np.ones((8, 16), "int32")}
    model.fit(x, np.random.randint(0, 3, size=(8,)), epochs=1)
    ```
    """

    def __init__(self, backbone, num_classes, pooling="auto", dropout=0.0, **kwargs):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}"
            )
        if pooling not in POOLING_KINDS:
            raise ValueError(
                f"pooling must be one of {POOLING_KINDS}. Received: pooling={pooling!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
        super().__init__(**kwargs)
        # The backbone is tracked first, so its variables lead `self.weights`.
        self.backbone = backbone
        if backbone.pooler:
            # Frozen under the heads that do not read it; this one does.
            backbone.pooler_dense.trainable = True
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        # Float32 whatever the policy: logits and loss stay in float32.
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype="float32",
            name="output_dense",
        )
        self.output_dense.build((None, backbone.hidden_dim))
        self.built = True

        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = dropout

    @property
    def pooled_position(self):
        """`"first"` or `"last"`: the token whose hidden state is classified."""
        return pooled_position(self.pooling, self.backbone.causal)

    def call(self, inputs, training=None):
        padding_mask = inputs["padding_mask"]
        hidden = self.backbone(
            {"token_ids": inputs["token_ids"], "padding_mask": padding_mask},
            training=training,
        )
        if self.pooled_position == "first":
            # (batch, hidden_dim)
            pooled = hidden[:, 0]
        else:
            # Rows are right-padded: the last real token sits at (real count - 1);
            # an empty row reads position 0 instead of index -1.
            last = ops.maximum(ops.sum(ops.cast(padding_mask, "int32"), axis=1) - 1, 0)
            # (batch, hidden_dim)
            pooled = tf.gather(hidden, last, batch_dims=1)
        if self.backbone.pooler:
            # (batch, hidden_dim)
            pooled = self.backbone.pooler_dense(pooled)
        if self.dropout > 0:
            pooled = self.output_dropout(pooled, training=training)
        return self.output_dense(pooled)

    def default_loss(self):
        """One label per sequence: cross-entropy on the class logits, averaged over the class
        weights (`sample_weight`, `train.class_weights`) so that the loss of a batch is the
        weighted mean however many examples of each class it holds."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    def default_metrics(self):
        # Class weights (`sample_weight`) shape the loss; accuracy counts every sequence once.
        return accuracy(), None

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
        }


def pooled_position(pooling, causal):
    """`"first"` or `"last"`: where a classifier with `pooling` over a backbone that attends
    causally (`causal`) or not reads its sequence. `"auto"` reads the last token of a causal
    backbone (the only one that has seen the whole row), the first of a bidirectional one; the
    data pipeline puts the end-of-text id there."""
    if pooling != "auto":
        return pooling
    return "last" if causal else "first"
