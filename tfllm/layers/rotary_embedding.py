"""Rotary position embedding (RoPE)."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="tfllm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotates feature pairs by an angle proportional to the token position.

    Feature `i` of the first half is paired with feature `i` of the second half
    (the GPT-NeoX / LLaMA layout) and the pair is rotated by
    `position * max_wavelength ** (-2 i / dim)`. Applied to queries and keys,
    the attention score then depends only on the distance between positions.
    The layer has no weights; angles are computed in float32 and the result is
    returned in the input's dtype.

    Args:
        max_wavelength: float. The longest wavelength of the rotation
            frequencies. Defaults to `10000`.
        sequence_axis: int. The axis of `inputs` that holds positions. The last
            axis holds features; every other axis is broadcast over.
            Defaults to `1`, i.e. inputs of shape `(batch, seq, ..., dim)`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor whose last axis (the feature axis) has even size.
        start_index: int or scalar int tensor. Position of the first element
            along `sequence_axis`; cached decoding passes the cache index so a
            new token is rotated by its true position. Defaults to `0`.

    Example:
    ```python
    rotary = RotaryEmbedding(sequence_axis=1)
    query = np.random.rand(2, 8, 4, 16).astype("float32")  # (batch, seq, heads, dim)
    rotated = rotary(query)  # same shape
    next_token = rotary(query[:, :1], start_index=8)  # rotated as position 8
    ```
    """

    def __init__(self, max_wavelength=10000, sequence_axis=1, **kwargs):
        super().__init__(**kwargs)
        if max_wavelength <= 0:
            raise ValueError(
                "max_wavelength must be positive. "
                f"Received: max_wavelength={max_wavelength}"
            )
        self.max_wavelength = max_wavelength
        self.sequence_axis = sequence_axis

    def build(self, inputs_shape):
        feature_dim = inputs_shape[-1]
        if feature_dim is None or feature_dim % 2 != 0:
            raise ValueError(
                "The last axis of the input to RotaryEmbedding must have a "
                f"known, even size. Received: inputs_shape={inputs_shape}"
            )
        self.built = True

    def call(self, inputs, start_index=0):
        rank = len(inputs.shape)
        sequence_axis = self.sequence_axis % rank
        feature_dim = inputs.shape[-1]
        # The frequencies are constants of the graph, folded at trace time.
        exponents = np.arange(0, feature_dim, 2, dtype="float64") / feature_dim
        inverse_frequencies = (1.0 / self.max_wavelength**exponents).astype("float32")

        sequence_length = ops.shape(inputs)[sequence_axis]
        positions = ops.arange(sequence_length, dtype="float32")
        positions = positions + ops.cast(start_index, "float32")
        # (seq, dim / 2)
        angles = ops.expand_dims(positions, 1) * inverse_frequencies
        # (seq, dim): both halves of a pair share one angle.
        angles = ops.concatenate([angles, angles], axis=-1)
        broadcast_shape = [1] * rank
        broadcast_shape[sequence_axis] = -1
        broadcast_shape[-1] = feature_dim
        # (1, ..., seq, ..., dim)
        cos = ops.reshape(ops.cast(ops.cos(angles), inputs.dtype), broadcast_shape)
        sin = ops.reshape(ops.cast(ops.sin(angles), inputs.dtype), broadcast_shape)

        first_half, second_half = ops.split(inputs, 2, axis=-1)
        rotated_half = ops.concatenate([-second_half, first_half], axis=-1)
        return inputs * cos + rotated_half * sin

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "sequence_axis": self.sequence_axis,
            }
        )
        return config
