"""SentencePieceTokenizer (tfllm/tokenizers/sentence_piece_tokenizer.py)."""

import pytest
import sentencepiece
from tests.tokenizers.tokenizer_testing import CORPUS
from tests.tokenizers.tokenizer_testing import UNICODE_TEXTS
from tests.tokenizers.tokenizer_testing import ids_of
from tests.tokenizers.tokenizer_testing import strings_of

from tfllm.errors import UserError
from tfllm.tokenizers import SentencePieceTokenizer

# U+2581 is SentencePiece's own stand-in for a space; NUL, combining marks,
# zero-width joiners and characters never seen in training fall back to bytes.
HARD_TEXTS = [
    "\u2581",
    "a\u2581b\u2581\u2581c\u2581",
    "a\x00b\x7f",
    "e\u0301\u200dx",
    "\U0001f9ea ᚠ ꙮ",
    "<mask>",
    "",
]


def test_arbitrary_unicode_round_trips_exactly(trained):
    tokenizer = trained["sentencepiece"]
    texts = UNICODE_TEXTS + HARD_TEXTS + CORPUS[:2]
    assert strings_of(tokenizer, tokenizer.tokenize(texts)) == texts


def test_segmentation_is_as_likely_as_the_sentencepiece_library(trained):
    # tensorflow-text bundles its own SentencePiece, which breaks ties between
    # equally likely segmentations (e.g. of runs of spaces) differently; the
    # total log-probability of the pieces must still be the library's.
    tokenizer = trained["sentencepiece"]
    reference = sentencepiece.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    texts = CORPUS + UNICODE_TEXTS + [t for t in HARD_TEXTS if "\u2581" not in t]
    ours, theirs = ids_of(tokenizer, texts), reference.encode(texts)
    score = lambda ids: sum(reference.get_score(i) for i in ids)  # noqa: E731
    assert [score(ids) for ids in ours] == pytest.approx([score(ids) for ids in theirs], rel=1e-6)
    assert [len(ids) for ids in ours] == [len(ids) for ids in theirs]
    assert sum(a == b for a, b in zip(ours, theirs)) >= len(texts) // 2


def test_meta_symbol_in_text_is_its_three_bytes(trained):
    tokenizer = trained["sentencepiece"]
    meta = [tokenizer.token_to_id(piece) for piece in ("<0xE2>", "<0x96>", "<0x81>")]
    a, b = ids_of(tokenizer, ["a", "b"])
    assert ids_of(tokenizer, ["a\u2581b", "\u2581\u2581"]) == [a + meta + b, meta + meta]


def test_mask_is_a_control_symbol(trained):
    tokenizer = trained["sentencepiece"]
    assert tokenizer.id_to_token(3) == "<mask>"
    assert 3 not in ids_of(tokenizer, ["<mask>"])[0]


def test_vocabulary_is_smaller_when_text_is_small():
    tokenizer = SentencePieceTokenizer.train(["hello world"] * 5, vocab_size=1000)
    assert 260 < tokenizer.vocabulary_size < 1000
    assert strings_of(tokenizer, tokenizer.tokenize(["hello 日本"])) == ["hello 日本"]


def test_too_small_vocab_size_names_the_key_and_minimum():
    with pytest.raises(UserError, match=r"data\.vocab_size=260 .* at least 261"):
        SentencePieceTokenizer.train(["abc"], vocab_size=260)
    # 4 reserved + 256 bytes + 26 letters (+ SentencePiece's own ▁ piece).
    letters = ["abcdefghijklmnopqrstuvwxyz"] * 3
    with pytest.raises(UserError, match=r"data\.vocab_size=270 .* at least 2[89]\d") as error:
        SentencePieceTokenizer.train(letters, vocab_size=270)
    minimum = int(str(error.value).split("at least ")[1].split(" ")[0])
    assert SentencePieceTokenizer.train(letters, vocab_size=minimum).vocabulary_size <= minimum
