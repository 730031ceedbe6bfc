"""`GenerationModule` on a bigram stand-in for the model, against a plain Python reference."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests.export.export_testing import BigramLM
from tfllm.export.generation_module import GenerationModule
from tfllm.samplers import validation
from tfllm.tokenizers import CharTokenizer

CHARS = "abcdef"
VOCAB = 4 + len(CHARS)
MAX_LENGTH = 24
EOS, UNK = 1, 2


def token(char):
    return 4 + CHARS.index(char)


def bigram_table():
    """Greedy from the end of text: a b c d e, then end of text; f and unknown loop on f."""
    table = np.random.default_rng(0).normal(scale=0.5, size=(VOCAB, VOCAB)).astype(np.float32)
    for previous, following in [(EOS, token("a")), (token("a"), token("b")), (token("b"), token("c")),
                                (token("c"), token("d")), (token("d"), token("e")), (token("e"), EOS),
                                (token("f"), token("f")), (UNK, token("f")), (0, token("a"))]:
        table[previous, following] += 6.0
    return table


class PartialCharacterTokenizer(CharTokenizer):
    """Writes "f" as the first two bytes of a three-byte character, as byte-level tokens can."""

    def _detokenize_batch(self, ids):
        pieces = tf.constant([b""] * 4 + [c.encode() for c in CHARS[:-1]] + [b"\xe2\x82"])
        return tf.strings.reduce_join(tf.gather(pieces, ids), axis=-1)


TABLE = bigram_table()
TOKENIZER = CharTokenizer(code_points=[ord(c) for c in CHARS])


@pytest.fixture(scope="module")
def module():
    return GenerationModule(BigramLM(TABLE), TOKENIZER, max_length=MAX_LENGTH)


def expected_completion(prompt, max_new_tokens):
    """Greedy decoding of the bigram table in Python: (text, number of tokens)."""
    previous = token(prompt[-1]) if prompt and prompt[-1] in CHARS else (UNK if prompt else EOS)
    text = ""
    for _ in range(max_new_tokens):
        previous = int(np.argmax(TABLE[previous]))
        if previous == EOS:
            break
        text += CHARS[previous - 4]
    return text, len(text)


def generate(module, prompts, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    out = module.generate(tf.constant(prompts), tf.constant(max_new_tokens), tf.constant(temperature),
                          tf.constant(top_k), tf.constant(top_p), tf.constant(seed))
    return [t.decode("utf-8") for t in out["text"].numpy()], out["num_tokens"].numpy().tolist()


PROMPTS = ["", "c", "f", "xyz", "ab" * 20, "abcd"]


@pytest.mark.parametrize("max_new_tokens", [3, 8, MAX_LENGTH - 1])
def test_greedy_completions_match_the_reference_and_stop_before_end_of_text(module, max_new_tokens):
    texts, counts = generate(module, PROMPTS, max_new_tokens)
    expected = [expected_completion(prompt, max_new_tokens) for prompt in PROMPTS]
    assert texts == [text for text, _ in expected]
    assert counts == [count for _, count in expected]


def test_a_prompt_is_completed_the_same_alone_and_in_a_batch(module):
    batch = generate(module, PROMPTS, 8)
    alone = [generate(module, [prompt], 8) for prompt in PROMPTS]
    assert batch == ([texts[0] for texts, _ in alone], [counts[0] for _, counts in alone])


def test_the_completion_is_valid_utf8_when_tokens_end_inside_a_character():
    tokenizer = PartialCharacterTokenizer(code_points=[ord(c) for c in CHARS])
    module = GenerationModule(BigramLM(TABLE), tokenizer, max_length=MAX_LENGTH)
    texts, counts = generate(module, ["f", "a"], 3)
    assert texts == [(b"\xe2\x82" * 3).decode("utf-8", errors="replace"), "bcd"]
    assert counts == [3, 3]


def test_seeded_sampling_repeats_and_top_k_1_is_greedy(module):
    sampled = generate(module, PROMPTS, 8, temperature=3.0, seed=5)
    assert sampled == generate(module, PROMPTS, 8, temperature=3.0, seed=5)
    assert sampled != generate(module, PROMPTS, 8, temperature=3.0, seed=6)
    assert generate(module, PROMPTS, 8, temperature=3.0, top_k=1, seed=5) == generate(module, PROMPTS, 8)


def reference_score(text):
    ids = ([EOS] + [token(c) if c in CHARS else UNK for c in text])[:MAX_LENGTH]
    logits = TABLE.astype(np.float64)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return sum(log_probabilities[a, b] for a, b in zip(ids, ids[1:])), len(ids) - 1


def test_score_sums_the_log_probabilities_of_each_text(module):
    texts = ["abcde", "", "fx", "ab" * 20]
    out = module.score(tf.constant(texts))
    expected = [reference_score(text) for text in texts]
    np.testing.assert_allclose(out["log_probability"].numpy(), [lp for lp, _ in expected], rtol=1e-5)
    assert out["num_tokens"].numpy().tolist() == [n for _, n in expected] == [5, 0, 2, MAX_LENGTH - 1]
    perplexity = [np.exp(-lp / n) if n else 1.0 for lp, n in expected]
    np.testing.assert_allclose(out["perplexity"].numpy(), perplexity, rtol=1e-5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 23 for a 24-token context"),
        ({"max_new_tokens": MAX_LENGTH}, "max_new_tokens must be between 1 and 23"),
        ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"top_p": 0.0}, "top_p must be > 0 and <= 1"),
        ({"top_p": 1.5}, "top_p must be > 0 and <= 1"),
    ],
)
def test_bad_settings_fail_with_a_message_naming_them(module, settings, message):
    arguments = {"max_new_tokens": 4, **settings}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        generate(module, ["abc"], **arguments)


@pytest.mark.parametrize(
    "setting, value", [("max_new_tokens", 0), ("temperature", -0.5), ("top_k", -1), ("top_p", 1.5)]
)
def test_request_errors_are_worded_by_the_settings_table(module, setting, value):
    requirement = validation.requirement(setting, request=True, max_length=MAX_LENGTH)
    arguments = {"max_new_tokens": 4, setting: value}
    # The assertion op prints each of its data in brackets: the message, then the value.
    expected = re.escape(f"[{requirement}. Received: {setting} =] [{value}]")
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        generate(module, ["abc"], **arguments)


def test_empty_batches_are_refused(module):
    with pytest.raises(tf.errors.InvalidArgumentError, match="prompts must hold at least one prompt"):
        generate(module, tf.constant([], tf.string), 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="texts must hold at least one text"):
        module.score(tf.constant([], tf.string))


def test_the_signatures_are_generate_serving_default_and_score(module):
    signatures = module.signatures()
    assert sorted(signatures) == ["generate", "score", "serving_default"]
    assert signatures["serving_default"] is signatures["generate"]
    names = [spec.name for spec in tf.nest.flatten(signatures["generate"].structured_input_signature)]
    assert names == ["prompts", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]


def test_max_length_is_checked():
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        GenerationModule(BigramLM(TABLE), TOKENIZER, max_length=1)


def test_graph_mode_and_xla_decode_the_same(module):
    graph = GenerationModule(BigramLM(TABLE), TOKENIZER, max_length=MAX_LENGTH, jit_compile=False)
    assert generate(graph, PROMPTS, 8) == generate(module, PROMPTS, 8)
    assert generate(graph, PROMPTS, 8, temperature=0.0, top_k=3) == generate(module, PROMPTS, 8)
    with pytest.raises(ValueError, match="jit_compile must be True or False"):
        GenerationModule(BigramLM(TABLE), TOKENIZER, max_length=MAX_LENGTH, jit_compile="auto")


def graph_ops(concrete_function):
    graph = concrete_function.graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_a_graph_mode_export_of_the_real_model_needs_no_xla(trained):
    # The KV cache is written with TensorStridedSliceUpdate outside XLA (tfllm.layers.kv_cache);
    # XlaDynamicUpdateSlice, only XLA runs it, appears in compiled decoding alone.
    config, tokenizer, model = trained
    graph = GenerationModule(model, tokenizer, max_length=config.max_seq_len, jit_compile=False)
    assert sorted(op for op in graph_ops(graph.generate.get_concrete_function()) if op.startswith("Xla")) == []


@pytest.mark.parametrize("max_new_tokens", [10**6, -(10**6)])
def test_absurd_lengths_fail_with_the_message_before_any_buffer_is_sized(module, max_new_tokens):
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens must be between 1 and 23"):
        generate(module, ["abc"] * 3, max_new_tokens)
