"""SentencePiece (unigram) tokenizer with byte fallback."""

import io
import os
import re
from typing import Iterable, Iterator

import sentencepiece
import tensorflow as tf

from tfllm import compat
from tfllm.errors import UserError
from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS
from tfllm.tokenizers.tokenizer import Tokenizer
from tfllm.tokenizers.tokenizer import check_vocab_size
from tfllm.tokenizers.tokenizer import read_training_texts

MODEL_FILENAME = "sentencepiece.model"
# SentencePiece's stand-in for a space; a literal one in the text would come
# back as a space, so it is encoded as its three UTF-8 bytes instead.
_META_SYMBOL = "\u2581"
# Training sentences are document pieces of this many characters: long enough
# to learn pieces spanning newlines, short enough for SentencePiece's limits.
_CHUNK_CHARS = 2000


class SentencePieceIds:
    """Mixin: `id_to_token` and `token_to_id` of a tokenizer holding a SentencePiece processor
    (`self._processor`)."""

    def id_to_token(self, id):
        self._check_id(id)
        return self._processor.id_to_piece(id)

    def token_to_id(self, token):
        id = self._processor.piece_to_id(token)
        if self._processor.id_to_piece(id) != token:
            raise ValueError(f"Token {token!r} is not in the vocabulary.")
        return id


class SentencePieceTokenizer(SentencePieceIds, Tokenizer):
    """SentencePiece unigram model applied with tensorflow-text.

    Trained with identity normalization, no dummy prefix and no whitespace
    clean-up, and with byte fallback, so any text round-trips exactly: a
    character without a piece becomes its UTF-8 byte pieces, never `<unk>`.
    `<mask>` (id 3) is a control symbol, so the text "<mask>" is ordinary
    text rather than the mask token.

    Args:
        model_proto: bytes. A serialized SentencePiece model whose ids 0-3 are
            `<pad>`, `<eos>`, `<unk>`, `<mask>` and which has byte pieces.

    Call arguments: see `Tokenizer`.

    Example:
    ```python
    tokenizer = SentencePieceTokenizer.train(texts, vocab_size=4096)
    tokenizer.detokenize(tokenizer.tokenize(["naïve  日本 🎉"]))   # exact
    ```
    """

    kind = "sentencepiece"

    def __init__(self, *, model_proto: bytes):
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        _check_model(self._processor)
        super().__init__(vocabulary_size=self._processor.get_piece_size())
        self.model_proto = model_proto
        meta_bytes = _META_SYMBOL.encode("utf-8")
        self._meta_ids = tf.constant([self._processor.piece_to_id(f"<0x{b:02X}>") for b in meta_bytes], tf.int32)
        self._sentencepiece = compat.sentencepiece_tokenizer(model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_chars: int = 20_000_000) -> "SentencePieceTokenizer":
        """Trains a unigram model; the vocabulary may come out smaller than asked."""
        minimum = NUM_SPECIAL_TOKENS + 256 + 1
        check_vocab_size(cls.kind, vocab_size, minimum, "4 reserved ids, 256 byte pieces and the characters")
        documents = read_training_texts(cls.kind, texts, max_chars)
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=_chunks(documents),
                model_writer=model,
                vocab_size=vocab_size,
                model_type="unigram",
                pad_id=0,
                eos_id=1,
                unk_id=2,
                bos_id=-1,
                pad_piece="<pad>",
                eos_piece="<eos>",
                unk_piece="<unk>",
                control_symbols=["<mask>"],
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                hard_vocab_limit=False,
                max_sentence_length=4 * _CHUNK_CHARS,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as error:
            raise _vocab_size_error(error, vocab_size) from None
        return cls(model_proto=model.getvalue())

    def _tokenize_batch(self, strings):
        segments = tf.strings.split(strings, sep=_META_SYMBOL)  # (batch, segments)
        ids = self._sentencepiece.tokenize(segments.flat_values)  # (segments, None)
        # Each segment but a row's last was followed by the meta symbol.
        starts = segments.row_starts()
        is_last = tf.range(tf.size(segments.flat_values, out_type=tf.int64)) == tf.repeat(
            starts + segments.row_lengths() - 1, segments.row_lengths()
        )
        meta = tf.tile(self._meta_ids[tf.newaxis], [tf.size(is_last), 1])  # (segments, 3)
        meta = tf.ragged.boolean_mask(meta, tf.tile(~is_last[:, tf.newaxis], [1, 3]))
        ids = tf.concat([ids, meta], axis=1)  # (segments, None)
        return segments.with_flat_values(ids).merge_dims(1, 2)  # (batch, None)

    def _detokenize_batch(self, ids):
        return self._sentencepiece.detokenize(ids)

    def _write_files(self, directory):
        with open(os.path.join(directory, MODEL_FILENAME), "wb") as file:
            file.write(self.model_proto)
        return {"model_type": "unigram"}

    @classmethod
    def from_directory(cls, directory, config):
        with open(os.path.join(directory, MODEL_FILENAME), "rb") as file:
            return cls(model_proto=file.read())


def _chunks(documents: list[str]) -> Iterator[str]:
    for document in documents:
        for start in range(0, len(document), _CHUNK_CHARS):
            yield document[start : start + _CHUNK_CHARS]


def _check_model(processor) -> None:
    """ValueError unless the model has the reserved ids and byte pieces."""
    expected = ("<pad>", "<eos>", "<unk>", "<mask>")
    found = tuple(processor.id_to_piece(i) for i in range(min(4, processor.get_piece_size())))
    if found != expected:
        raise ValueError(f"sentencepiece model ids 0-3 must be {expected}. Received: {found}")
    if processor.id_to_piece(processor.piece_to_id("<0xFF>")) != "<0xFF>":
        raise ValueError("sentencepiece model has no byte pieces; train it with byte_fallback=True.")


def _vocab_size_error(error: RuntimeError, vocab_size: int) -> Exception:
    """A `UserError` when SentencePiece found `vocab_size` below what the text needs."""
    match = re.search(r"required_chars\. (\d+) vs (\d+)", str(error))
    if match is None:
        return error
    minimum = int(match.group(2))
    return UserError(
        f"data.vocab_size={vocab_size} is too small for the sentencepiece tokenizer on this text: it needs at least "
        f"{minimum} (4 reserved ids, 256 byte pieces and {minimum - NUM_SPECIAL_TOKENS - 256} characters). "
        "Raise data.vocab_size in the config."
    )
