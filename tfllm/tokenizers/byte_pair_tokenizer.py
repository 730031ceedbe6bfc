"""Byte-level byte-pair-encoding tokenizer (GPT-2 style)."""

import json
import os
from typing import Iterable, Mapping, Sequence

import tensorflow as tf
import tokenizers

from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import Tokenizer
from tfllm.tokenizers.tokenizer import check_vocab_size
from tfllm.tokenizers.tokenizer import keras_hub
from tfllm.tokenizers.tokenizer import load_json
from tfllm.tokenizers.tokenizer import lookup_table
from tfllm.tokenizers.tokenizer import read_training_texts

VOCABULARY_FILENAME = "vocab.json"
MERGES_FILENAME = "merges.txt"

# Whitespace spelled out so that RE2 (in-graph) and Oniguruma (Hugging Face,
# training) agree: RE2's `\s` is ASCII-only and Oniguruma's is not.
_SPACE = r"\t\n\x{0B}\f\r \x{85}\p{Z}"
# GPT-2's pre-token pattern without its look-ahead, which RE2 lacks: a run of
# spaces stays one pre-token instead of lending its last space to the next
# word. Every character matches one branch, so splitting loses nothing.
SPLIT_PATTERN = (
    rf"'(?:s|t|re|ve|m|ll|d)| ?\p{{L}}+| ?\p{{N}}+| ?[^\p{{L}}\p{{N}}{_SPACE}]+|[{_SPACE}]+"
)
# 0xFF never occurs in UTF-8, so it can mark pre-token starts unambiguously.
_MARK = b"\xff"


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0-255, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = (b for b in range(256) if b not in printable)
    symbols = {b: chr(b) for b in printable}
    symbols.update({b: chr(256 + i) for i, b in enumerate(others)})
    return [symbols[b] for b in range(256)]


def _pre_tokenizer():
    """Hugging Face pre-tokenizer doing exactly what `_tokenize_batch` does."""
    return tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


