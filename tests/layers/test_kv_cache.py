"""`kv_cache`: writes land at the step index in every compilation mode, in place, and a model's
cache is exactly its theoretical size."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.layers import kv_cache
from tfllm.models import CausalLM, GPTBackbone

BATCH, HEADS, LENGTH, HEAD_DIM = 2, 3, 7, 4


def ops_of(function, *args):
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_new_entries_are_written_at_the_index_and_nowhere_else(mode):
    cache = tf.constant(np.arange(BATCH * HEADS * LENGTH * HEAD_DIM, dtype="float32").reshape(BATCH, HEADS, LENGTH, HEAD_DIM))
    new = -tf.ones((BATCH, HEADS, 2, HEAD_DIM))
    write = kv_cache.write if mode == "eager" else tf.function(kv_cache.write, jit_compile=mode == "xla")
    written = write(cache, new, tf.constant(3)).numpy()
    expected = cache.numpy().copy()
    expected[:, :, 3:5] = -1
    np.testing.assert_array_equal(written, expected)


def test_graph_mode_writes_with_an_op_that_runs_without_xla_and_xla_with_a_fused_rewrite():
    args = (tf.zeros((BATCH, HEADS, LENGTH, HEAD_DIM)), tf.ones((BATCH, HEADS, 1, HEAD_DIM)), tf.constant(2))
    graph_ops = ops_of(tf.function(kv_cache.write), *args)
    assert "TensorStridedSliceUpdate" in graph_ops and not any(op.startswith("Xla") for op in graph_ops)
    # A function called from inside a compiled one is compiled too, and takes the XLA path.
    outer = tf.function(lambda *a: tf.function(kv_cache.write)(*a), jit_compile=True)
    compiled_ops = ops_of(outer, *args)
    assert "Einsum" in compiled_ops and "TensorStridedSliceUpdate" not in compiled_ops


@pytest.mark.parametrize("new", [1, 3])
def test_a_compiled_write_at_a_changing_index_inside_a_loop_lands_there(new):
    """The decoding loop's index is a loop variable, not a constant XLA could specialize on."""

    @tf.function(jit_compile=True)
    def fill(cache):
        def body(index, cache):
            entries = tf.fill((BATCH, HEADS, new, HEAD_DIM), tf.cast(index + 1, tf.float32))
            return index + new, kv_cache.write(cache, entries, index)

        return tf.while_loop(lambda index, cache: index + new <= LENGTH - 1, body, (0, cache))[1]

    written = fill(tf.fill((BATCH, HEADS, LENGTH, HEAD_DIM), -7.0)).numpy()
    steps = (LENGTH - 1) // new
    expected = [float(new * (i // new) + 1) for i in range(steps * new)] + [-7.0] * (LENGTH - steps * new)
    np.testing.assert_array_equal(written[0, 0, :, 0], expected)
    assert (written == written[:1, :1, :, :1]).all()


def test_a_model_cache_is_its_theoretical_size():
    layers, heads, key_value_heads, hidden = 3, 4, 2, 32
    backbone = GPTBackbone(vocabulary_size=50, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                           intermediate_dim=64, max_sequence_length=64, num_key_value_heads=key_value_heads,
                           position="rope", norm="rms", mlp="swiglu", use_bias=False)
    cache = CausalLM(backbone).build_cache(batch_size=5, max_length=48)
    theoretical = 2 * layers * key_value_heads * (hidden // heads) * 48 * 5 * 4
    assert sum(int(np.prod(entries.shape)) * entries.dtype.size for entries in tf.nest.flatten(cache)) == theoretical
