"""Whether the function being traced is compiled by XLA: layers and samplers pick the ops each mode
runs fastest."""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util


def compiling_with_xla():
    """True while tracing a function that XLA compiles (`tf.function(jit_compile=True)`, also
    as a nested call): `tf.function` marks its graph with an XLA control-flow context."""
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
