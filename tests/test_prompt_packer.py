"""PromptPacker against a NumPy reference, and the same packing in Generator and GenerationModule."""

import numpy as np
import pytest
import tensorflow as tf

from tests.export.export_testing import BigramLM
from tfllm.export.generation_module import GenerationModule
from tfllm.generator import Generator
from tfllm.prompt_packer import MIN_BUCKET, PromptPacker
from tfllm.samplers import GreedySampler, RandomSampler
from tfllm.tokenizers import EOS_ID, CharTokenizer

CHARS = "abcdef"
TOKENIZER = CharTokenizer(code_points=[ord(c) for c in CHARS])


def reference_bucket(length):
    bucket = MIN_BUCKET
    while bucket < length:
        bucket *= 2
    return bucket


def reference_pack(rows, max_new_tokens, max_length, add_start_id=True):
    """The packing rules in NumPy: start id, cut from the left, two buckets, right padding."""
    given = [([EOS_ID] if add_start_id else []) + list(row) for row in rows]
    room = max_length - max_new_tokens
    kept = [row[max(len(row) - room, 0) :] for row in given]
    lengths = np.array([len(row) for row in kept])
    prompt_length = min(reference_bucket(lengths.max()), max_length)
    buffer_length = min(prompt_length + reference_bucket(max_new_tokens), max_length)
    buffer = np.zeros((len(rows), buffer_length), np.int32)
    for i, row in enumerate(kept):
        buffer[i, : len(row)] = row
    return {
        "buffer": buffer,
        "mask": np.arange(buffer_length)[None, :] < lengths[:, None],
        "prompt_columns": buffer[:, :prompt_length],
        "lengths": lengths,
        "index": lengths.min(),
        "end_index": lengths.max() + max_new_tokens,
        "dropped": np.array([len(g) - len(k) for g, k in zip(given, kept)]),
    }


def assert_packed_equal(packed, expected):
    for field in packed._fields:
        np.testing.assert_array_equal(getattr(packed, field).numpy(), expected[field], err_msg=field)


def random_rows(rng, batch, longest):
    return [rng.integers(4, 40, size=rng.integers(0, longest + 1)).tolist() for _ in range(batch)]


@pytest.mark.parametrize("max_length, max_new_tokens", [(24, 3), (24, 20), (40, 1), (40, 30), (512, 100)])
def test_packing_equals_the_numpy_reference(max_length, max_new_tokens):
    rng = np.random.default_rng(max_length + max_new_tokens)
    packer = PromptPacker(max_length)
    for batch, longest in ((1, 5), (3, max_length + 10), (4, max_length // 2)):
        rows = random_rows(rng, batch, longest)
        packed = packer(tf.ragged.constant(rows, tf.int32, row_splits_dtype=tf.int64), max_new_tokens)
        assert_packed_equal(packed, reference_pack(rows, max_new_tokens, max_length))


def test_a_long_prompt_keeps_its_last_tokens_and_loses_the_start_id_first():
    packed = PromptPacker(24)(tf.ragged.constant([list(range(4, 34)), [5]]), 20)
    # Room for 4 tokens: of the start id and 30 tokens, the first 27 are dropped.
    assert packed.buffer.numpy()[0, :4].tolist() == [30, 31, 32, 33]
    assert packed.buffer.numpy()[1, :2].tolist() == [EOS_ID, 5]
    assert packed.dropped.numpy().tolist() == [27, 0]


def test_without_the_start_id_the_rows_are_packed_as_given():
    rows = [[EOS_ID, 7, 8], [9]]
    packed = PromptPacker(24)(tf.ragged.constant(rows), 4, add_start_id=False)
    assert_packed_equal(packed, reference_pack(rows, 4, 24, add_start_id=False))


@pytest.mark.parametrize(
    "longest, new, limit, expected",
    [(5, 10, 512, (16, 32)), (17, 256, 512, (32, 288)), (100, 200, 512, (128, 384)), (20, 3, 24, (24, 24)),
     (16, 16, 512, (16, 32)), (1, 1, 2, (2, 2))],
)
def test_buffer_lengths_bucket_the_prompt_and_the_new_tokens_separately(longest, new, limit, expected):
    assert tuple(int(n) for n in PromptPacker(limit).buffer_lengths(longest, new)) == expected


def test_a_traced_packer_with_shape_free_inputs_packs_as_the_eager_one():
    packer = PromptPacker(40)
    traced = tf.function(packer, input_signature=[tf.RaggedTensorSpec([None, None], tf.int32),
                                                  tf.TensorSpec([], tf.int32)])
    rng = np.random.default_rng(0)
    for max_new_tokens in (2, 25):
        rows = random_rows(rng, 3, 50)
        packed = traced(tf.ragged.constant(rows, tf.int32), tf.constant(max_new_tokens))
        assert_packed_equal(packed, reference_pack(rows, max_new_tokens, 40))


def test_max_length_is_checked():
    with pytest.raises(ValueError, match="max_length must be an integer >= 2. Received: max_length=1"):
        PromptPacker(1)


PROMPTS = ["", "abc", "zz?", "abcdef" * 5, "fed"]
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def paths():
    size = TOKENIZER.vocabulary_size
    model = BigramLM(np.random.default_rng(3).normal(scale=2.0, size=(size, size)).astype(np.float32))
    return (Generator(model, TOKENIZER, MAX_LENGTH, jit_compile=False),
            GenerationModule(model, TOKENIZER, MAX_LENGTH, jit_compile=False))


@pytest.mark.parametrize("max_new_tokens", [1, 6, MAX_LENGTH - 1])
def test_generator_and_generation_module_pack_the_same_buffers(paths, max_new_tokens):
    generator, module = paths
    in_process = generator.pack(PROMPTS, max_new_tokens)
    # As `generate` packs: traced, from the request's string and int32 tensors.
    served = tf.function(module.pack)(tf.constant(PROMPTS), tf.constant(max_new_tokens))
    rows = TOKENIZER.tokenize(tf.constant(PROMPTS)).to_list()
    expected = reference_pack(rows, max_new_tokens, MAX_LENGTH)
    assert_packed_equal(in_process, expected)
    assert_packed_equal(served, expected)


def test_generator_and_generation_module_decode_the_same_tokens(paths):
    generator, module = paths

    def served(temperature, seed):
        out = module.generate(tf.constant(PROMPTS), tf.constant(6), tf.constant(temperature), tf.constant(0),
                              tf.constant(1.0), tf.constant(seed))
        return [t.decode("utf-8") for t in out["text"].numpy()], out["num_tokens"].numpy().tolist()

    for sampler, temperature, seed in ((GreedySampler(), 0.0, 0), (RandomSampler(temperature=1.0, seed=5), 1.0, 5)):
        ids = generator.generate_ids(PROMPTS, 6, sampler)
        assert served(temperature, seed) == (generator.generate(PROMPTS, 6, sampler), [len(row) for row in ids])
    assert len(set(served(1.0, 5)[0])) > 2  # varied completions, so agreeing means something