class BytePairTokenizer(Tokenizer):
    """Byte-level BPE: any Unicode text round-trips exactly.

    Text is split into pre-tokens with `SPLIT_PATTERN` (words with their
    leading space, numbers, punctuation runs, whitespace runs), each
    pre-token's UTF-8 bytes are written with GPT-2's byte-to-symbol alphabet,
    and merges are applied in rank order by the in-graph merge loop and cache
    of `keras_hub.tokenizers.BytePairTokenizer`. The split is done here, not
    by KerasHub, because KerasHub's split deletes U+096C (its internal
    marker) and tensorflow-text's regex split ends a string at NUL. The ids
    equal those of a Hugging Face `tokenizers` BPE with the same vocabulary,
    merges and pre-tokenization, which is how the merges were learned.

    Merged pre-tokens are cached in a mutable hash table that grows with the
    number of distinct pre-tokens seen: repeated words cost a lookup, and a
    long training run holds every distinct pre-token of its corpus.

    Args:
        vocabulary: dict of str to int. Byte-level token -> id; ids 0-3 are
            `<pad>`, `<eos>`, `<unk>`, `<mask>`; all 256 byte symbols present.
        merges: list of str. Merge rules "a b", highest priority first.

    Call arguments: see `Tokenizer`. `detokenize` returns raw bytes, which
    are not valid UTF-8 when the ids cut a multi-byte character.

    Example:
    ```python
    tokenizer = BytePairTokenizer.train(texts, vocab_size=4096)
    tokenizer.detokenize(tokenizer.tokenize(["naïve  日本 🎉"]))   # exact
    ```
    """

    kind = "bpe"

    def __init__(self, *, vocabulary: Mapping[str, int], merges: Sequence[str]):
        vocabulary = {str(token): int(id) for token, id in vocabulary.items()}
        merges = [str(merge) for merge in merges]
        self._check_vocabulary(vocabulary, merges)
        super().__init__(vocabulary_size=len(vocabulary))
        self.vocabulary = vocabulary
        self.merges = merges
        self._tokens = sorted(vocabulary, key=vocabulary.get)
        symbols = byte_symbols()
        self._byte_ids = lookup_table([bytes([b]) for b in range(256)], [vocabulary[s] for s in symbols], -1)
        to_byte = {symbol: b for b, symbol in enumerate(symbols)}
        text_ids = [id for id in range(len(self._tokens)) if id not in set(self.textless_ids)]
        token_bytes = [b"".join(bytes([to_byte[c]]) for c in self._tokens[id]) for id in text_ids]
        self._id_to_bytes = lookup_table(text_ids, token_bytes, b"")
        # KerasHub cannot build its tables from an empty merge list; without
        # merges every byte is its own token anyway. No unsplittable tokens:
        # "<pad>" in the text is ordinary text.
        self._bpe = None
        if merges:
            self._bpe = keras_hub().tokenizers.BytePairTokenizer(
                vocabulary=vocabulary, merges=merges, unsplittable_tokens=[], dtype="int32"
            )

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_chars: int = 20_000_000) -> "BytePairTokenizer":
        """Learns merges with Hugging Face `tokenizers` (BpeTrainer, min frequency 2)."""
        check_vocab_size(cls.kind, vocab_size, NUM_SPECIAL_TOKENS + 256, "4 reserved ids and 256 byte tokens")
        documents = read_training_texts(cls.kind, texts, max_chars)
        model = tokenizers.Tokenizer(tokenizers.models.BPE())
        model.pre_tokenizer = _pre_tokenizer()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        model.train_from_iterator(documents, trainer=trainer, length=len(documents))
        learned = json.loads(model.to_str())["model"]
        return cls(vocabulary=learned["vocab"], merges=merge_strings(learned["merges"]))

    @staticmethod
    def _check_vocabulary(vocabulary, merges):
        _check_vocabulary(vocabulary, merges, SPECIAL_TOKENS)

    _split_pattern = SPLIT_PATTERN

    def _pre_tokens(self, strings):
        """string (batch,) -> ragged (batch, pre-tokens): `_split_pattern`'s matches."""
        marked = tf.strings.regex_replace(strings, self._split_pattern, _MARK + rb"\0")
        pieces = tf.strings.split(marked, sep=_MARK)  # (batch, None)
        return tf.ragged.boolean_mask(pieces, pieces != "")  # (batch, pre-tokens)

    def _tokenize_batch(self, strings):
        if self._bpe is None:
            return self._byte_ids.lookup(tf.strings.bytes_split(strings))  # (batch, None)
        pieces = self._pre_tokens(strings)
        merged = self._merge(pieces.flat_values)  # (pre-tokens,) like "Ġhel lo"
        ids = self._bpe.token_to_id_map.lookup(tf.strings.split(merged, sep=" "))  # (pre-tokens, None)
        return pieces.with_flat_values(ids).merge_dims(1, 2)  # (batch, None)

    def _merge(self, words):
        """Each pre-token's merged symbols joined by spaces, from the cache when seen."""
        bpe = self._bpe
        cached = bpe.cache.lookup(words)
        unseen = cached == ""

        def merge_unseen():
            # A batch repeats words a lot; merging each distinct one once is
            # what keeps cold batches fast.
            distinct, _ = tf.unique(tf.boolean_mask(words, unseen))
            # KerasHub's own merge step (private; keras-hub is pinned in setup.py).
            bpe._bpe_merge_and_update_cache_tf(distinct)
            return bpe.cache.lookup(words)

        return tf.cond(tf.reduce_any(unseen), merge_unseen, lambda: cached)

    def _detokenize_batch(self, ids):
        return tf.strings.reduce_join(self._id_to_bytes.lookup(ids), axis=-1)

    def _write_files(self, directory):
        with open(os.path.join(directory, VOCABULARY_FILENAME), "w", encoding="utf-8") as file:
            json.dump(self.vocabulary, file, ensure_ascii=False)
        with open(os.path.join(directory, MERGES_FILENAME), "w", encoding="utf-8") as file:
            file.write("#version: 0.2\n" + "".join(merge + "\n" for merge in self.merges))
        return {}

    @classmethod
    def from_directory(cls, directory, config):
        return cls(**read_vocabulary_and_merges(directory))

    def id_to_token(self, id):
        self._check_id(id)
        return self._tokens[id]

    def token_to_id(self, token):
        if token not in self.vocabulary:
            raise ValueError(f"Token {token!r} is not in the vocabulary.")
        return self.vocabulary[token]


def merge_strings(merges):
    """Merge rules as "a b" strings: newer `tokenizers` write them as pairs, older ones as "a b"."""
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]


def read_vocabulary_and_merges(directory):
    """`{"vocabulary": ..., "merges": [...]}` from `vocab.json` and `merges.txt` in `directory`."""
    vocabulary = load_json(os.path.join(directory, VOCABULARY_FILENAME))
    with open(os.path.join(directory, MERGES_FILENAME), encoding="utf-8") as file:
        merges = [line.rstrip("\n") for line in file if line.strip() and not line.startswith("#version")]
    return {"vocabulary": vocabulary, "merges": merges}


def _check_vocabulary(vocabulary: dict, merges: list, reserved: Sequence[str]) -> None:
    """ValueError unless the files describe a complete byte-level BPE whose first ids are the
    `reserved` tokens."""
    if sorted(vocabulary.values()) != list(range(len(vocabulary))):
        raise ValueError("vocabulary ids must be 0, 1, ..., len(vocabulary) - 1 without gaps.")
    for id, token in enumerate(reserved):
        if vocabulary.get(token) != id:
            raise ValueError(f"vocabulary must map {token!r} to {id}. Received: {vocabulary.get(token)!r}")
    missing = [s for s in byte_symbols() if s not in vocabulary]
    if missing:
        raise ValueError(f"vocabulary lacks {len(missing)} of the 256 byte symbols, e.g. {missing[0]!r}.")
    for merge in merges:
        parts = merge.split(" ")
        if len(parts) != 2 or "".join(parts) not in vocabulary:
            raise ValueError(f"merge {merge!r} must be two tokens whose concatenation is in the vocabulary.")
