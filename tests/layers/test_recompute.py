"""Gradient checkpointing (`recompute=True`): the same outputs and gradients as keeping the
activations, for a block, an encoder-decoder's decoder block (whose gradient reaches the
encoder's outputs), and under a strategy's compiled train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_floats, random_ids
from tfllm.layers import DecoderBlock, TransformerBlock
from tfllm.models import CausalLM, GPTBackbone

OPTIONS = dict(num_heads=2, hidden_dim=8, intermediate_dim=16)


def outputs_and_gradients(block, inputs, upstream):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = block(*inputs, training=True)
    return [out.numpy()] + [g.numpy() for g in tape.gradient(out, [*inputs, *block.trainable_weights], upstream)]


@pytest.mark.parametrize("make", [TransformerBlock, DecoderBlock], ids=["block", "decoder_block"])
def test_a_recomputed_block_has_the_outputs_and_gradients_of_one_that_keeps_its_activations(make):
    x = tf.constant(random_floats((2, 5, 8)))
    inputs = [x] if make is TransformerBlock else [x, tf.constant(random_floats((2, 3, 8), seed=1))]
    upstream = random_floats((2, 5, 8), seed=2)
    results = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        block = make(recompute=recompute, **OPTIONS)
        block(*inputs)
        results.append(outputs_and_gradients(block, inputs, upstream))
    assert len(results[0]) == len(results[1]) > 3
    for kept, recomputed in zip(*results):
        np.testing.assert_allclose(recomputed, kept, atol=1e-6)
    assert np.abs(results[0][-1]).max() > 0 and (make is TransformerBlock or np.abs(results[0][2]).max() > 0)


def test_a_recomputing_model_trains_like_one_that_does_not():
    ids = random_ids((4, 7), 20)
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((4, 6), "int32")}
    weights = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        model = CausalLM(GPTBackbone(vocabulary_size=20, num_layers=2, max_sequence_length=6, recompute=recompute,
                                     **OPTIONS))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="auto")
        model.fit(x, ids[:, 1:], epochs=3, verbose=0)
        weights.append([w.numpy() for w in model.weights])
    for kept, recomputed in zip(*weights):
        np.testing.assert_allclose(recomputed, kept, atol=1e-5)


def test_recompute_refuses_dropout():
    with pytest.raises(ValueError, match="recompute needs dropout=0"):
        TransformerBlock(recompute=True, dropout=0.1, **OPTIONS)
