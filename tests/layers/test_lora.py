"""Low-rank adapters and int8 weights on one projection and on the token embedding, against
NumPy: the adapted output, the merge that must not change it, and int8's gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_floats, random_ids
from tfllm.layers import int8
from tfllm.layers.lora import AdaptableDense
from tfllm.layers.token_embedding import TokenEmbedding

IN, OUT, RANK, ALPHA = 6, 12, 2, 3.0
# A fused projection's parts: the adapters of the first and last leave the middle alone.
PARTS = {"query": (0, 4), "key": (4, 8), "value": (8, 12)}


def adapted_dense(targets=("query", "value"), seed=0):
    keras.utils.set_random_seed(seed)
    dense = AdaptableDense(OUT, adapter_parts=PARTS)
    dense.build((None, IN))
    dense.bias.assign(random_floats((OUT,), seed=1))
    assert dense.add_adapters(targets, RANK, ALPHA) == len(targets)
    for adapter in dense.adapters:
        adapter.b.assign(random_floats(adapter.b.shape, seed=adapter.start + 2))
    return dense


def reference_output(dense, x):
    """x @ W + b, plus (x @ A) @ B * alpha / rank on each adapted part's columns (NumPy)."""
    out = x @ dense.kernel.numpy() + dense.bias.numpy()
    for adapter in dense.adapters:
        out[:, adapter.start:adapter.stop] += x @ adapter.a.numpy() @ adapter.b.numpy() * ALPHA / RANK
    return out


def test_a_new_adapter_changes_nothing_and_only_adapters_train():
    dense = AdaptableDense(OUT, adapter_parts=PARTS)
    dense.build((None, IN))
    x = random_floats((5, IN))
    before = dense(x).numpy()
    dense.add_adapters(("value", "mlp"), RANK, ALPHA)  # "mlp" is not one of this layer's parts
    np.testing.assert_array_equal(dense(x).numpy(), before)
    assert [w.name for w in dense.trainable_weights] == ["lora_value_a", "lora_value_b"]
    assert {w.name for w in dense.non_trainable_weights} == {"kernel", "bias"}


def test_adapters_add_their_low_rank_product_to_their_parts_columns():
    dense = adapted_dense()
    x = random_floats((5, IN), seed=3)
    got = dense(x).numpy()
    np.testing.assert_allclose(got, reference_output(dense, x), atol=1e-5)
    # The key's columns are the frozen projection's alone.
    np.testing.assert_allclose(got[:, 4:8], (x @ dense.kernel.numpy() + dense.bias.numpy())[:, 4:8], atol=1e-6)


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "int8"])
def test_merging_folds_the_adapters_into_the_kernel_without_changing_the_output(quantized):
    dense = adapted_dense(targets=("query", "key", "value"))
    if quantized:
        dense.quantize_int8()
    x = random_floats((5, IN), seed=4)
    unmerged = dense(x).numpy()
    dense.merge_adapters()
    assert not dense.adapters and [w.name for w in dense.weights] in (["kernel", "bias"], ["bias", "kernel"])
    np.testing.assert_allclose(dense(x).numpy(), unmerged, atol=1e-5)


def test_dropout_on_the_adapters_input_only_while_training():
    keras.utils.set_random_seed(0)
    dense = AdaptableDense(OUT, adapter_parts={"mlp": None})
    dense.build((None, IN))
    dense.add_adapters(("mlp",), RANK, ALPHA, dropout=0.5)
    dense.adapters[0].b.assign(random_floats((RANK, OUT), seed=5))
    x = random_floats((64, IN), seed=6)
    np.testing.assert_allclose(dense(x, training=False).numpy(), reference_output(dense, x), atol=1e-5)
    # Training: dropout zeroes some of the adapter's inputs, and the frozen path's none.
    a, b = dense.adapters[0].a.numpy(), dense.adapters[0].b.numpy()
    adapter_part = dense(x, training=True).numpy() - (x @ dense.kernel.numpy() + dense.bias.numpy())
    assert not np.allclose(adapter_part, x @ a @ b * ALPHA / RANK, atol=1e-3)


def test_int8_keeps_each_weight_within_half_a_step_of_its_row():
    matrix = random_floats((OUT, IN), seed=7)
    q, scale = int8.quantize(matrix)
    assert q.dtype == tf.int8 and scale.shape == (OUT,)
    np.testing.assert_allclose(scale.numpy(), np.abs(matrix).max(axis=1) / 127, rtol=1e-6)
    error = np.abs(int8.dequantize(q, scale).numpy() - matrix)
    assert (error <= scale.numpy()[:, None] / 2 + 1e-7).all()


