"""Losses the task models train with, beyond Keras's own."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfllm")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits against integer targets smoothed towards the uniform distribution.

    Each target keeps `1 - label_smoothing` of its probability and spreads `label_smoothing`
    evenly over the whole vocabulary (the target included), as `torch.nn.CrossEntropyLoss` and
    Hugging Face's `label_smoothing_factor` do: per token, `(1 - e) * -log p(target) +
    e * mean over ids of -log p(id)`. With `label_smoothing=0` it is sparse cross-entropy.

    Args:
        label_smoothing: float in [0, 1).
        reduction: as Keras losses; task models use `"mean_with_sample_weight"`.
        name: the loss's name.

    Example:
    ```python
    model.compile(loss=SmoothedSparseCrossentropy(0.1, reduction="mean_with_sample_weight"))
    ```
    """

    def __init__(self, label_smoothing, reduction="mean_with_sample_weight", name="smoothed_sparse_crossentropy"):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}")
        super().__init__(reduction=reduction, name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probabilities = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        targets = ops.expand_dims(ops.cast(y_true, "int32"), -1)
        negative_log_likelihood = -ops.squeeze(ops.take_along_axis(log_probabilities, targets, axis=-1), -1)
        uniform = -ops.mean(log_probabilities, axis=-1)
        return (1.0 - self.label_smoothing) * negative_log_likelihood + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
