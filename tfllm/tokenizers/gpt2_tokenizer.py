"""GPT-2's byte-level BPE as a checkpoint ships it (its ids, its merges, its pre-tokenizer), and
the same BPE behind the pre-tokenizer patterns of the families that took it over (Llama 3, Qwen2)."""

from typing import Iterable, Mapping, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tfllm.tokenizers.byte_pair_tokenizer import _SPACE, BytePairTokenizer, _check_vocabulary
from tfllm.tokenizers.byte_pair_tokenizer import read_vocabulary_and_merges
from tfllm.tokenizers.tokenizer import ImportedTokenizer, lookup_table

# The Split patterns of a tokenizer.json (Hugging Face `tokenizers`, Oniguruma) run in-graph, by
# the family that introduced them. `tokenizers` builds GPT-2's into its ByteLevel pre-tokenizer.
PATTERNS = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+",
}
# RE2 has no look-ahead. `\s+(?!\S)` ends a whitespace run one character early when text follows,
# so that character (a space before a word joins the word) starts what follows; cutting the text
# before that character first, then matching the pattern without the look-ahead, gives the same
# pre-tokens.
_LOOK_AHEAD = r"|\s+(?!\S)"
# 0xFE never occurs in UTF-8: it marks the cuts.
_CUT = b"\xfe"
_NOT_SPACE = f"[^{_SPACE}]"
# Where the cut goes: before the last character of a run of two or more whitespace characters
# that text follows. A pattern with `\s*[\r\n]+` ends a run at its last newline instead, so a run
# whose last character is \r or \n is not cut there.
_CUT_BEFORE_LAST = rf"([{_SPACE}]+)([{_SPACE}]{_NOT_SPACE})"
_SPACE_BUT_NEWLINE = r"\t\x{0B}\f \x{85}\p{Z}"  # `_SPACE` without \r and \n
_CUT_BEFORE_LAST_UNLESS_NEWLINE = rf"([{_SPACE}]+)([{_SPACE_BUT_NEWLINE}]{_NOT_SPACE})"


def re2_pattern(pattern: str) -> str:
    """`pattern` as RE2 matches it after the cut: without its look-ahead, `\\s` spelled out
    (RE2's is ASCII-only, Oniguruma's is Unicode)."""
    return pattern.replace(_LOOK_AHEAD, "").replace(r"[^\s", f"[^{_SPACE}").replace(r"\s", f"[{_SPACE}]")


