"""BytePairTokenizer (tfllm/tokenizers/byte_pair_tokenizer.py)."""

import numpy as np
import pytest
import tokenizers
from tests.tokenizers.tokenizer_testing import CORPUS
from tests.tokenizers.tokenizer_testing import UNICODE_TEXTS
from tests.tokenizers.tokenizer_testing import ids_of
from tests.tokenizers.tokenizer_testing import strings_of

from tfllm.errors import UserError
from tfllm.tokenizers import BytePairTokenizer
from tfllm.tokenizers.byte_pair_tokenizer import SPLIT_PATTERN

# Characters other BPE graphs get wrong: U+096C (KerasHub's split marker),
# NUL (ends strings in tensorflow-text's regex split), combining marks,
# zero-width joiners, exotic spaces, SentencePiece's meta symbol.
HARD_TEXTS = [
    "६ १६ a६",
    "a\x00b\x7f",
    "e\u0301\u200dx",
    "\xa0\u3000\u2009\v\x85\u2028",
    "\u2581x",
    "<pad> <mask>",
    "",
]


def random_unicode(seed, count=20, length=30):
    """Strings of code points drawn from ASCII, Latin-1, CJK, emoji and controls."""
    rng = np.random.default_rng(seed)
    blocks = [(0, 0x80), (0x80, 0x250), (0x4E00, 0x4E80), (0x1F300, 0x1F380), (0x2000, 0x2070)]
    texts = []
    for _ in range(count):
        starts = rng.integers(0, len(blocks), size=length)
        texts.append("".join(chr(rng.integers(*blocks[b])) for b in starts))
    return texts


def huggingface_reference(tokenizer):
    """A Hugging Face BPE with the same vocabulary, merges and pre-tokenization."""
    model = tokenizers.models.BPE(
        vocab=dict(tokenizer.vocabulary), merges=[tuple(merge.split(" ")) for merge in tokenizer.merges]
    )
    reference = tokenizers.Tokenizer(model)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return reference


def test_arbitrary_unicode_round_trips_exactly(trained):
    tokenizer = trained["bpe"]
    texts = UNICODE_TEXTS + HARD_TEXTS + random_unicode(seed=1)
    assert strings_of(tokenizer, tokenizer.tokenize(texts)) == texts


def test_ids_equal_hugging_face_tokenizers(trained):
    tokenizer = trained["bpe"]
    reference = huggingface_reference(tokenizer)
    texts = CORPUS + UNICODE_TEXTS + HARD_TEXTS + random_unicode(seed=2)
    assert ids_of(tokenizer, texts) == [encoding.ids for encoding in reference.encode_batch(texts)]


def test_training_layout(trained):
    tokenizer = trained["bpe"]
    assert 260 < tokenizer.vocabulary_size <= 400
    assert tokenizer.vocabulary_size == len(tokenizer.merges) + 260
    assert sorted(tokenizer.vocabulary.values()) == list(range(tokenizer.vocabulary_size))
    assert all(tokenizer.token_to_id(tokenizer.id_to_token(i)) == i for i in range(tokenizer.vocabulary_size))
    # A word seen often in training is one token, with its leading space.
    assert len(ids_of(tokenizer, [" the"])[0]) == 1


def test_too_small_vocab_size_names_the_key_and_minimum():
    with pytest.raises(UserError, match=r"data\.vocab_size=259 .* at least 260"):
        BytePairTokenizer.train(["abc"], vocab_size=259)


def test_smallest_vocabulary_is_bytes_only():
    tokenizer = BytePairTokenizer.train(["hello hello"], vocab_size=260)
    assert tokenizer.vocabulary_size == 260 and tokenizer.merges == []
    assert ids_of(tokenizer, ["hi"]) == [[tokenizer.token_to_id("h"), tokenizer.token_to_id("i")]]
    assert strings_of(tokenizer, tokenizer.tokenize(["日本"])) == ["日本"]


def test_incomplete_vocabulary_is_rejected(trained):
    vocabulary = dict(trained["bpe"].vocabulary)
    vocabulary["zz-renamed"] = vocabulary.pop("Ā")  # The symbol of byte 0.
    with pytest.raises(ValueError, match="byte symbols"):
        BytePairTokenizer(vocabulary=vocabulary, merges=[])
    with pytest.raises(ValueError, match="merge"):
        BytePairTokenizer(vocabulary=trained["bpe"].vocabulary, merges=["a b c"])
