"""WordPiece tokenizer (cased, BERT-style splitting)."""

import json
import os
from typing import Iterable, Sequence

import tensorflow as tf

from tfllm.errors import UserError
from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import UNK_ID
from tfllm.tokenizers.tokenizer import Tokenizer
from tfllm.tokenizers.tokenizer import check_vocab_size
from tfllm.tokenizers.tokenizer import keras_hub
from tfllm.tokenizers.tokenizer import load_json
from tfllm.tokenizers.tokenizer import read_training_texts

VOCABULARY_FILENAME = "vocabulary.json"
SUFFIX_INDICATOR = "##"


class WordPieceTokenizer(Tokenizer):
    """Cased WordPiece over words, punctuation marks and CJK characters.

    Text is split on whitespace and control characters (which are dropped)
    and around every punctuation mark and CJK character (which become words
    of their own); each word is then cut into the longest vocabulary pieces,
    continuation pieces written with a leading "##". Nothing is lowercased
    and accents are kept. A word that cannot be pieced (or longer than 100
    bytes) becomes `<unk>` as a whole.

    Detokenizing is lossy for whitespace: words are joined by one space, so
    `detokenize(tokenize(x))` equals `x` with every run of whitespace and
    control characters (`\\s`, `\\p{Cc}`, `\\p{Cf}`) replaced by one space and
    a space inserted between a word and a neighbouring punctuation mark or CJK
    character. With all whitespace removed from both sides, the two are equal
    when every word could be pieced.

    Args:
        vocabulary: list of str. Token of id i; ids 0-3 are `<pad>`, `<eos>`,
            `<unk>`, `<mask>`.

    Call arguments: see `Tokenizer`.

    Example:
    ```python
    tokenizer = WordPieceTokenizer(vocabulary=["<pad>", "<eos>", "<unk>", "<mask>", "a", "b", "##b"])
    tokenizer.tokenize("ab  b")                   # [4, 6, 5]
    tokenizer.detokenize([4, 6, 5])               # b"ab b"
    ```
    """

    kind = "wordpiece"

    def __init__(self, *, vocabulary: Sequence[str], lowercase: bool = False, oov_token: str = SPECIAL_TOKENS[UNK_ID]):
        vocabulary = [str(token) for token in vocabulary]
        self._check_vocabulary(vocabulary)
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary tokens must be distinct.")
        super().__init__(vocabulary_size=len(vocabulary))
        self.vocabulary = vocabulary
        self.lowercase = lowercase
        # BERT's basic tokenizer: lower-casing strips accents too (`do_lower_case`).
        self._wordpiece = keras_hub().tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary,
            lowercase=lowercase,
            strip_accents=lowercase,
            split_on_cjk=True,
            suffix_indicator=SUFFIX_INDICATOR,
            oov_token=oov_token,
            dtype="int32",
        )

    @staticmethod
    def _check_vocabulary(vocabulary):
        if tuple(vocabulary[:NUM_SPECIAL_TOKENS]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}. Received: {vocabulary[:4]}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_chars: int = 20_000_000) -> "WordPieceTokenizer":
        """Learns the vocabulary with `keras_hub.tokenizers.compute_word_piece_vocabulary`."""
        check_vocab_size(
            cls.kind, vocab_size, NUM_SPECIAL_TOKENS + 2, "4 reserved ids and a character alone and as a suffix"
        )
        documents = read_training_texts(cls.kind, texts, max_chars)
        vocabulary = _learn(documents, vocab_size)
        if not _is_complete(vocabulary):
            # The learner cut the alphabet short to fit vocab_size; learning
            # without a cap tells how large the alphabet really is.
            minimum = NUM_SPECIAL_TOKENS + 2 * len(_alphabet(_learn(documents, 1 << 20)))
            raise UserError(
                f"data.vocab_size={vocab_size} is too small for the wordpiece tokenizer on this text: it needs at "
                f"least {minimum} (4 reserved ids and every character both as a word start and as a "
                f"'{SUFFIX_INDICATOR}' suffix). Raise data.vocab_size in the config."
            )
        return cls(vocabulary=vocabulary)

    def _tokenize_batch(self, strings):
        # tensorflow-text's regex split ends a string at NUL; as a control
        # character NUL is whitespace to WordPiece anyway.
        strings = tf.strings.regex_replace(strings, "\x00", " ")
        return self._wordpiece.tokenize(strings)

    def _detokenize_batch(self, ids):
        return self._wordpiece.detokenize(ids)

    def _write_files(self, directory):
        with open(os.path.join(directory, VOCABULARY_FILENAME), "w", encoding="utf-8") as file:
            json.dump(self.vocabulary, file, ensure_ascii=False)
        return {"lowercase": self.lowercase, "suffix_indicator": SUFFIX_INDICATOR}

    @classmethod
    def from_directory(cls, directory, config):
        return cls(vocabulary=load_json(os.path.join(directory, VOCABULARY_FILENAME)))

    def id_to_token(self, id):
        self._check_id(id)
        return self.vocabulary[id]

    def token_to_id(self, token):
        return self._wordpiece.token_to_id(token)


def _learn(documents: list[str], vocab_size: int) -> list[str]:
    return keras_hub().tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(documents),
        vocab_size,
        lowercase=False,
        strip_accents=False,
        split_on_cjk=True,
        suffix_indicator=SUFFIX_INDICATOR,
        reserved_tokens=list(SPECIAL_TOKENS),
    )


def _alphabet(vocabulary: list[str]) -> set[str]:
    singles = {t for t in vocabulary[NUM_SPECIAL_TOKENS:] if len(t) == 1}
    suffixes = {t[len(SUFFIX_INDICATOR) :] for t in vocabulary if t.startswith(SUFFIX_INDICATOR) and len(t) == 3}
    return singles | suffixes


def _is_complete(vocabulary: list[str]) -> bool:
    """Whether every character is there both alone and as a "##" suffix.

    Without its suffix piece, a character turns every word holding it past
    the first position into `<unk>`.
    """
    pieces = set(vocabulary)
    return all(c in pieces and SUFFIX_INDICATOR + c in pieces for c in _alphabet(vocabulary))
