"""WordPieceTokenizer (tfllm/tokenizers/word_piece_tokenizer.py)."""

import unicodedata

import pytest
from tests.tokenizers.tokenizer_testing import CORPUS
from tests.tokenizers.tokenizer_testing import UNICODE_TEXTS
from tests.tokenizers.tokenizer_testing import ids_of
from tests.tokenizers.tokenizer_testing import strings_of

from tfllm.errors import UserError
from tfllm.tokenizers import SPECIAL_TOKENS
from tfllm.tokenizers import WordPieceTokenizer


def without_whitespace(text):
    """`text` minus whitespace and control/format characters, which WordPiece drops."""
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf"))


def test_hand_built_vocabulary_gives_exact_ids_and_text():
    vocabulary = [*SPECIAL_TOKENS, "a", "b", "##b", "ab", ",", "A", "é", "日"]
    tokenizer = WordPieceTokenizer(vocabulary=vocabulary)
    # "abb" -> ab ##b; "," is a word of its own; cased; 日 splits off; "c" is <unk>.
    texts = ["ab  abb,\tb", "A a é日b", "abc"]
    assert ids_of(tokenizer, texts) == [[7, 7, 6, 8, 5], [9, 4, 10, 11, 5], [2]]
    assert strings_of(tokenizer, tokenizer.tokenize(texts)) == ["ab abb , b", "A a é 日 b", ""]


def test_round_trip_equals_input_up_to_whitespace(trained):
    # Compared: input without whitespace/control characters == output without
    # whitespace. Detokenize joins words and punctuation with single spaces.
    tokenizer = trained["wordpiece"]
    texts = UNICODE_TEXTS + CORPUS[:3] + ["a\x00b"]
    back = strings_of(tokenizer, tokenizer.tokenize(texts))
    assert [without_whitespace(t) for t in back] == [without_whitespace(t) for t in texts]
    assert back[3] == "tabs and newlines end"
    assert back[-1] == "a b"


def test_cased_and_accents_kept(trained):
    tokenizer = trained["wordpiece"]
    ids = ids_of(tokenizer, ["The", "the", "café", "cafe"])
    assert ids[0] != ids[1] and ids[2] != ids[3]


def test_vocabulary_layout(trained):
    tokenizer = trained["wordpiece"]
    assert tokenizer.vocabulary[:4] == list(SPECIAL_TOKENS)
    assert tokenizer.vocabulary_size == len(tokenizer.vocabulary) <= 400
    characters = {t for t in tokenizer.vocabulary[4:] if len(t) == 1}
    assert all("##" + c in tokenizer.vocabulary for c in characters)


def test_too_small_vocab_size_names_the_key_and_the_real_minimum():
    texts = ["abc cab bca"] * 3  # 3 characters: 4 + 2 * 3 = 10 ids at least.
    with pytest.raises(UserError, match=r"data\.vocab_size=5 .* at least 6"):
        WordPieceTokenizer.train(texts, vocab_size=5)
    with pytest.raises(UserError, match=r"data\.vocab_size=9 .* at least 10"):
        WordPieceTokenizer.train(texts, vocab_size=9)
    tokenizer = WordPieceTokenizer.train(texts, vocab_size=10)
    assert strings_of(tokenizer, tokenizer.tokenize(["cab  abc"])) == ["cab abc"]
