"""Character (Unicode code point) tokenizer."""

import collections
import json
import os
from typing import Iterable, Sequence

import tensorflow as tf

from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import UNK_ID
from tfllm.tokenizers.tokenizer import Tokenizer
from tfllm.tokenizers.tokenizer import check_vocab_size
from tfllm.tokenizers.tokenizer import load_json
from tfllm.tokenizers.tokenizer import lookup_table
from tfllm.tokenizers.tokenizer import read_training_texts

CODE_POINTS_FILENAME = "code_points.json"


class CharTokenizer(Tokenizer):
    """One token per Unicode code point, the most frequent ones first.

    Id `4 + i` is `code_points[i]`; every other code point maps to `<unk>` (2)
    and so does not survive a round trip. Text made only of known code points
    round-trips exactly, whitespace and control characters included.

    Args:
        code_points: list of int. The code points of ids 4, 5, ..., distinct.

    Call arguments: see `Tokenizer`.

    Example:
    ```python
    tokenizer = CharTokenizer.train(["abcab"], vocab_size=8)
    tokenizer.tokenize("cab")                     # [6, 4, 5]
    ```
    """

    kind = "char"

    def __init__(self, *, code_points: Sequence[int]):
        code_points = [int(c) for c in code_points]
        if len(set(code_points)) != len(code_points):
            raise ValueError(f"code_points must be distinct. Received {len(code_points)} with duplicates.")
        super().__init__(vocabulary_size=NUM_SPECIAL_TOKENS + len(code_points))
        self.code_points = code_points
        ids = tf.range(NUM_SPECIAL_TOKENS, self.vocabulary_size, dtype=tf.int32)
        # Keys are int32 so that an empty vocabulary still builds a typed table.
        points = tf.constant(code_points, dtype=tf.int32)
        self._point_to_id = lookup_table(points, ids, UNK_ID)
        self._id_to_point = lookup_table(ids, points, -1)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_chars: int = 20_000_000) -> "CharTokenizer":
        """Keeps the `vocab_size - 4` most frequent code points (ties by code point)."""
        check_vocab_size(cls.kind, vocab_size, NUM_SPECIAL_TOKENS + 1, "4 reserved ids and 1 character")
        counts = collections.Counter()
        for text in read_training_texts(cls.kind, texts, max_chars):
            counts.update(text)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], ord(item[0])))
        return cls(code_points=[ord(char) for char, _ in ranked[: vocab_size - NUM_SPECIAL_TOKENS]])

    def _tokenize_batch(self, strings):
        points = tf.strings.unicode_decode(strings, "UTF-8", errors="replace")  # (batch, None)
        return tf.ragged.map_flat_values(self._point_to_id.lookup, points)

    def _detokenize_batch(self, ids):
        points = tf.ragged.map_flat_values(self._id_to_point.lookup, ids)
        # Ids past the vocabulary have no code point: drop them like reserved ids.
        points = tf.ragged.boolean_mask(points, points >= 0)
        return tf.strings.unicode_encode(points, "UTF-8")

    def _write_files(self, directory):
        with open(os.path.join(directory, CODE_POINTS_FILENAME), "w", encoding="utf-8") as file:
            json.dump(self.code_points, file)
        return {}

    @classmethod
    def from_directory(cls, directory, config):
        return cls(code_points=load_json(os.path.join(directory, CODE_POINTS_FILENAME)))

    def id_to_token(self, id):
        self._check_id(id)
        if id < NUM_SPECIAL_TOKENS:
            return SPECIAL_TOKENS[id]
        return chr(self.code_points[id - NUM_SPECIAL_TOKENS])

    def token_to_id(self, token):
        if token in SPECIAL_TOKENS:
            return SPECIAL_TOKENS.index(token)
        if len(token) == 1 and ord(token) in self.code_points:
            return NUM_SPECIAL_TOKENS + self.code_points.index(ord(token))
        raise ValueError(f"Token {token!r} is not in the vocabulary.")
