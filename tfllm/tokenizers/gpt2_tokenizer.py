"""GPT-2's own byte-level BPE, as a checkpoint ships it: its ids, its merges, its pre-tokenizer."""

from typing import Mapping, Sequence

import tensorflow as tf

from tfllm.tokenizers.byte_pair_tokenizer import _SPACE, BytePairTokenizer, _check_vocabulary
from tfllm.tokenizers.byte_pair_tokenizer import read_vocabulary_and_merges
from tfllm.tokenizers.tokenizer import ImportedTokenizer

# 0xFE never occurs in UTF-8: it marks where GPT-2's look-ahead would end a whitespace run.
_CUT = b"\xfe"
# A run of two or more whitespace characters, then a non-space: GPT-2's `\s+(?!\S)` stops the
# run one character early, so that character (a space before a word joins the word) starts what
# follows. RE2 has no look-ahead; cutting the text there first gives the same pre-tokens.
_RUN_BEFORE_TEXT = rf"([{_SPACE}]+)([{_SPACE}][^{_SPACE}])"


class Gpt2Tokenizer(ImportedTokenizer, BytePairTokenizer):
    """The byte-level BPE of a GPT-2 checkpoint (`vocab.json` and `merges.txt`), with its ids.

    Pre-tokens are GPT-2's: its pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+|
    ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`, whose look-ahead RE2 lacks, is matched by cutting each
    whitespace run before its last character when text follows, then splitting each piece with
    `SPLIT_PATTERN` (the same pattern without the look-ahead). Ids equal Hugging Face
    `tokenizers`' on ordinary text; special tokens written in the text (`<|endoftext|>`) are
    tokenized as text.

    Args:
        vocabulary: dict of str to int. Byte-level token -> id, the checkpoint's own.
        merges: list of str. Merge rules "a b", highest priority first.
        eos_id: int. The end-of-text id (GPT-2: `<|endoftext|>`, 50256); generation stops at it,
            documents are separated by it, and it pads.
        start_id: int or None. Put in front of every prompt; GPT-2 puts nothing (None).
    """

    kind = "gpt2_bpe"
    mask_id = None

    def __init__(self, *, vocabulary: Mapping[str, int], merges: Sequence[str], eos_id: int,
                 start_id: int | None = None):
        self.eos_id = self.pad_id = int(eos_id)
        self.start_id = None if start_id is None else int(start_id)
        self.textless_ids = (self.eos_id,)
        super().__init__(vocabulary=vocabulary, merges=merges)

    @staticmethod
    def _check_vocabulary(vocabulary, merges):
        _check_vocabulary(vocabulary, merges, reserved=())

    def _pre_tokens(self, strings):
        cut = tf.strings.regex_replace(strings, _RUN_BEFORE_TEXT, rb"\1" + _CUT + rb"\2")
        segments = tf.strings.split(cut, sep=_CUT)  # (batch, segments)
        pieces = super()._pre_tokens(segments.flat_values)  # (segments, pre-tokens)
        return segments.with_flat_values(pieces).merge_dims(1, 2)  # (batch, pre-tokens)

    def _write_files(self, directory):
        super()._write_files(directory)
        return {"eos_id": self.eos_id, "start_id": self.start_id}

    @classmethod
    def from_directory(cls, directory, config):
        return cls(**read_vocabulary_and_merges(directory), eos_id=config["eos_id"], start_id=config["start_id"])
