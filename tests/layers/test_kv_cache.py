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


def test_graph_mode_writes_with_an_op_that_runs_without_xla_and_xla_with_dynamic_update_slice():
    args = (tf.zeros((BATCH, HEADS, LENGTH, HEAD_DIM)), tf.ones((BATCH, HEADS, 1, HEAD_DIM)), tf.constant(2))
    graph_ops = ops_of(tf.function(kv_cache.write), *args)
    assert "TensorStridedSliceUpdate" in graph_ops and not any(op.startswith("Xla") for op in graph_ops)
    # A function called from inside a compiled one is compiled too.
    outer = tf.function(lambda *a: tf.function(kv_cache.write)(*a), jit_compile=True)
    assert "XlaDynamicUpdateSlice" in ops_of(outer, *args)


def test_a_model_cache_is_its_theoretical_size():
    layers, heads, key_value_heads, hidden = 3, 4, 2, 32
    backbone = GPTBackbone(vocabulary_size=50, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                           intermediate_dim=64, max_sequence_length=64, num_key_value_heads=key_value_heads,
                           position="rope", norm="rms", mlp="swiglu", use_bias=False)
    cache = CausalLM(backbone).build_cache(batch_size=5, max_length=48)
    theoretical = 2 * layers * key_value_heads * (hidden // heads) * 48 * 5 * 4
    assert sum(int(np.prod(entries.shape)) * entries.dtype.size for entries in tf.nest.flatten(cache)) == theoretical