def int8_operands(rows):
    q, scale = int8.quantize(random_floats((OUT, IN), seed=8))
    return q, scale, tf.constant(random_floats((rows, IN), seed=9)), int8.dequantize(q, scale).numpy()


def test_int8_matmul_and_its_gradient_equal_those_of_the_dequantized_matrix():
    q, scale, x, dense = int8_operands(5)
    upstream = random_floats((5, OUT), seed=10)
    with tf.GradientTape() as tape:
        tape.watch(x)
        got = int8.int8_matmul(x, q, scale)
    np.testing.assert_allclose(got.numpy(), x.numpy() @ dense.T, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(got, x, upstream).numpy(), upstream @ dense, atol=1e-5)


# Under XLA one row multiplies the int8 matrix and more rows its float copy, chosen from the
# static row count or, when tracing leaves it unknown, by a branch XLA resolves: each way must give
# the product of every row.
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("known_rows", [True, False], ids=["static_rows", "unknown_rows"])
def test_under_xla_the_int8_product_of_each_row_count_equals_the_dequantized_one(rows, known_rows):
    q, scale, x, dense = int8_operands(rows)
    signature = [tf.TensorSpec([rows if known_rows else None, IN], tf.float32)]
    product = tf.function(lambda x: int8.int8_matmul(x, q, scale), input_signature=signature, jit_compile=True)
    np.testing.assert_allclose(product(x).numpy(), x.numpy() @ dense.T, atol=1e-5)


def test_a_decoding_loop_under_xla_converts_no_int8_matrix_to_a_float_copy_before_it():
    """Batch-1 decoding pays with int8 only if each step reads the int8 bytes: XLA hoists a
    conversion that does not change inside a loop out of it, which would turn every int8 matrix
    into a float32 copy held for the whole loop, read at every step. Its optimised program must
    convert nothing of the matrix's shape outside the loop, and still compute the same product."""
    q, scale, x, dense = int8_operands(1)

    @tf.function(jit_compile=True)
    def steps(x):
        return tf.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, tf.tanh(int8.int8_matmul(x, q, scale)[:, :IN])),
                             (0, x))[1]

    want = x.numpy()
    for _ in range(3):
        want = np.tanh((want @ dense.T)[:, :IN])
    np.testing.assert_allclose(steps(x).numpy(), want, atol=1e-5)
    program = steps.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    entry = program[program.index("\nENTRY"):]
    entry = entry[: entry.index("\n}")]
    assert f"s8[{OUT},{IN}]" in entry and f"f32[{OUT},{IN}]" not in entry, entry


VOCAB, DIM = 10, 4


@pytest.mark.parametrize("tie_weights", [True, False], ids=["tied", "untied"])
def test_the_embedding_adapter_updates_the_lookup_and_a_tied_head_alike(tie_weights):
    keras.utils.set_random_seed(0)
    embedding = TokenEmbedding(VOCAB, DIM, tie_weights=tie_weights)
    embedding.build()
    embedding.add_adapters(("embedding",), RANK, ALPHA)
    embedding.adapter.a.assign(random_floats((VOCAB, RANK), seed=11))
    update = embedding.adapter.a.numpy() @ embedding.adapter.b.numpy() * ALPHA / RANK
    table = embedding.embeddings.numpy() + update
    head = table if tie_weights else embedding.output_embeddings.numpy()
    ids = random_ids((2, 3), VOCAB)
    hidden = random_floats((2, 3, DIM), seed=12)
    np.testing.assert_allclose(embedding(ids).numpy(), table[ids], atol=1e-5)
    np.testing.assert_allclose(embedding.logits(hidden).numpy(), hidden @ head.T, atol=1e-4)
    lookup, logits = embedding(ids).numpy(), embedding.logits(hidden).numpy()
    embedding.merge_adapters()
    assert embedding.adapter is None and all(w.name.startswith(("embeddings", "output")) for w in embedding.weights)
    np.testing.assert_allclose(embedding(ids).numpy(), lookup, atol=1e-5)
    np.testing.assert_allclose(embedding.logits(hidden).numpy(), logits, atol=1e-5)


def test_an_int8_embedding_looks_up_and_scores_with_its_dequantized_rows():
    embedding = TokenEmbedding(VOCAB, DIM)
    embedding.build()
    ids, hidden = random_ids((2, 3), VOCAB), random_floats((2, 3, DIM), seed=13)
    embedding.quantize_int8()
    assert {w.dtype for w in embedding.weights} == {"int8", "float32"}
    table = int8.dequantize(embedding.embeddings_int8, embedding.embeddings_scale).numpy()
    np.testing.assert_allclose(embedding(ids).numpy(), table[ids], atol=1e-6)
    np.testing.assert_allclose(embedding.logits(hidden).numpy(), hidden @ table.T, atol=1e-5)
