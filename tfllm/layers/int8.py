"""Int8 weights with one float scale per output channel, and their product with activations.

Weight-only quantization (the activations stay in the compute dtype), as QLoRA does for its
frozen base: `w ~ q * scale`, `q` int8 in [-127, 127], `scale = max|w| / 127` per output
channel. The product dequantizes `q` inside the matmul and again inside its gradient, so
backpropagation through a frozen int8 matrix keeps no float copy of it alive between the two.

A matrix is held as rows, one per output channel, `(out, in)` (the layout of an embedding table
and of a PyTorch `Linear`): XLA on a CPU multiplies one row of activations by such a matrix in
a loop that reads the int8 bytes straight from memory, about 3x faster than the float32 product
at GPT-2 124M shapes, where the `(in, out)` layout took 3.8x longer than float32
(bench/RESULTS.md, "Generation"). Batch-1 decoding is bound by reading the weights, so that is
where int8 pays. Under XLA a product of several rows uses a float copy instead, made once per
decoding loop (`_xla_product`).
"""

import tensorflow as tf

from tfllm.xla_context import compiling_with_xla

INT8_MAX = 127.0


def quantize(matrix):
    """`(q, scale)`: int8 `q` and float32 `scale` with `matrix ~ q * scale[:, None]`, one scale
    per row of the 2-D `matrix`."""
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    largest = tf.reduce_max(tf.abs(matrix), axis=1, keepdims=True)
    # An all-zero row gets scale 1 (its q is 0 either way), not a division by zero.
    scale = tf.where(largest > 0, largest / INT8_MAX, tf.ones_like(largest))
    q = tf.cast(tf.clip_by_value(tf.round(matrix / scale), -INT8_MAX, INT8_MAX), tf.int8)
    return q, tf.squeeze(scale, 1)


def dequantize(q, scale):
    """The float32 matrix `q * scale[:, None]` (the inverse of `quantize` up to rounding)."""
    return tf.cast(q, tf.float32) * tf.cast(scale, tf.float32)[:, None]


def int8_matmul(x, q, scale):
    """`x @ (q * scale[:, None])^T` for a 2-D `x`: `q` `(out, in)` int8, `scale` `(out,)`.
    Differentiable in `x` only."""
    q = tf.convert_to_tensor(q)
    scale = tf.convert_to_tensor(scale)

    def weights(operand):
        # Made once `operand` exists: a graph runs an op as soon as its inputs are ready, and
        # without this every layer's float copy would be made at the start of the step and held
        # until its matmul ran.
        with tf.control_dependencies([operand]):
            return tf.cast(q, operand.dtype)

    # Outside XLA the scale multiplies the product's columns (and the gradient's, before the
    # transposed product), never the weights: a product of a few rows is far smaller than the
    # matrix, and no scaled float copy of the matrix is written.
    @tf.custom_gradient
    def product(x):
        def gradient(dy):
            # Dequantized again here rather than saved from the forward pass.
            return tf.matmul(dy * tf.cast(scale, dy.dtype), weights(dy))

        if compiling_with_xla():
            return _xla_product(x, q, scale), gradient
        return tf.matmul(x, weights(x), transpose_b=True) * tf.cast(scale, x.dtype), gradient

    return product(x)


def _xla_product(x, q, scale):
    """`x @ (q * scale[:, None])^T` under XLA. One row reads the int8 matrix at every call. More
    rows multiply a float copy in the `(in, out)` layout, which XLA makes once per decoding loop,
    before it, and holds beside the int8 matrix while the loop runs: as fast as float32 weights
    (the product of several rows with the converted `(out, in)` matrix took 1.4x as long), so
    int8 pays at batch 1."""
    scale = tf.cast(scale, x.dtype)

    def one_row():
        return tf.matmul(x[:1], tf.cast(_read_at_every_call(q, x), x.dtype), transpose_b=True) * scale

    def all_rows():
        # A gather of every row, in order, keeps XLA from folding the transpose into the product,
        # which would leave the copy in the slow layout.
        copy = tf.transpose(tf.cast(q, x.dtype))
        return tf.matmul(x, tf.gather(copy, tf.range(tf.shape(copy)[0]))) * scale

    if x.shape[0] is not None:
        return one_row() if x.shape[0] == 1 else all_rows()
    # Traced for any batch size (a decoding function's signature), compiled for one: XLA keeps
    # the branch that applies.
    return tf.cond(tf.equal(tf.shape(x)[0], 1), one_row, all_rows)


def _read_at_every_call(q, x):
    """`q` itself, made to depend on `x`. A matrix that does not change inside a decoding loop
    has its conversion to float hoisted out of the loop by XLA: every int8 matrix would become a
    float32 copy before the loop, read at every step (4x the bytes of the int8 one). Adding a
    zero that XLA cannot prove is zero keeps the conversion inside the product: the lowest bit of
    `x`'s first value, shifted out (0 for every value, NaN included)."""
    first = tf.reshape(x[:1, :1], [])
    bits = tf.bitcast(first, {2: tf.int16, 4: tf.int32, 8: tf.int64}[x.dtype.size])
    zero = tf.bitwise.right_shift(tf.bitwise.bitwise_and(bits, 1), tf.ones_like(bits))
    return q + tf.cast(zero, tf.int8)
