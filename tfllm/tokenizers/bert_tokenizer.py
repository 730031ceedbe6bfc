"""BERT's own WordPiece, as a checkpoint ships it: `vocab.txt`, `do_lower_case`, its special tokens."""

import os

import tensorflow as tf
import tensorflow_text as tf_text

from tfllm.tokenizers.tokenizer import ImportedTokenizer, load_json
from tfllm.tokenizers.word_piece_tokenizer import VOCABULARY_FILENAME, WordPieceTokenizer

# BERT's normalizer (Hugging Face `tokenizers`' BertNormalizer): control and format characters
# and U+FFFD are dropped, every whitespace character becomes a space; lower-casing decomposes
# (NFD, not recomposed), drops the combining marks, then lower-cases. Done here rather than by
# KerasHub's WordPiece, whose lower-casing folds case with NFKC ("ﬁ" -> "fi", "…" -> "...") and
# whose split leaves NBSP, U+3000 and U+2028 inside words.
_DROPPED = r"[^\P{C}\t\n\r]|\x{FFFD}"
_WHITESPACE = r"[\t\n\r\p{Z}]"

SPECIALS = {"pad_id": "[PAD]", "unk_id": "[UNK]", "start_id": "[CLS]", "eos_id": "[SEP]", "mask_id": "[MASK]"}


class BertTokenizer(ImportedTokenizer, WordPieceTokenizer):
    """The WordPiece of a BERT checkpoint with its ids: BERT's basic tokenizer (lower-casing and
    accent stripping when `lowercase`, CJK characters and punctuation split off) and longest-match
    pieces with "##" continuations. `[CLS]` starts every text (`start_id`), `[SEP]` ends it
    (`eos_id`), `[PAD]`, `[MASK]` and `[UNK]` are the other special ids.

    Args:
        vocabulary: list of str. Token of id i (`vocab.txt`, one per line).
        lowercase: bool. The checkpoint's `do_lower_case`.
    """

    kind = "bert_wordpiece"

    def __init__(self, *, vocabulary, lowercase):
        index = {token: id for id, token in enumerate(vocabulary)}
        missing = [token for token in SPECIALS.values() if token not in index]
        if missing:
            raise ValueError(f"vocabulary lacks BERT's special tokens {missing}")
        for name, token in SPECIALS.items():
            setattr(self, name, index[token])
        self.textless_ids = tuple(index[token] for token in SPECIALS.values())
        super().__init__(vocabulary=vocabulary, lowercase=False, oov_token=SPECIALS["unk_id"])
        self.lowercase = bool(lowercase)

    @staticmethod
    def _check_vocabulary(vocabulary):
        pass  # the special tokens are checked by name above, wherever they are

    def _tokenize_batch(self, strings):
        strings = tf.strings.regex_replace(strings, _DROPPED, "")
        strings = tf.strings.regex_replace(strings, _WHITESPACE, " ")
        if self.lowercase:
            strings = tf.strings.regex_replace(tf_text.normalize_utf8(strings, "NFD"), r"\p{Mn}", "")
            strings = tf.strings.lower(strings, encoding="utf-8")
        return super()._tokenize_batch(strings)

    @classmethod
    def from_directory(cls, directory, config):
        return cls(vocabulary=load_json(os.path.join(directory, VOCABULARY_FILENAME)), lowercase=config["lowercase"])
