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
        llama3_scaling: `None` or `(factor, low_frequency_factor,
            high_frequency_factor, original_max_position)`: Llama 3.1's
            stretch of the low frequencies for a longer context. Frequencies
            whose wavelength exceeds `original_max_position /
            low_frequency_factor` are divided by `factor`, those whose
            wavelength is below `original_max_position / high_frequency_factor`
            are kept, and those between are interpolated. Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor whose last axis (the feature axis) has even size.
        start_index: int or scalar int tensor. Position of the first element
            along `sequence_axis`; cached decoding passes the cache index so a
            new token is rotated by its true position. Defaults to `0`.
        positions: optional int tensor, the position of every element, used
            instead of `start_index` so that positions can restart inside a
            row (packed documents). Its shape is the input's shape up to and
            including `sequence_axis`, with size 1 on axes to broadcast over:
            `(batch, seq)` for the default `sequence_axis=1`.

    Example:
    ```python
    rotary = RotaryEmbedding(sequence_axis=1)
    query = np.random.rand(2, 8, 4, 16).astype("float32")  # (batch, seq, heads, dim)
    rotated = rotary(query)  # same shape
    next_token = rotary(query[:, :1], start_index=8)  # rotated as position 8
    restarted = rotary(query, positions=np.array([[0, 1, 2, 0, 1, 2, 3, 4]] * 2))
    ```
    """

    def __init__(self, max_wavelength=10000, sequence_axis=1, llama3_scaling=None, **kwargs):
        super().__init__(**kwargs)
        if max_wavelength <= 0:
            raise ValueError(
                "max_wavelength must be positive. "
                f"Received: max_wavelength={max_wavelength}"
            )
        self.max_wavelength = max_wavelength
        self.sequence_axis = sequence_axis
        self.llama3_scaling = None if llama3_scaling is None else tuple(float(v) for v in llama3_scaling)

    def build(self, inputs_shape):
        feature_dim = inputs_shape[-1]
        if feature_dim is None or feature_dim % 2 != 0:
            raise ValueError(
                "The last axis of the input to RotaryEmbedding must have a "
                f"known, even size. Received: inputs_shape={inputs_shape}"
            )
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        rank = len(inputs.shape)
        sequence_axis = self.sequence_axis % rank
        feature_dim = inputs.shape[-1]
        # The frequencies are constants of the graph, folded at trace time.
        exponents = np.arange(0, feature_dim, 2, dtype="float64") / feature_dim
        inverse_frequencies = 1.0 / self.max_wavelength**exponents
        if self.llama3_scaling is not None:
            inverse_frequencies = llama3_frequencies(inverse_frequencies, *self.llama3_scaling)
        inverse_frequencies = inverse_frequencies.astype("float32")

        if positions is None:
            sequence_length = ops.shape(inputs)[sequence_axis]
            positions = ops.arange(sequence_length, dtype="float32")
            positions = positions + ops.cast(start_index, "float32")
            # (1, ..., seq): a position axis alone, broadcast over every other axis.
            positions = ops.reshape(positions, [1] * sequence_axis + [-1])
        elif len(positions.shape) != sequence_axis + 1:
            raise ValueError(
                "positions must have one axis per input axis up to and including "
                f"sequence_axis. Received: positions.shape={positions.shape}, "
                f"inputs.shape={inputs.shape}, sequence_axis={self.sequence_axis}"
            )
        # (..., seq, dim / 2)
        angles = ops.expand_dims(ops.cast(positions, "float32"), -1) * inverse_frequencies
        # (..., seq, dim): both halves of a pair share one angle.
        angles = ops.concatenate([angles, angles], axis=-1)
        # (..., seq, 1, ..., 1, dim): broadcast over the axes between positions and features.
        for _ in range(rank - sequence_axis - 2):
            angles = ops.expand_dims(angles, -2)
        cos = ops.cast(ops.cos(angles), inputs.dtype)
        sin = ops.cast(ops.sin(angles), inputs.dtype)

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
                "llama3_scaling": self.llama3_scaling,
            }
        )
        return config


def llama3_frequencies(inverse_frequencies, factor, low_frequency_factor, high_frequency_factor,
                       original_max_position):
    """Llama 3.1's rotary frequencies (float64 in and out): low frequencies divided by `factor`,
    high ones kept, a smooth blend between."""
    wavelengths = 2 * np.pi / inverse_frequencies
    low_frequency_wavelength = original_max_position / low_frequency_factor
    high_frequency_wavelength = original_max_position / high_frequency_factor
    scaled = np.where(wavelengths > low_frequency_wavelength, inverse_frequencies / factor, inverse_frequencies)
    smooth = (original_max_position / wavelengths - low_frequency_factor) / (high_frequency_factor - low_frequency_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelengths >= high_frequency_wavelength) & (wavelengths <= low_frequency_wavelength)
    return np.where(medium, blended, scaled)
