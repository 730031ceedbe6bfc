"""The interface every tokenizer kind implements, and the ids they all share.

Ids 0-3 are reserved and mean the same thing for every kind tfllm trains
(`SPECIAL_TOKENS`); real tokens start at 4. A tokenizer imported with a checkpoint keeps
the checkpoint's ids and says which are its end-of-text, padding and start ids.
Tokenizing and detokenizing always run as a TensorFlow graph of stock TensorFlow and
tensorflow-text ops, so a tokenizer can be mapped over a `tf.data.Dataset`, called inside
a `tf.function`, and saved inside a SavedModel that a server loads with only `tensorflow` and `tensorflow_text`.
"""

import abc
import functools
import json
import os
import re
from typing import Iterable, Iterator

import tensorflow as tf

from tfllm.errors import UserError
from tfllm.files import staging_directory

PAD_ID = 0  # Padding: KerasHub's generation pads with 0.
EOS_ID = 1  # End of text, inserted between documents.
UNK_ID = 2  # A character or word the vocabulary cannot express.
MASK_ID = 3  # The masked-language-model mask.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<mask>")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)

CONFIG_FILENAME = "tokenizer.json"
# The chat template of the tokenizer's run, a Jinja string (`tfllm.data.chat`); Hugging Face's name.
CHAT_TEMPLATE_FILENAME = "chat_template.jinja"


