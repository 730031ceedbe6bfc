"""Train or load a tokenizer by kind name (`data.tokenizer`)."""

import json
import os
from typing import Iterable

from tfllm.errors import UserError
from tfllm.tokenizers.bert_tokenizer import BertTokenizer
from tfllm.tokenizers.byte_pair_tokenizer import BytePairTokenizer
from tfllm.tokenizers.char_tokenizer import CharTokenizer
from tfllm.tokenizers.gpt2_tokenizer import Gpt2Tokenizer, Llama3Tokenizer, Qwen2Tokenizer
from tfllm.tokenizers.llama_sentence_piece_tokenizer import LlamaSentencePieceTokenizer
from tfllm.tokenizers.sentence_piece_tokenizer import SentencePieceTokenizer
from tfllm.tokenizers.tokenizer import CHAT_TEMPLATE_FILENAME, CONFIG_FILENAME
from tfllm.tokenizers.tokenizer import ImportedTokenizer, Tokenizer
from tfllm.tokenizers.word_piece_tokenizer import WordPieceTokenizer

# The kinds tfllm loads: those it trains, and the tokenizers imported with checkpoints.
_CLASSES = {cls.kind: cls for cls in (CharTokenizer, WordPieceTokenizer, BytePairTokenizer, SentencePieceTokenizer,
                                      Gpt2Tokenizer, Llama3Tokenizer, Qwen2Tokenizer, LlamaSentencePieceTokenizer,
                                      BertTokenizer)}
KINDS = tuple(kind for kind, cls in _CLASSES.items() if not issubclass(cls, ImportedTokenizer))  # trained


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, max_chars: int = 20_000_000) -> Tokenizer:
    """Trains a `kind` tokenizer on at most `max_chars` characters of `texts`.

    Args:
        kind: str. One of `KINDS` (`data.tokenizer`).
        texts: iterable of str. Documents; may be a generator over a corpus
            larger than memory, read no further than `max_chars`.
        vocab_size: int. Ids to aim for, the 4 reserved ones included
            (`data.vocab_size`). The result is smaller when the text has too
            few distinct pieces; `vocabulary_size` tells the real size.
        max_chars: int. Most characters of `texts` to read.
    """
    if kind not in _CLASSES:
        raise UserError(f"data.tokenizer={kind!r} is not a tokenizer kind. Use one of: {', '.join(KINDS)}.")
    return _CLASSES[kind].train(texts, vocab_size, max_chars=max_chars)


def load_tokenizer(directory: str) -> Tokenizer:
    """The tokenizer `Tokenizer.save(directory)` wrote, with its chat template when it has one;
    `UserError` when missing or corrupt."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILENAME)
    if not os.path.isdir(directory):
        raise UserError(f"Tokenizer directory {directory} does not exist. Train a tokenizer first or fix the path.")
    if not os.path.isfile(path):
        raise UserError(f"Tokenizer directory {directory} has no {CONFIG_FILENAME}; it is not a saved tokenizer.")
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
        kind, vocabulary_size = config["kind"], config["vocabulary_size"]
    except (ValueError, TypeError, KeyError) as error:
        raise UserError(f"Tokenizer directory {directory} is corrupt: {path} is unreadable ({error!r}).") from None
    if kind not in _CLASSES:
        raise UserError(f"Tokenizer directory {directory} is corrupt: unknown kind {kind!r} in {path}.")
    try:
        tokenizer = _CLASSES[kind].from_directory(directory, config)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise UserError(f"Tokenizer directory {directory} is corrupt: {error}. Train the tokenizer again.") from None
    if isinstance(tokenizer, ImportedTokenizer) and vocabulary_size > tokenizer.vocabulary_size:
        tokenizer.padded_to(vocabulary_size)  # a checkpoint's embedding rows past its tokenizer's ids
    if tokenizer.vocabulary_size != vocabulary_size:
        raise UserError(
            f"Tokenizer directory {directory} is corrupt: {CONFIG_FILENAME} says vocabulary_size={vocabulary_size} "
            f"but its files hold {tokenizer.vocabulary_size} ids. Train the tokenizer again."
        )
    tokenizer.chat_template = _chat_template(os.path.join(directory, CHAT_TEMPLATE_FILENAME))
    return tokenizer


def _chat_template(path):
    """The chat template saved beside a tokenizer (`Tokenizer.chat_template`), None without one."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is unreadable ({error}); fix or delete it (without it, runs use the default "
                        "chat template)") from None
