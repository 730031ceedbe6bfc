"""Key/value caches for incremental decoding, written in place at the decoding step.

A layer's cache is a pair `(keys, values)` of tensors shaped
`(batch, num_key_value_heads, max_length, head_dim)`: the layout the attention matmuls read,
so a decoding step writes the new entries and reads the pair as it is, with no transpose,
stack or slice of the whole cache. A model's cache is a tuple of these pairs, one per layer.
"""

import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util


def empty_cache(batch_size, num_key_value_heads, max_length, head_dim, dtype):
    """A zero `(keys, values)` pair of shape `(batch, num_key_value_heads, max_length, head_dim)`."""
    shape = (batch_size, num_key_value_heads, max_length, head_dim)
    return ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype)


def write(cache, new_entries, index):
    """`cache` `(batch, heads, max_length, head_dim)` with `new_entries` `(batch, heads, new,
    head_dim)` written at positions `index .. index + new - 1`.

    The op is chosen per compilation mode, each the one that updates the buffer in place
    (measured on (8, 6, L, 64) float32 caches on a CPU, per write): under XLA,
    `dynamic_update_slice` (0.01 ms at L = 288; XLA aliases the loop buffer), while in graph
    mode the same op copies the whole cache (0.5 ms at L = 288, 10 ms at L = 2048) and
    `TensorStridedSliceUpdate` forwards its input buffer (0.08 and 0.2 ms). XLA cannot compile
    the latter with a begin index that changes per step.
    """
    new_entries = ops.cast(new_entries, cache.dtype)
    index = ops.cast(index, "int32")
    if _compiling_with_xla():
        return ops.slice_update(cache, (0, 0, index, 0), new_entries)
    shape = tf.shape(cache)
    begin = tf.stack([0, 0, index, 0])
    end = tf.stack([shape[0], shape[1], index + tf.shape(new_entries)[2], shape[3]])
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=cache, begin=begin, end=end, strides=tf.ones([4], tf.int32), value=new_entries
    )


def _compiling_with_xla():
    """True while tracing a function that XLA compiles (`tf.function(jit_compile=True)`, also
    as a nested call): `tf.function` marks its graph with an XLA control-flow context."""
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