def take_chars(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Yields documents from `texts` until `max_chars` characters have been seen.

    The last document is cut so that exactly `max_chars` characters come out
    when `texts` holds more; `texts` is not read past that point, so it may be
    a generator over a corpus larger than memory.
    """
    if not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer. Received: max_chars={max_chars!r}")
    left = max_chars
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"Training texts must be str. Received: {type(text).__name__}")
        yield text[:left]
        left -= min(len(text), left)
        if left == 0:
            return


def load_json(path: str):
    """The JSON value of the file `path`; a `ValueError` naming the file when it is not JSON.

    `load_tokenizer` turns it into a `UserError` that says which file of a saved tokenizer is
    damaged.
    """
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError while reading
            raise ValueError(f"{path} is not valid JSON ({error})") from None


def read_training_texts(kind: str, texts: Iterable[str], max_chars: int) -> list[str]:
    """The first `max_chars` characters of `texts` as a list of documents.

    Raises `UserError` when there is no text at all, since no kind can learn
    a vocabulary from nothing.
    """
    documents = [text for text in take_chars(texts, max_chars) if text]
    if not documents:
        raise UserError(
            f"Cannot train the {kind} tokenizer: the training text is empty. "
            "Check that the data files named in the config hold text."
        )
    return documents


def check_vocab_size(kind: str, vocab_size, minimum: int, why: str) -> None:
    """Raises `UserError` unless `vocab_size` is an integer >= `minimum`."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise UserError(f"data.vocab_size must be an integer. Received: data.vocab_size={vocab_size!r}")
    if vocab_size < minimum:
        raise UserError(
            f"data.vocab_size={vocab_size} is too small for the {kind} tokenizer: it needs at least "
            f"{minimum} ({why}). Raise data.vocab_size in the config."
        )


class Tokenizer(tf.Module, abc.ABC):
    """Base class: text to int32 token ids and back, always as a TF graph.

    A subclass implements `_tokenize_batch` (a batch of strings to ragged ids)
    and `_detokenize_batch` (ragged ids without reserved ids to strings) with
    graph ops only, `_write_files`/`from_directory` for its files, and
    `id_to_token`/`token_to_id`. `tokenize` and `detokenize` always run those
    through `tf.function`s, so eager callers get exactly the graph behaviour
    (KerasHub layers tokenize differently in eager mode) and the same ids come
    out of eager code, `tf.data` and a served SavedModel.

    Args:
        vocabulary_size: int. Number of ids, the 4 reserved ones included.
        name: str. Module name, defaults to the kind.

    Call arguments:
        tokenize(strings): string tensor `(batch,)` -> int32 ragged
            `(batch, None)`; a scalar string -> int32 `(None,)`.
        detokenize(ids): int ragged or dense `(batch, None)` -> string
            `(batch,)`; `(None,)` -> scalar. Ids without text (`textless_ids`:
            0-3, padding, end of text, unknown, mask, for tfllm's kinds) are dropped.

    Special tokens written in a text (`"<eos>"`, Qwen2's `"<|im_start|>"`) are tokenized as text
    by `tokenize`; a chat template writes them to mean the token itself, so the rendered chat is
    cut at them first (`split_special_tokens`), as `transformers`' tokenizers read text, and the
    text after one is tokenized as a continuation (`tokenize_continuations`). `chat_template`
    is the run's chat template (None: `tfllm.data.chat.DEFAULT_CHAT_TEMPLATE`), saved beside the
    tokenizer's files as `chat_template.jinja`.

    Example:
    ```python
    tokenizer = tfllm.tokenizers.train_tokenizer("bpe", texts, vocab_size=4096)
    ids = tokenizer.tokenize(["hello world"])    # int32 ragged (1, None)
    tokenizer.detokenize(ids)                     # [b"hello world"]
    tokenizer.split_special_tokens("<eos>hi")    # [1, "hi"]
    tokenizer.save("run/tokenizer")
    ```
    """

    kind: str = ""
    # What the ids mean. tfllm's own kinds reserve ids 0-3 (`SPECIAL_TOKENS`); a checkpoint's
    # tokenizer has its own ids (None: it has no such token).
    pad_id: int | None = PAD_ID
    eos_id: int | None = EOS_ID  # ends a document; generation stops at it
    mask_id: int | None = MASK_ID
    start_id: int | None = EOS_ID  # put in front of every prompt; None: nothing is
    textless_ids: tuple = tuple(range(NUM_SPECIAL_TOKENS))  # ids `detokenize` drops
    chat_template: str | None = None  # Jinja source; None: the default template

    def __init__(self, *, vocabulary_size: int, name: str | None = None):
        super().__init__(name=name or self.kind)
        self.vocabulary_size = int(vocabulary_size)
        self.text_vocabulary_size = self.vocabulary_size  # ids past it carry no text (`padded_to`)

    @abc.abstractmethod
    def _tokenize_batch(self, strings: tf.Tensor) -> tf.RaggedTensor:
        """Graph code: string `(batch,)` -> int32 ragged `(batch, None)`."""

    @abc.abstractmethod
    def _detokenize_batch(self, ids: tf.RaggedTensor) -> tf.Tensor:
        """Graph code: int32 ragged `(batch, None)` of ids with text (none of `textless_ids`)
        -> string `(batch,)`."""

    @abc.abstractmethod
    def _write_files(self, directory: str) -> dict:
        """Writes the kind's files into `directory`; returns extra tokenizer.json keys."""

    @classmethod
    @abc.abstractmethod
    def from_directory(cls, directory: str, config: dict) -> "Tokenizer":
        """Builds the tokenizer from the files `_write_files` wrote."""

    @abc.abstractmethod
    def id_to_token(self, id: int) -> str:
        """The token string of `id`; ValueError when out of range."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int:
        """The id of `token`; ValueError when it is not in the vocabulary."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _tokenize_graph(self, strings):
        return tf.cast(self._tokenize_batch(strings), tf.int32)

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32, row_splits_dtype=tf.int64)])
    def _detokenize_graph(self, ids):
        # Reserved ids carry no text; dropping them here lets every kind decode
        # padded model output directly. Ids past the vocabulary (a model whose
        # embedding is padded to a round size can sample them) are dropped too:
        # tensorflow-text's WordPiece detokenizer crashes the process on them.
        keep = (ids >= 0) & (ids < self.text_vocabulary_size)
        if self.textless_ids:  # one comparison against them all: Llama 3 has 256
            textless = tf.constant(sorted(self.textless_ids), tf.int32)
            keep &= ~tf.reduce_any(ids[..., tf.newaxis] == textless, axis=-1)
        return self._detokenize_batch(tf.ragged.boolean_mask(ids, keep))

    def tokenize(self, strings) -> tf.RaggedTensor:
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if strings.shape.rank == 0:
            return self._tokenize_graph(strings[tf.newaxis])[0]
        if strings.shape.rank != 1:
            raise ValueError(f"tokenize takes a scalar or a (batch,) string tensor. Received shape: {strings.shape}")
        return self._tokenize_graph(strings)

    def tokenize_continuations(self, strings) -> tf.RaggedTensor:
        """`tokenize` of `(batch,)` texts that continue another text (what follows a special token
        in a chat), without what a tokenizer puts at the start of a text: `transformers` reads a
        rendered chat as one text, cut at its special tokens. The same as `tokenize` but for
        Llama 2's SentencePiece, which puts "▁" in front of a text only."""
        return self.tokenize(strings)

    @functools.cached_property
    def special_tokens(self) -> dict:
        """Token text -> id of the special tokens, as a chat template writes them: the ids without
        text (`textless_ids`: tfllm's `<pad>`, `<eos>`, `<unk>`, `<mask>`; a checkpoint's end of
        text, start and other special tokens, such as Qwen2's `<|im_start|>`)."""
        return {self.id_to_token(id): id for id in self.textless_ids}

    @functools.cached_property
    def _special_pattern(self):
        # Longest first, so that a special token that starts another one never cuts it.
        tokens = sorted(self.special_tokens, key=lambda token: (-len(token), token))
        return re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None

    def split_special_tokens(self, text: str) -> list:
        """`text` cut at the special tokens written in it (`special_tokens`), as `transformers`'
        tokenizers cut the text of a chat template: its pieces of text (str, never empty) and the
        ids (int) of those tokens, in order."""
        if self._special_pattern is None:
            return [text] if text else []
        # With one capturing group, the odd parts of the split are the tokens.
        parts = self._special_pattern.split(text)
        return [self.special_tokens[part] if i % 2 else part for i, part in enumerate(parts) if i % 2 or part]

    def detokenize(self, ids) -> tf.Tensor:
        if not isinstance(ids, (tf.Tensor, tf.RaggedTensor)):
            ids = tf.ragged.constant(ids, dtype=tf.int32) if _is_nested(ids) else tf.constant(ids, tf.int32)
        if not isinstance(ids, tf.RaggedTensor):
            if ids.shape.rank == 1:
                return self.detokenize(ids[tf.newaxis])[0]
            if ids.shape.rank != 2:
                raise ValueError(f"detokenize takes (None,) or (batch, None) ids. Received shape: {ids.shape}")
            ids = tf.RaggedTensor.from_tensor(ids)
        if ids.shape.rank != 2:
            raise ValueError(f"detokenize takes (batch, None) ragged ids. Received shape: {ids.shape}")
        ids = tf.cast(ids, tf.int32).with_row_splits_dtype(tf.int64)
        return self._detokenize_graph(ids)

    def save(self, directory: str) -> None:
        """Writes the tokenizer into `directory`, replacing it as a whole.

        `directory` must be new, empty, or a saved tokenizer; any other
        non-empty directory is left alone and raises `UserError`.

        Files go to a temporary sibling directory first, which is then renamed
        into place, so a crash never leaves a half-written tokenizer behind.
        """
        directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise UserError(f"Cannot save the tokenizer to {directory}: it is a file. Choose a directory path.")
        if os.path.isdir(directory) and os.listdir(directory):
            if not os.path.isfile(os.path.join(directory, CONFIG_FILENAME)):
                # Replacing the directory as a whole would delete whatever else is in it.
                raise UserError(
                    f"Cannot save the tokenizer to {directory}: it is a non-empty directory without "
                    f"{CONFIG_FILENAME}. Choose an empty or new directory."
                )
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        with staging_directory(directory) as staging:
            config = {"kind": self.kind, "vocabulary_size": self.vocabulary_size}
            config.update(self._write_files(staging))
            with open(os.path.join(staging, CONFIG_FILENAME), "w", encoding="utf-8") as file:
                json.dump(config, file, indent=2)
            if self.chat_template is not None:
                with open(os.path.join(staging, CHAT_TEMPLATE_FILENAME), "w", encoding="utf-8") as file:
                    file.write(self.chat_template)

    def _check_id(self, id: int) -> None:
        if not 0 <= id < self.vocabulary_size:
            raise ValueError(f"id must be in [0, {self.vocabulary_size}). Received: id={id}")