class Gpt2Tokenizer(ImportedTokenizer, BytePairTokenizer):
    """The byte-level BPE of a checkpoint (GPT-2's `vocab.json` and `merges.txt`, or a
    `tokenizer.json`), with its ids and its pre-tokenizer.

    Pre-tokens are those of the pattern `PATTERNS[pre_tokenizer]` (GPT-2's for this class, see
    `Llama3Tokenizer` and `Qwen2Tokenizer`), whose look-ahead `\\s+(?!\\S)` RE2 lacks: each
    whitespace run that text follows is cut before its last character (unless that is a newline
    and the pattern keeps newline runs whole), then each piece is split with `re2_pattern`. Ids
    equal Hugging Face `tokenizers`' on ordinary text; special tokens written in the text
    (`<|endoftext|>`) are tokenized as text.

    Args:
        vocabulary: dict of str to int. Byte-level token -> id, the checkpoint's own, its added
            tokens included.
        merges: list of str. Merge rules "a b", highest priority first.
        eos_id: int. The end-of-text id (GPT-2: `<|endoftext|>`, 50256); generation stops at it,
            documents are separated by it, and it pads.
        start_id: int or None. Put in front of every prompt; GPT-2 puts nothing (None).
        special_ids: iterable of int. The special tokens (tokenizer.json's `added_tokens` with
            `special`): they carry no text and `detokenize` drops them.
        nfc: bool. Compose the text to Unicode NFC first (Qwen2's normalizer).
        ignore_merges: bool. A pre-token that is itself in the vocabulary is that token, merged
            or not (the BPE model's `ignore_merges`, which Llama 3 sets).
    """

    kind = "gpt2_bpe"
    pre_tokenizer = "gpt2"
    mask_id = None

    def __init__(self, *, vocabulary: Mapping[str, int], merges: Sequence[str], eos_id: int,
                 start_id: int | None = None, special_ids: Iterable[int] = (), nfc: bool = False,
                 ignore_merges: bool = False):
        self.eos_id = self.pad_id = int(eos_id)
        self.start_id = None if start_id is None else int(start_id)
        self.special_ids = tuple(sorted({int(id) for id in special_ids}))
        self.textless_ids = tuple(sorted({self.eos_id, *self.special_ids}))
        self.nfc = bool(nfc)
        self.ignore_merges = bool(ignore_merges)
        pattern = PATTERNS[self.pre_tokenizer]
        self._split_pattern = re2_pattern(pattern)
        self._cut_pattern = _CUT_BEFORE_LAST_UNLESS_NEWLINE if r"[\r\n]+" in pattern else _CUT_BEFORE_LAST
        super().__init__(vocabulary=vocabulary, merges=merges)
        if self.ignore_merges:
            special = set(self.special_ids)
            words = {token: id for token, id in self.vocabulary.items() if id not in special}
            self._word_ids = lookup_table(list(words), list(words.values()), -1)

    @staticmethod
    def _check_vocabulary(vocabulary, merges):
        _check_vocabulary(vocabulary, merges, reserved=())

    def _tokenize_batch(self, strings):
        if self.nfc:
            strings = tf_text.normalize_utf8(strings, "NFC")
        return super()._tokenize_batch(strings)

    def _pre_tokens(self, strings):
        cut = tf.strings.regex_replace(strings, self._cut_pattern, rb"\1" + _CUT + rb"\2")
        segments = tf.strings.split(cut, sep=_CUT)  # (batch, segments)
        pieces = super()._pre_tokens(segments.flat_values)  # (segments, pre-tokens)
        return segments.with_flat_values(pieces).merge_dims(1, 2)  # (batch, pre-tokens)

    def _merge(self, words):
        if self.ignore_merges:
            self._cache_whole_words(words)
        return super()._merge(words)

    def _cache_whole_words(self, words):
        """Puts the pre-tokens not yet cached that are a vocabulary token into the merge cache as
        that token, so that merging never splits them."""
        bpe = self._bpe
        unseen = tf.boolean_mask(words, bpe.cache.lookup(words) == "")
        symbols = tf.strings.reduce_join(bpe.byte2unicode.lookup(tf.strings.bytes_split(unseen)), axis=-1)
        whole = self._word_ids.lookup(symbols) >= 0
        bpe.cache.insert(tf.boolean_mask(unseen, whole), tf.boolean_mask(symbols, whole))

    def _write_files(self, directory):
        super()._write_files(directory)
        return {"eos_id": self.eos_id, "start_id": self.start_id, "special_ids": list(self.special_ids),
                "nfc": self.nfc, "ignore_merges": self.ignore_merges}

    @classmethod
    def from_directory(cls, directory, config):
        # Runs saved before Llama 3 and Qwen2 were supported lack the last three keys.
        return cls(**read_vocabulary_and_merges(directory), eos_id=config["eos_id"], start_id=config["start_id"],
                   special_ids=config.get("special_ids", ()), nfc=config.get("nfc", False),
                   ignore_merges=config.get("ignore_merges", False))


class Llama3Tokenizer(Gpt2Tokenizer):
    """`Gpt2Tokenizer` behind Llama 3's pattern (`PATTERNS["llama3"]`)."""

    kind = "llama3_bpe"
    pre_tokenizer = "llama3"


class Qwen2Tokenizer(Gpt2Tokenizer):
    """`Gpt2Tokenizer` behind Qwen2's pattern (`PATTERNS["qwen2"]`: digits one by one)."""

    kind = "qwen2_bpe"
    pre_tokenizer = "qwen2"
