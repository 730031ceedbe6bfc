"""Int8 weights with one float scale per channel, multiplied without a float copy being kept.

Weight-only quantization (the activations stay in the compute dtype), as QLoRA does for its
frozen base: `w ~ q * scale`, `q` int8 in [-127, 127], `scale = max|w| / 127` per output
channel. The product dequantizes `q` inside the matmul and again inside its gradient, so
backpropagation through a frozen int8 matrix keeps no float copy of it alive between the two.
"""

import tensorflow as tf

INT8_MAX = 127.0


def quantize(matrix, axis):
    """`(q, scale)`: int8 `q` and float32 `scale` with `matrix ~ q * scale`, one scale per slice
    along `axis` (the axis reduced over: 0 for a `(in, out)` kernel, 1 for `(vocab, dim)` rows)."""
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    largest = tf.reduce_max(tf.abs(matrix), axis=axis, keepdims=True)
    # An all-zero channel gets scale 1 (its q is 0 either way), not a division by zero.
    scale = tf.where(largest > 0, largest / INT8_MAX, tf.ones_like(largest))
    q = tf.cast(tf.clip_by_value(tf.round(matrix / scale), -INT8_MAX, INT8_MAX), tf.int8)
    return q, tf.squeeze(scale, axis)


def dequantize(q, scale, axis):
    """The float32 matrix `q * scale` (the inverse of `quantize` up to rounding)."""
    return tf.cast(q, tf.float32) * tf.expand_dims(tf.cast(scale, tf.float32), axis)


def int8_matmul(x, q, scale, transpose_b=False):
    """`x @ (q * scale)` for a 2-D `x`, with `scale` over the product's columns: `q` is
    `(in, out)`, or `(out, in)` with `transpose_b`. Differentiable in `x` only."""
    q = tf.convert_to_tensor(q)
    scale = tf.convert_to_tensor(scale)

    def weights(operand):
        # Made once `operand` exists: a graph runs an op as soon as its inputs are ready, and
        # without this every layer's float copy would be made at the start of the step and held
        # until its matmul ran.
        with tf.control_dependencies([operand]):
            return tf.cast(q, operand.dtype)

    # The scale multiplies the product's columns (and the gradient's, before the transposed
    # product), never the weights: a decoding step's product (a few rows) is far smaller than the
    # matrix, and XLA then reads the int8 matrix straight into the matmul instead of writing a
    # scaled float copy of it first.
    @tf.custom_gradient
    def product(x):
        def gradient(dy):
            # Dequantized again here rather than saved from the forward pass.
            return tf.matmul(dy * tf.cast(scale, dy.dtype), weights(dy), transpose_b=not transpose_b)

        return tf.matmul(x, weights(x), transpose_b=transpose_b) * tf.cast(scale, x.dtype), gradient

    return product(x)