class ImportedTokenizer:
    """Mixin of the kinds that come with a checkpoint (`tfllm import`): loaded, never trained."""

    @classmethod
    def train(cls, texts, vocab_size, max_chars=0):
        raise UserError(
            f"data.tokenizer={cls.kind!r} comes with an imported checkpoint and is not trained; start from the "
            "run `tfllm import` wrote (train.init_from=RUN) or pick a kind tfllm trains (see tfllm train --help)"
        )

    def padded_to(self, vocabulary_size: int) -> "ImportedTokenizer":
        """This tokenizer with `vocabulary_size` ids: a checkpoint's embedding may have more rows
        than its tokenizer has ids (Qwen2 rounds 151,665 up to 151,936); those ids carry no text."""
        if vocabulary_size < self.text_vocabulary_size:
            raise ValueError(f"vocabulary_size={vocabulary_size} is below the tokenizer's own "
                             f"{self.text_vocabulary_size} ids")
        self.vocabulary_size = int(vocabulary_size)
        return self


def prepend_start_id(token_ids, start_id, empty_id):
    """int32 ragged (batch, None): `start_id` in front of every row of `token_ids`; with
    `start_id` None, `empty_id` in front of the rows that hold no token (a model needs one token
    of context to predict from), the others as they are. Graph ops only."""
    token_ids = tf.cast(token_ids, tf.int32)
    if start_id is None:
        front = tf.cast(tf.equal(token_ids.row_lengths(), 0), token_ids.row_splits.dtype)  # (batch,) 0 or 1
        value = empty_id
    else:
        front = tf.ones_like(token_ids.row_lengths())
        value = start_id
    start = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(front)], tf.constant(value, tf.int32)), front)
    return tf.concat([start, token_ids], axis=1)


def _is_nested(values) -> bool:
    return len(values) > 0 and isinstance(values[0], (list, tuple))


def lookup_table(keys, values, default):
    """An in-graph `keys` -> `values` table answering `default` for any other key."""
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default)


def keras_hub():
    """The `keras_hub` module, imported on first use: it pulls in nltk and scipy (about 2 s of every
    `tfllm` command's start), which only the BPE and WordPiece tokenizers need."""
    import keras_hub as module

    return module
