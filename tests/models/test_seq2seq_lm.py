"""`Seq2SeqLM`: cached decoding against the full pass, source padding, one encoder run per
generation, beam search against exhaustive search, and the encoder as a masked LM's backbone."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_ids
from tfllm import decoding
from tfllm.models import GPTBackbone, MaskedLM
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.models.seq2seq_lm import Seq2SeqLM
from tfllm.prompt_packer import PromptPacker
from tfllm.samplers import BeamSampler, GreedySampler

VOCAB, SOURCE, TARGET = 30, 9, 12
SHAPE = dict(num_heads=2, hidden_dim=16, intermediate_dim=32)


def make_model(position="learned", norm_first=True, vocabulary_size=VOCAB, **kwargs):
    backbone = Seq2SeqBackbone(vocabulary_size=vocabulary_size, num_encoder_layers=2, num_decoder_layers=2,
                               max_source_length=SOURCE, max_sequence_length=TARGET, position=position,
                               norm_first=norm_first, **SHAPE, **kwargs)
    return Seq2SeqLM(backbone)


def sources(batch=2, length=7, seed=0):
    token_ids = random_ids((batch, length), VOCAB, seed=seed)
    padding_mask = np.ones_like(token_ids)
    padding_mask[0, length - 2 :] = 0  # the first source is shorter
    token_ids[padding_mask == 0] = 0
    return token_ids, padding_mask


def full_logits(model, source_ids, source_mask, target_ids):
    return model({"encoder_token_ids": source_ids, "encoder_padding_mask": source_mask,
                  "decoder_token_ids": target_ids, "decoder_padding_mask": np.ones_like(target_ids)}).numpy()


@pytest.mark.parametrize("position, norm_first", [("learned", True), ("rope", True), ("learned", False)])
def test_cached_decoding_equals_the_full_pass(position, norm_first):
    model = make_model(position, norm_first)
    source_ids, source_mask = sources()
    target_ids = random_ids((2, 8), VOCAB, seed=1)
    full = full_logits(model, source_ids, source_mask, target_ids)
    cache = model.build_cache(2, TARGET, source_ids, source_mask)
    assert [tuple(entries.shape) for entries in tf.nest.flatten(cache["self"])] == [(2, 2, TARGET, 8)] * 4
    assert [tuple(entries.shape) for entries in tf.nest.flatten(cache["cross"])] == [(2, 2, 7, 8)] * 4
    logits, _, cache = model.call_with_cache(target_ids[:, :3], cache, 0)
    steps = [logits.numpy()]
    for index in range(3, 8):
        logits, _, cache = model.call_with_cache(target_ids[:, index : index + 1], cache, index)
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_extra_source_padding_changes_no_output():
    model = make_model()
    source_ids, source_mask = sources()
    padded_ids = np.pad(source_ids, [(0, 0), (0, 2)])
    padded_mask = np.pad(source_mask, [(0, 0), (0, 2)])
    target_ids = random_ids((2, 5), VOCAB, seed=1)
    np.testing.assert_allclose(full_logits(model, padded_ids, padded_mask, target_ids),
                               full_logits(model, source_ids, source_mask, target_ids), atol=1e-6)
    generated = [generate(model, ids, mask, GreedySampler()) for ids, mask in
                 ((source_ids, source_mask), (padded_ids, padded_mask))]
    np.testing.assert_array_equal(generated[0], generated[1])


def generate(model, source_ids, source_mask, sampler, steps=5, stop_token_ids=()):
    """The decoded buffer of `steps` new tokens after start id 1, through `tfllm.decoding`."""
    packed = PromptPacker(TARGET)(tf.ragged.constant([[1]] * len(source_ids), tf.int32), steps, add_start_id=False)
    build_cache = decoding.cache_builder(model.build_cache, {"encoder_token_ids": tf.constant(source_ids, tf.int32),
                                                             "encoder_padding_mask": tf.constant(source_mask, tf.int32)})
    tokens = decoding.decode(build_cache, model.call_with_cache, sampler, packed, stop_token_ids)
    return tokens.numpy()[:, 1 : 1 + steps]


def test_the_encoder_runs_once_per_generation():
    model = make_model()
    source_ids, source_mask = sources()
    calls = []
    encode = model.backbone.encode
    model.backbone.encode = lambda *args, **kwargs: calls.append(1) or encode(*args, **kwargs)
    # Eagerly, the decoding loop runs its body in Python once per step: a per-step encoder call
    # would count once per generated token.
    tf.config.run_functions_eagerly(True)
    try:
        tokens = generate(model, source_ids, source_mask, GreedySampler(), steps=6)
    finally:
        tf.config.run_functions_eagerly(False)
    assert tokens.shape == (2, 6) and len(calls) == 1


def test_beam_search_equals_exhaustive_search_on_a_tiny_vocabulary():
    vocabulary, steps = 4, 3
    model = make_model(vocabulary_size=vocabulary)
    source_ids = random_ids((2, 5), vocabulary, seed=3)
    source_mask = np.ones_like(source_ids)
    # With vocabulary ** (steps - 1) beams, no sequence is dropped before the last step, whose
    # choice is over every sequence: beam search is then exact.
    beams = generate(model, source_ids, source_mask, BeamSampler(num_beams=vocabulary ** (steps - 1),
                                                                 length_penalty=0.0), steps=steps)
    for row in range(2):
        candidates = np.array(list(itertools.product(range(vocabulary), repeat=steps)))
        decoder_ids = np.concatenate([np.ones((len(candidates), 1), "int32"), candidates[:, :-1]], axis=1)
        logits = full_logits(model, np.repeat(source_ids[row : row + 1], len(candidates), 0),
                             np.repeat(source_mask[row : row + 1], len(candidates), 0), decoder_ids)
        log_probabilities = tf.nn.log_softmax(logits).numpy()
        totals = np.take_along_axis(log_probabilities, candidates[..., None], axis=-1)[..., 0].sum(-1)
        np.testing.assert_array_equal(beams[row], candidates[np.argmax(totals)])


def test_a_masked_lm_backbone_loads_into_the_encoder():
    model = make_model()
    masked_lm = MaskedLM(GPTBackbone(vocabulary_size=VOCAB, num_layers=2, max_sequence_length=SOURCE, causal=False,
                                     **SHAPE))
    source, target = masked_lm.backbone.weights, model.backbone.encoder.weights
    assert [tuple(w.shape) for w in source] == [tuple(w.shape) for w in target]
    for src, dst in zip(source, target):
        dst.assign(src)
    source_ids, source_mask = sources()
    np.testing.assert_allclose(model.backbone.encode(source_ids, source_mask).numpy(),
                               masked_lm.backbone({"token_ids": source_ids, "padding_mask": source_mask}).numpy(),
                               atol=1e-6)


def test_config_round_trip_rebuilds_the_same_model():
    model = make_model(position="rope", num_key_value_heads=1)
    clone = Seq2SeqLM.from_config(model.get_config())
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
    clone.set_weights(model.get_weights())
    source_ids, source_mask = sources()
    target_ids = random_ids((2, 4), VOCAB, seed=1)
    np.testing.assert_array_equal(full_logits(clone, source_ids, source_mask, target_ids),
                                  full_logits(model, source_ids, source_mask, target_ids))
