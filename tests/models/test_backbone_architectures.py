"""Llama- and BERT-shaped backbones: the options reach every block, the head and the cache."""

import keras
import numpy as np
import tensorflow as tf

from tests.layer_testing import assert_config_round_trip, random_ids, reference_layer_norm
from tfllm.models import CausalLM, GPTBackbone

VOCAB, LAYERS, HEADS, KV_HEADS, HIDDEN, SEQ = 40, 2, 4, 2, 16, 12
LLAMA = dict(position="rope", rope_theta=500000.0, norm="rms", norm_epsilon=1e-6, mlp="swiglu",
             num_key_value_heads=KV_HEADS, use_bias=False, tie_embeddings=False)


def backbone(**options):
    return GPTBackbone(vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
                       intermediate_dim=24, max_sequence_length=SEQ, **options)


def test_a_llama_backbone_has_llama_weights_and_an_untied_head():
    model = backbone(**LLAMA)
    # Token embedding and its own head; per block 2 RMSNorm scales, the fused projection and the
    # output projection (no biases), gate, up and down; the final RMSNorm.
    assert len(model.trainable_weights) == 2 + LAYERS * (2 + 2 + 3) + 1
    block = model.transformer_layers[0]
    assert (block.norm, block.mlp, block.self_attention.num_key_value_heads) == ("rms", "swiglu", KV_HEADS)
    assert block.self_attention.max_wavelength == 500000.0
    lm = CausalLM(model)
    hidden = random_ids((2, 5), VOCAB)
    states = model({"token_ids": hidden, "padding_mask": np.ones_like(hidden)})
    head = model.token_embedding.output_embeddings.numpy()
    assert not np.allclose(head, model.token_embedding.embeddings.numpy())
    np.testing.assert_allclose(lm({"token_ids": hidden, "padding_mask": np.ones_like(hidden)}).numpy(),
                               states.numpy() @ head.T, atol=1e-5)


def test_a_llama_causal_lm_decodes_with_a_cache_of_its_key_value_heads():
    lm = CausalLM(backbone(**LLAMA))
    ids = random_ids((2, 7), VOCAB)
    full = lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}).numpy()
    cache = lm.build_cache(batch_size=2, max_length=SEQ)
    assert [tuple(entries.shape) for entries in tf.nest.flatten(cache)] == [(2, KV_HEADS, SEQ, HIDDEN // HEADS)] * 2 * LAYERS
    logits, _, cache = lm.call_with_cache(ids[:, :4], cache, 0)
    np.testing.assert_allclose(logits.numpy(), full[:, :4], atol=1e-4)
    for index in range(4, 7):
        logits, _, cache = lm.call_with_cache(ids[:, index : index + 1], cache, index)
        np.testing.assert_allclose(logits.numpy()[:, 0], full[:, index], atol=1e-4)


def test_a_post_norm_backbone_normalizes_the_embeddings_and_ends_on_a_block():
    model = backbone(causal=False, norm_first=False, mlp="gelu", norm_epsilon=1e-12)
    ids = random_ids((2, 6), VOCAB)
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    x = model.token_embedding.embeddings.numpy()[ids] + model.position_embedding.get_weights()[0][:6]
    x = reference_layer_norm(x, *model.layer_norm.get_weights(), epsilon=1e-12)
    for block in model.transformer_layers:
        x = block(x.astype("float32")).numpy()
    np.testing.assert_allclose(model(inputs).numpy(), x, atol=1e-5)


def test_the_options_round_trip_and_save(tmp_path):
    model = backbone(**LLAMA)
    rebuilt = assert_config_round_trip(model)
    assert {key: rebuilt.get_config()[key] for key in LLAMA} == LLAMA
    path = str(tmp_path / "llama.keras")
    model.save(path)
    ids = random_ids((1, 5), VOCAB)
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(keras.models.load_model(path)(inputs).numpy(), model(inputs).numpy())


def test_every_weight_starts_from_its_own_draw():
    # One initializer instance shared by every layer would start each block as a copy of the
    # first (Keras fixes an unseeded initializer's seed at creation).
    model = backbone(**LLAMA)
    first, second = model.transformer_layers
    for dense in (lambda block: block.self_attention.query_key_value_dense,
                  lambda block: block.feedforward_gate_dense, lambda block: block.feedforward_output_dense):
        assert not np.allclose(dense(first).kernel.numpy(), dense(second).kernel.numpy())
    assert not np.allclose(first.feedforward_gate_dense.kernel.numpy(),
                           first.feedforward_intermediate_dense.kernel.numpy())
