"""The encoder and decoder rows of source -> target pairs, against hand-built ids."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.seq2seq_pipeline import decoder_start_id, encode_sources, encode_targets, seq2seq_dataset
from tfllm.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", ["abcdefgh "], 32)


def ids(tokenizer, text):
    return tokenizer.tokenize(tf.constant([text])).to_list()[0]


def test_sources_keep_their_first_tokens_then_the_end_of_text_id(tokenizer):
    eos = tokenizer.eos_id
    encoded = encode_sources(tokenizer, tf.constant(["abcdef", "ab", ""]), source_len=4)
    np.testing.assert_array_equal(encoded["encoder_token_ids"].numpy(),
                                  [ids(tokenizer, "abc") + [eos], ids(tokenizer, "ab") + [eos, 0], [eos, 0, 0, 0]])
    np.testing.assert_array_equal(encoded["encoder_padding_mask"].numpy(), [[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(encoded["cut"].numpy(), [3, 0, 0])
    padded = encode_sources(tokenizer, tf.constant(["ab"]), source_len=4, pad_to=6)["encoder_token_ids"]
    np.testing.assert_array_equal(padded.numpy(), [ids(tokenizer, "ab") + [eos, 0, 0, 0]])


def test_targets_are_teacher_forced_and_weighted_on_the_target_and_its_end_only(tokenizer):
    eos, start = tokenizer.eos_id, decoder_start_id(tokenizer)
    inputs, next_ids, weights, cut = encode_targets(tokenizer, tf.constant(["abc", "abcdefg"]), seq_len=5)
    abc, abcdefg = ids(tokenizer, "abc"), ids(tokenizer, "abcdefg")
    np.testing.assert_array_equal(inputs["decoder_token_ids"].numpy(), [[start] + abc + [0], [start] + abcdefg[:4]])
    np.testing.assert_array_equal(inputs["decoder_padding_mask"].numpy(), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(next_ids.numpy(), [abc + [eos, 0], abcdefg[:5]])
    np.testing.assert_array_equal(weights.numpy(), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(cut.numpy(), [0, 3])


def test_the_dataset_batches_both_sides_with_static_shapes(tokenizer):
    dataset = seq2seq_dataset(["ab", "abc", "a", "b"], ["ba", "cba", "a", "b"], tokenizer, source_len=6, seq_len=5,
                              batch_size=2, shuffle=False, seed=0, repeat=False)
    x, y, weights = next(iter(dataset))
    assert {key: tuple(value.shape) for key, value in x.items()} == {
        "encoder_token_ids": (2, 6), "encoder_padding_mask": (2, 6), "decoder_token_ids": (2, 5),
        "decoder_padding_mask": (2, 5)}
    assert tuple(y.shape) == tuple(weights.shape) == (2, 5)
    assert weights.numpy().sum() == 3 + 4  # "ba" and "cba", each with its end-of-text id
