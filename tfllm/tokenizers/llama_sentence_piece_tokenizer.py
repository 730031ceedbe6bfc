"""The SentencePiece BPE with byte fallback of Llama 2 and Mistral, as a checkpoint ships it
(`tokenizer.model`), with the ids `transformers`' `LlamaTokenizer` gives."""

import functools
import os

import sentencepiece
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from tfllm import compat
from tfllm.tokenizers.sentence_piece_tokenizer import SentencePieceIds
from tfllm.tokenizers.tokenizer import ImportedTokenizer, Tokenizer, lookup_table

MODEL_FILENAME = "tokenizer.model"
_META_SYMBOL = "\u2581".encode("utf-8")  # SentencePiece's stand-in for a space
_BPE = 2  # TrainerSpec.model_type
_USER_DEFINED = 4  # ModelProto.SentencePiece.type


class LlamaSentencePieceTokenizer(ImportedTokenizer, SentencePieceIds, Tokenizer):
    """A checkpoint's SentencePiece BPE model run with tensorflow-text, made to give the ids of
    `transformers`' `LlamaTokenizer` (a `tokenizers` BPE converted from the same model).

    That tokenizer has no normalizer: it turns each space into "▁" and puts one "▁" in front of
    a text that does not already start with one (a space), where SentencePiece's own dummy
    prefix goes in front of every text. So the model runs with SentencePiece's normalization
    and dummy prefix off, and the "▁" is put in front here. `detokenize` decodes as
    `transformers` does (one leading space taken off, a run of byte pieces that is not UTF-8
    becomes one U+FFFD per byte); special tokens carry no text. Special tokens written in the
    text (`<s>`) are tokenized as text by `tokenize`; its `special_tokens` for a chat template
    are the control and unknown pieces (`<s>`, `</s>`, `<unk>`, Mistral's `[INST]`), which
    `transformers` splits off a text.

    Args:
        model_proto: bytes. The checkpoint's `tokenizer.model`: a BPE model with byte pieces.
        eos_id: int. The end-of-text id (Llama 2: `</s>`, 2); generation stops at it and
            documents are separated by it.
        start_id: int or None. Put in front of every prompt (Llama 2: `<s>`, 1).
        add_prefix_space: bool. Put "▁" in front of a text that does not start with a space or
            "▁" (`transformers`' default); False: never.
    """

    kind = "llama_sentencepiece"
    mask_id = None

    def __init__(self, *, model_proto: bytes, eos_id: int, start_id: int | None = None,
                 add_prefix_space: bool = True):
        processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        _check_model(model_proto)
        super().__init__(vocabulary_size=processor.get_piece_size())
        self.model_proto = model_proto
        self._processor = processor
        self.eos_id = int(eos_id)
        self.start_id = None if start_id is None else int(start_id)
        self.add_prefix_space = bool(add_prefix_space)
        # Padded positions are masked, so any id pads; the model's own pad piece when it has one.
        self.pad_id = processor.pad_id() if processor.pad_id() >= 0 else max(processor.unk_id(), 0)
        # Every control piece (Mistral's [INST] too) and the unknown piece decode to nothing
        # (`_piece_bytes`); only the ones with a role are listed.
        self.textless_ids = tuple(sorted({id for id in (processor.unk_id(), processor.bos_id(), processor.eos_id(),
                                                        processor.pad_id(), self.eos_id, self.start_id)
                                          if id is not None and id >= 0}))
        self._sentencepiece = compat.sentencepiece_tokenizer(_without_normalization(model_proto))
        ids = list(range(self.vocabulary_size))
        self._id_to_bytes = lookup_table(ids, [_piece_bytes(processor, id) for id in ids], b"")
        self._is_byte = lookup_table(ids, [int(processor.is_byte(id)) for id in ids], 0)

    def _tokenize_batch(self, strings):
        if self.add_prefix_space:
            bare = ((strings == "") | (tf.strings.substr(strings, 0, 1) == " ")
                    | (tf.strings.substr(strings, 0, len(_META_SYMBOL)) == _META_SYMBOL))
            strings = tf.where(bare, strings, tf.strings.join([" ", strings]))
        return self._sentencepiece.tokenize(strings)  # (batch, None)

    def tokenize_continuations(self, strings):
        # `transformers`' Metaspace puts "▁" in front of the first piece of a text only.
        strings = tf.convert_to_tensor(strings, dtype=tf.string)  # (batch,)
        return tf.cast(self._sentencepiece.tokenize(strings), tf.int32)  # (batch, None)

    @functools.cached_property
    def special_tokens(self):
        processor = self._processor
        return {processor.id_to_piece(id): id for id in range(processor.get_piece_size())
                if processor.is_control(id) or processor.is_unknown(id)}

    def _detokenize_batch(self, ids):
        # `transformers`' decoder: "▁" becomes a space, each run of byte pieces becomes its bytes
        # when they are UTF-8 and one U+FFFD per byte when not (SentencePiece replaces only the
        # bad bytes), then one leading space goes.
        values = ids.flat_values  # (pieces,)
        rows = ids.value_rowids()
        is_byte = self._is_byte.lookup(values) == 1
        # A group: a run of byte pieces within a row, or any other piece on its own.
        starts = tf.concat([[True], ~(is_byte[1:] & is_byte[:-1] & (rows[1:] == rows[:-1]))], 0)[:tf.size(values)]
        group = tf.cumsum(tf.cast(starts, tf.int64)) - 1  # (pieces,)
        groups = tf.reduce_sum(tf.cast(starts, tf.int64))
        text = tf.strings.unsorted_segment_join(self._id_to_bytes.lookup(values), group, groups)  # (groups,)
        lengths = tf.math.unsorted_segment_sum(tf.ones_like(group), group, groups)  # (groups,)
        valid = tf.strings.unicode_encode(tf.strings.unicode_decode(text, "UTF-8", errors="replace"), "UTF-8") == text
        replaced = tf.strings.reduce_join(tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(lengths)], "\ufffd"), lengths), axis=1)  # (groups,)
        text = tf.where(valid | ~tf.boolean_mask(is_byte, starts), text, replaced)
        text = tf.strings.reduce_join(tf.RaggedTensor.from_value_rowids(
            text, tf.boolean_mask(rows, starts), nrows=ids.nrows()), axis=1)  # (batch,)
        return tf.strings.regex_replace(text, "^ ", "") if self.add_prefix_space else text

    def _write_files(self, directory):
        with open(os.path.join(directory, MODEL_FILENAME), "wb") as file:
            file.write(self.model_proto)
        return {"eos_id": self.eos_id, "start_id": self.start_id, "add_prefix_space": self.add_prefix_space}

    @classmethod
    def from_directory(cls, directory, config):
        with open(os.path.join(directory, MODEL_FILENAME), "rb") as file:
            return cls(model_proto=file.read(), eos_id=config["eos_id"], start_id=config["start_id"],
                       add_prefix_space=config["add_prefix_space"])


