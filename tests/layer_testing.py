"""Checks every layer and model needs, shared by the layer and model tests.

Each helper asserts one property with numbers: output shape, weight count,
`get_config` round trip, that one gradient step lowers a loss, and that the
layer runs under `mixed_bfloat16` (the global policy is restored afterwards,
whatever happens).
"""

import keras
import numpy as np
import tensorflow as tf

from tfllm.precision import global_policy


def random_floats(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def random_ids(shape, vocabulary_size, seed=0, low=1):
    return np.random.default_rng(seed).integers(low, vocabulary_size, size=shape).astype("int32")


def assert_output_shape(layer, inputs, expected_shape, **call_kwargs):
    outputs = layer(inputs, **call_kwargs)
    assert tuple(outputs.shape) == tuple(expected_shape), (
        f"expected output shape {expected_shape}, got {tuple(outputs.shape)}"
    )
    return outputs


def assert_weight_count(layer, trainable, non_trainable=0):
    assert len(layer.trainable_weights) == trainable, [w.path for w in layer.trainable_weights]
    assert len(layer.non_trainable_weights) == non_trainable, [
        w.path for w in layer.non_trainable_weights
    ]


def assert_config_round_trip(layer):
    """`from_config(get_config())` rebuilds a layer with an identical config."""
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def assert_training_step_lowers_loss(layer, inputs, learning_rate=1e-2, **call_kwargs):
    """One SGD step on a mean squared error to a fixed target lowers that error."""
    outputs = layer(inputs, **call_kwargs)
    target = tf.constant(random_floats(tuple(outputs.shape), seed=1))

    def loss_fn():
        return tf.reduce_mean(tf.square(tf.cast(layer(inputs, **call_kwargs), "float32") - target))

    with tf.GradientTape() as tape:
        loss_before = loss_fn()
    variables = layer.trainable_variables
    gradients = tape.gradient(loss_before, variables)
    assert all(g is not None for g in gradients), [
        v.path for v, g in zip(variables, gradients) if g is None
    ]
    for variable, gradient in zip(variables, gradients):
        variable.assign_sub(learning_rate * tf.convert_to_tensor(gradient))
    loss_after = loss_fn()
    assert float(loss_after) < float(loss_before), (float(loss_before), float(loss_after))


def assert_runs_in_mixed_bfloat16(make_layer, inputs, expected_dtype="bfloat16", **call_kwargs):
    """Built under `mixed_bfloat16`: float32 variables, finite outputs of `expected_dtype`."""
    with global_policy("mixed_bfloat16"):
        layer = make_layer()
        outputs = layer(inputs, **call_kwargs)
        assert all(v.dtype == "float32" for v in layer.weights), [
            (v.path, v.dtype) for v in layer.weights
        ]
        assert outputs.dtype == expected_dtype, outputs.dtype
        assert np.all(np.isfinite(tf.cast(outputs, "float32").numpy()))
    return outputs


# === NumPy references (float64, written from the papers' formulas) ===


def reference_layer_norm(x, gamma, beta, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def reference_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def reference_rotary(x, positions, max_wavelength=10000):
    """RoPE as complex rotation of pairs (x[i], x[i + dim/2]); x is (batch, seq, heads, dim)."""
    half = x.shape[-1] // 2
    frequencies = max_wavelength ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = np.asarray(positions, "float64")[:, None] * frequencies  # (seq, half)
    pairs = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * angles)[None, :, None, :]
    return np.concatenate([pairs.real, pairs.imag], axis=-1)


def reference_attention(
    x, weights, num_heads, padding_mask=None, segment_ids=None, rotary=False, num_key_value_heads=None,
    max_wavelength=10000,
):
    """Causal multi-head attention; `weights` = [qkv_kernel, qkv_bias, out_kernel, out_bias]
    (or the two kernels alone) with the qkv output laid out as (heads + 2 x key-value heads,
    head_dim): query heads, key heads, value heads. Query head i reads key-value head
    i // (heads / key-value heads)."""
    if len(weights) == 2:
        weights = [weights[0], 0.0, weights[1], 0.0]
    qkv_kernel, qkv_bias, output_kernel, output_bias = weights
    kv_heads = num_key_value_heads or num_heads
    batch, seq, hidden = x.shape
    head_dim = hidden // num_heads
    qkv = (x @ qkv_kernel + qkv_bias).reshape(batch, seq, num_heads + 2 * kv_heads, head_dim)
    # (batch, seq, heads, dim)
    query, key, value = np.split(qkv, [num_heads, num_heads + kv_heads], axis=2)
    if rotary:
        query = reference_rotary(query, np.arange(seq), max_wavelength)
        key = reference_rotary(key, np.arange(seq), max_wavelength)
    key = np.repeat(key, num_heads // kv_heads, axis=2)
    value = np.repeat(value, num_heads // kv_heads, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim)
    allowed = np.tril(np.ones((seq, seq), bool))[None, None]
    if padding_mask is not None:
        allowed = allowed & np.asarray(padding_mask, bool)[:, None, None, :]
    if segment_ids is not None:
        segment_ids = np.asarray(segment_ids)
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    scores = np.where(allowed, scores, -1e9)
    scores = scores - scores.max(-1, keepdims=True)
    probabilities = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probabilities, value).reshape(batch, seq, hidden)
    return out @ output_kernel + output_bias


def reference_block(x, block, padding_mask=None, rotary=False):
    """Pre-norm block with the weights of a built `TransformerBlock`."""
    weights = lambda layer: [np.asarray(w, "float64") for w in layer.get_weights()]  # noqa: E731
    attention = block.self_attention
    epsilon = block.layer_norm_epsilon
    normed = reference_layer_norm(x, *weights(block.self_attention_layer_norm), epsilon)
    x = x + reference_attention(
        normed,
        weights(attention.query_key_value_dense) + weights(attention.output_dense),
        attention.num_heads,
        padding_mask=padding_mask,
        rotary=rotary,
    )
    normed = reference_layer_norm(x, *weights(block.feedforward_layer_norm), epsilon)
    intermediate_kernel, intermediate_bias = weights(block.feedforward_intermediate_dense)
    output_kernel, output_bias = weights(block.feedforward_output_dense)
    hidden = reference_gelu_tanh(normed @ intermediate_kernel + intermediate_bias)
    return x + hidden @ output_kernel + output_bias
