"""CharTokenizer (tfllm/tokenizers/char_tokenizer.py)."""

import pytest
from tests.tokenizers.tokenizer_testing import CORPUS
from tests.tokenizers.tokenizer_testing import UNICODE_TEXTS
from tests.tokenizers.tokenizer_testing import ids_of
from tests.tokenizers.tokenizer_testing import strings_of

from tfllm.errors import UserError
from tfllm.tokenizers import CharTokenizer


def reference_ids(code_points, text):
    """Id of each code point: 4 + its rank, or 2 (<unk>)."""
    ids = {point: 4 + i for i, point in enumerate(code_points)}
    return [ids.get(ord(char), 2) for char in text]


def test_vocabulary_is_most_frequent_code_points_ties_by_code_point():
    # Counts: b 3, c 2, a 2, d 1, e 1 -> order b, a, c, d, e.
    tokenizer = CharTokenizer.train(["bcb", "acab", "ed"], vocab_size=8)
    assert tokenizer.code_points == [ord("b"), ord("a"), ord("c"), ord("d")]
    assert tokenizer.vocabulary_size == 8
    assert ids_of(tokenizer, ["abcdez", ""]) == [[5, 4, 6, 7, 2, 2], []]


def test_vocabulary_is_smaller_when_text_has_few_characters():
    tokenizer = CharTokenizer.train(["abab"], vocab_size=100)
    assert tokenizer.vocabulary_size == 6
    assert [tokenizer.id_to_token(i) for i in (4, 5)] == ["a", "b"]
    assert tokenizer.token_to_id("b") == 5
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.token_to_id("z")
    with pytest.raises(ValueError, match="id must be in"):
        tokenizer.id_to_token(6)


def test_ids_match_python_reference_and_round_trip_exactly(trained):
    tokenizer = trained["char"]
    texts = UNICODE_TEXTS + CORPUS[:2] + ["a\x00b\x7f", "\u2581 \U0001f600"]
    assert ids_of(tokenizer, texts) == [reference_ids(tokenizer.code_points, text) for text in texts]
    known = UNICODE_TEXTS + CORPUS[:2]
    assert strings_of(tokenizer, tokenizer.tokenize(known)) == known


def test_unknown_characters_become_unk_and_vanish_on_detokenize():
    tokenizer = CharTokenizer(code_points=[ord("a"), ord(" ")])
    ids = ids_of(tokenizer, ["a 日 a"])
    assert ids == [[4, 5, 2, 5, 4]]
    assert strings_of(tokenizer, ids) == ["a  a"]
    assert strings_of(tokenizer, [[4, 99, 5]]) == ["a "]  # Ids past the vocabulary are dropped too.


def test_too_small_vocab_size_names_the_key_and_minimum():
    with pytest.raises(UserError, match=r"data\.vocab_size=4 .* at least 5"):
        CharTokenizer.train(["abc"], vocab_size=4)


def test_duplicate_code_points_are_rejected():
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer(code_points=[97, 97])
