"""Generator: cached decoding against full forward passes of a tiny random CausalLM."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.generator import Generator, cut_at_stop_strings
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.samplers import BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler
from tfllm.tokenizers import EOS_ID, train_tokenizer

TEXT = "the cat sat on the mat, café ünïcode 0123456789"
MAX_LENGTH = 32
PROMPTS = ["the", "c", "a mat for a café"]


def make_model(vocabulary_size, position="learned", seed=0):
    """A 2-layer model with varied outputs and logits of std ~4, so argmax ties cannot flip.

    Kernels are 3x the usual 1/sqrt(fan_in) scale: at the usual scale the token embedding
    dominates the residual stream and the tied head keeps predicting the last token.
    """
    keras.utils.set_random_seed(seed)
    backbone = GPTBackbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=MAX_LENGTH, position=position,
    )
    model = CausalLM(backbone)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if len(weight.shape) == 2:
            scale = 1.0 if "embeddings" in weight.path else 3.0 * weight.shape[0] ** -0.5
            weight.assign(rng.normal(size=weight.shape).astype("float32") * scale)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", [TEXT], vocab_size=40)


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(tokenizer.vocabulary_size)


@pytest.fixture(scope="module")
def generator(model, tokenizer):
    return Generator(model, tokenizer, MAX_LENGTH)


def prompt_ids(tokenizer, prompt):
    return [EOS_ID] + tokenizer.tokenize(tf.constant([prompt])).to_list()[0]


def full_logits(model, tokens):
    """float64 (len, vocab): the logits a full forward pass gives at every position."""
    return model(tf.constant([tokens], tf.int32))[0].numpy().astype(np.float64)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_greedy(model, tokens, steps):
    tokens = list(tokens)
    for _ in range(steps):
        tokens.append(int(np.argmax(full_logits(model, tokens)[-1])))
    return tokens[-steps:]


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_cached_decoding_equals_the_full_forward_pass(tokenizer, position):
    model = make_model(tokenizer.vocabulary_size, position=position)
    generator = Generator(model, tokenizer, MAX_LENGTH)
    tokens = prompt_ids(tokenizer, "the cat")
    buffer = np.zeros((1, 20), np.int32)
    buffer[0, : len(tokens)] = tokens
    cache = generator.build_cache(tf.constant(buffer[:, :16]), 20)
    for index in range(len(tokens), 20):
        logits, _, cache = generator.next(tf.constant(buffer), cache, index)
        expected = full_logits(model, buffer[0, :index].tolist())[-1]
        # float32 rounding of two summation orders scales with the activations (3x kernels, logits up
        # to ~8): 1e-5 of the largest logit; a wrong mask, cache slot or position moves logits by ~1.
        np.testing.assert_allclose(logits.numpy()[0], expected, atol=1e-5 * np.abs(expected).max(), rtol=0)
        buffer[0, index] = int(np.argmax(expected))


def test_greedy_equals_step_by_step_argmax_for_a_batch_of_prompt_lengths(generator, model, tokenizer):
    generated = generator.generate_ids(PROMPTS, 10, GreedySampler(), stop_token_ids=())
    for prompt, row in zip(PROMPTS, generated):
        assert row == reference_greedy(model, prompt_ids(tokenizer, prompt), 10)
        assert generator.generate_ids([prompt], 10, GreedySampler(), stop_token_ids=()) == [row]


def test_generate_from_ids_equals_generate_ids(generator, tokenizer):
    ids = [prompt_ids(tokenizer, prompt) for prompt in PROMPTS]
    assert generator.generate_from_ids(ids, 6, GreedySampler(), ()) == generator.generate_ids(
        PROMPTS, 6, GreedySampler(), ()
    )


def sampled_steps(generator, model, tokenizer, sampler):
    """(full-pass logits before each generated token, the token) for every generated token."""
    steps = []
    for prompt, row in zip(PROMPTS, generator.generate_ids(PROMPTS, 8, sampler, stop_token_ids=())):
        tokens = prompt_ids(tokenizer, prompt)
        logits = full_logits(model, tokens + row)
        steps += [(logits[len(tokens) - 1 + i], token) for i, token in enumerate(row)]
    return steps


# One seed per sampler: each seed is a decoding trace of its own (seconds); the 24 draws of one
# call already leave the argmax.
def test_top_k_samples_only_among_the_k_best(generator, model, tokenizer):
    steps = sampled_steps(generator, model, tokenizer, TopKSampler(k=3, seed=0))
    ranks = [int((logits > logits[token]).sum()) for logits, token in steps]
    assert max(ranks) <= 2
    assert max(ranks) > 0  # the draws did leave the argmax


def test_top_p_samples_only_inside_the_nucleus(generator, model, tokenizer):
    p = 0.6
    inside, sizes = [], []
    for logits, token in sampled_steps(generator, model, tokenizer, TopPSampler(p=p, seed=0)):
        probabilities = np.exp(log_softmax(logits))
        order = np.argsort(-probabilities)
        mass_before = np.cumsum(probabilities[order]) - probabilities[order]
        nucleus = set(order[mass_before < p].tolist())
        inside.append(token in nucleus)
        sizes.append(len(nucleus))
    assert all(inside)
    assert max(sizes) > 1  # some steps had a choice


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_temperature_towards_zero_is_greedy(generator, temperature):
    greedy = generator.generate_ids(PROMPTS, 8, GreedySampler(), ())
    assert generator.generate_ids(PROMPTS, 8, RandomSampler(temperature=temperature, seed=3), ()) == greedy


def test_same_seed_same_output(generator):
    def sample(seed):
        return generator.generate_ids(PROMPTS, 12, RandomSampler(temperature=1.0, seed=seed), ())

    assert sample(5) == sample(5)
    assert sample(5) != sample(6)


def test_one_beam_equals_greedy(generator):
    greedy = generator.generate_ids(PROMPTS, 8, GreedySampler(), ())
    assert generator.generate_ids(PROMPTS, 8, BeamSampler(num_beams=1), ()) == greedy


def test_beam_search_finds_a_more_probable_sequence_than_greedy(generator, model, tokenizer):
    prompts = sorted(set(TEXT))  # every one-character prompt

    def total_log_probabilities(rows):
        """Of each prompt's `row`: every prompt is one token after the start id, so all the
        sequences have one length and go through the model in one batch."""
        tokens = [prompt_ids(tokenizer, prompt) + row for prompt, row in zip(prompts, rows)]
        log_probs = log_softmax(model(tf.constant(tokens, tf.int32)).numpy().astype(np.float64))
        return np.array([sum(log_probs[b, 1 + i, token] for i, token in enumerate(row)) for b, row in enumerate(rows)])

    beam = BeamSampler(num_beams=4, length_penalty=0.0)
    greedy_rows, beam_rows = (generator.generate_ids(prompts, 8, sampler, ()) for sampler in (GreedySampler(), beam))
    assert {len(prompt_ids(tokenizer, prompt)) for prompt in prompts} == {2}
    assert {len(row) for row in greedy_rows + beam_rows} == {8}
    gains = total_log_probabilities(beam_rows) - total_log_probabilities(greedy_rows)
    assert min(gains) > -1e-4
    assert max(gains) > 0.5


def test_new_prompt_lengths_and_batch_sizes_reuse_one_trace(model, tokenizer):
    generator = Generator(model, tokenizer, MAX_LENGTH)
    for prompts, new in ((["a"], 3), (["the cat"], 5), (["the cat sat on", "c"], 9), (["a", "b", "0123456789"], 20)):
        generator.generate(prompts, new, GreedySampler())
    assert generator.traces == 1
    generator.generate(["the"], 4, GreedySampler(), on_text=lambda row, piece: None)
    generator.generate(["the"], 4, TopKSampler(k=2, seed=0))
    assert generator.traces == 3


def test_long_prompt_keeps_its_last_tokens_with_a_warning(generator, tokenizer, caplog):
    prompt = TEXT  # 47 characters, more than the 32-token context
    with caplog.at_level(logging.WARNING, logger="tfllm.generator"):
        packed = generator.pack([prompt], max_new_tokens=8)
    encoded = [packed.buffer.numpy()[0, : packed.lengths.numpy()[0]].tolist()]
    assert encoded == [prompt_ids(tokenizer, prompt)[-24:]]
    given = len(prompt_ids(tokenizer, prompt))
    warning = f"has {given} tokens; keeping its last 24 to leave room for 8 new tokens in the 32-token context"
    assert warning in caplog.text
    row = generator.generate_ids([prompt], 8, GreedySampler(), ())[0]
    assert len(row) == 8
    assert row == generator.generate_from_ids(encoded, 8, GreedySampler(), ())[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfllm.generator"):
        assert generator.generate_from_ids([prompt_ids(tokenizer, prompt)], 8, GreedySampler(), ()) == [row]
    assert f"prompt 0 has {given} tokens; keeping its last 24" in caplog.text


def test_a_stop_token_ends_the_row_before_it(generator):
    full = generator.generate_ids(["the"], 12, GreedySampler(), ())[0]
    stop = next(token for i, token in enumerate(full) if i > 0 and token not in full[:i])
    cut = generator.generate_ids(["the"], 12, GreedySampler(), stop_token_ids=(stop,))[0]
    assert cut == full[: full.index(stop)]


def test_streamed_text_equals_the_generated_text(generator):
    pieces = {0: [], 1: [], 2: []}
    streamed = generator.generate(PROMPTS, 10, GreedySampler(), on_text=lambda row, piece: pieces[row].append(piece))
    assert streamed == generator.generate(PROMPTS, 10, GreedySampler())
    assert ["".join(pieces[row]) for row in range(3)] == streamed
    assert all(len(pieces[row]) > 1 for row in range(3))


def test_stop_strings_cut_the_completion_and_end_a_streamed_row(generator):
    text = generator.generate(["c"], 12, GreedySampler(), stop_token_ids=())[0]
    stop = next(text[i : i + 2] for i in range(3, len(text) - 1) if text.find(text[i : i + 2]) >= 3)
    expected = text[: text.find(stop)]
    assert generator.generate(["c"], 12, GreedySampler(), stop_strings=(stop,)) == [expected]
    pieces = []
    streamed = generator.generate(["c"], 12, GreedySampler(), stop_strings=(stop,),
                                  on_text=lambda row, piece: pieces.append(piece))
    assert streamed == [expected] and "".join(pieces) == expected


def test_cut_at_stop_strings_uses_the_earliest_match():
    assert cut_at_stop_strings("abc\n\ndef", ("d", "\n\n")) == "abc"
    assert cut_at_stop_strings("abc", ("x", "")) == "abc"


def test_xla_decoding_equals_graph_decoding(model, tokenizer, generator):
    xla = Generator(model, tokenizer, MAX_LENGTH, jit_compile=True)
    assert xla.uses_xla
    assert xla.generate_ids(PROMPTS, 6, GreedySampler(), ()) == generator.generate_ids(PROMPTS, 6, GreedySampler(), ())


def test_bad_arguments_raise_value_errors(generator):
    with pytest.raises(ValueError, match="max_new_tokens must be an integer in \\[1, 31\\]"):
        generator.generate(["a"], 0, GreedySampler())
    with pytest.raises(ValueError, match="Received: max_new_tokens=32"):
        generator.generate(["a"], 32, GreedySampler())
    with pytest.raises(ValueError, match="without streaming"):
        generator.generate(["a"], 3, BeamSampler(num_beams=2), on_text=lambda row, piece: None)
    with pytest.raises(ValueError, match="at least one token id"):
        generator.generate_from_ids([[]], 3, GreedySampler())
    assert generator.generate([], 3, GreedySampler()) == []