def _piece_bytes(processor, id) -> bytes:
    """What `transformers` decodes the piece `id` to: its byte, nothing for control and unknown
    pieces (special tokens), else its text with "▁" as a space."""
    if processor.is_byte(id):
        return bytes([int(processor.id_to_piece(id)[3:5], 16)])
    if processor.is_control(id) or processor.is_unknown(id):
        return b""
    return processor.id_to_piece(id).replace("\u2581", " ").encode("utf-8")


def _check_model(model_proto: bytes) -> None:
    """ValueError unless the model is what `transformers` converts to the same ids: BPE with
    byte fallback and no user-defined pieces (SentencePiece matches those before merging,
    `transformers`' conversion merges them like any piece)."""
    model = _parse(model_proto)
    if model.trainer_spec.model_type != _BPE:
        raise ValueError(f"the SentencePiece model is of type {model.trainer_spec.model_type}, not BPE (2)")
    pieces = {piece.piece for piece in model.pieces}
    if not model.trainer_spec.byte_fallback or any(f"<0x{b:02X}>" not in pieces for b in range(256)):
        raise ValueError("the SentencePiece model has no byte fallback (byte_fallback and the 256 <0xXX> pieces)")
    user_defined = [piece.piece for piece in model.pieces if piece.type == _USER_DEFINED]
    if user_defined:
        raise ValueError(f"the SentencePiece model has {len(user_defined)} user-defined pieces "
                         f"(e.g. {user_defined[0]!r}), which transformers does not split off as SentencePiece does")


def _without_normalization(model_proto: bytes) -> bytes:
    """The model with SentencePiece's normalization, whitespace clean-up and dummy prefix off:
    only spaces become "▁", as in `transformers`' `LlamaTokenizer`, which ignores them."""
    model = _parse(model_proto)
    spec = model.normalizer_spec
    spec.name, spec.precompiled_charsmap = "identity", b""
    spec.add_dummy_prefix, spec.remove_extra_whitespaces, spec.escape_whitespaces = False, False, True
    model.ClearField("denormalizer_spec")
    return model.SerializeToString()


def _parse(model_proto: bytes):
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    return model
