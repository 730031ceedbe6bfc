"""tf.data pipelines for fine-tuning: text classification and supervised fine-tuning (`sft`).

Both take in-memory examples (`tfllm.data.labeled`), tokenize a whole batch
at a time inside `Dataset.map`, and right-pad every row to `seq_len` with the
padding id 0, so shapes are static.

An `sft` example, a prompt and its completion or a conversation, is a list of `Piece`s: texts
and token ids, each weighted 1 when the model learns to write it and 0 when it is context. A
prompt -> completion pair is the one-turn case (`prompt_completion_pieces`); a conversation is
rendered by the run's chat template and cut at the assistant turns and the template's special
tokens (`chat_pieces`). `encode_pieces` tokenizes pieces in-graph, for training
(`pieces_dataset`) and for the prompts of `tfllm generate --chat` alike.
"""

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfllm.data.chat import Conversation
from tfllm.data.pipeline import tokenize_ragged
from tfllm.errors import UserError
from tfllm.tokenizers import PAD_ID
from tfllm.tokenizers.tokenizer import prepend_start_id

POOLINGS = ("first", "last")


def classify_dataset(
    texts: Sequence[str],
    label_ids: Sequence[int],
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    pooling: str,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """`(x, y)` batches of tokenized texts and their class ids.

    The end-of-text id marks the token whose hidden state the classifier
    reads. `pooling="first"`: `[EOS, text...]`, cut to `seq_len` (a
    bidirectional encoder reads position 0). `pooling="last"`: the text cut to
    `seq_len - 1` tokens, then `EOS`, so that in a causal model the last real
    token has seen the whole (kept) text.

    Args:
        texts: the texts.
        label_ids: int class id of each text.
        tokenizer: any object whose `tokenize(strings)` maps a string tensor
            `(batch,)` to int ids `(batch, None)` in-graph.
        seq_len: int >= 2, tokens per row.
        batch_size: rows per batch.
        pooling: `"first"` or `"last"`, where the EOS goes.
        shuffle: reshuffle the examples every epoch.
        seed: seed of the shuffle.
        repeat: cycle forever (training) or go once.
        drop_remainder: drop an incomplete last batch (static batch size).

    Returns:
        A dataset of `(x, y)`: `x` a dict of int32 `"token_ids"` and
        `"padding_mask"` (1 = real token), `(batch_size, seq_len)` each;
        `y` the int32 class ids, `(batch_size,)`.
    """
    _check_pooling(pooling)
    check_examples(len(texts), len(label_ids), seq_len, batch_size, minimum_seq_len=2)
    columns = (tf.constant(list(texts), tf.string), tf.constant(list(label_ids), tf.int32))

    def encode(texts, labels):
        return encode_classification(tokenizer, texts, seq_len, pooling), labels

    return batch_examples(columns, encode, len(texts), batch_size, shuffle, seed, repeat, drop_remainder)


def encode_classification(tokenizer, texts: tf.Tensor, seq_len: int, pooling: str) -> dict:
    """The classifier inputs of a batch of texts, in-graph: what training and serving both feed.

    `pooling="first"`: `[start, text...]` cut to `seq_len` (`Tokenizer.start_id`: tfllm's EOS,
    BERT's [CLS]); `pooling="last"`:
    the text cut to `seq_len - 1` tokens, then `EOS` (see `classify_dataset`).
    Rows are right-padded with the padding id to `seq_len`.

    Args:
        tokenizer: any object whose `tokenize(strings)` maps a string tensor
            `(batch,)` to int ids `(batch, None)` in-graph.
        texts: string tensor `(batch,)`.
        seq_len: int >= 2, tokens per row.
        pooling: `"first"` or `"last"`, where the EOS goes.

    Returns:
        dict of int32 `"token_ids"` and `"padding_mask"` (1 = real token),
        `(batch, seq_len)` each.
    """
    _check_pooling(pooling)
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2. Received: seq_len={seq_len}")
    ids = tokenize_ragged(tokenizer, texts)  # (batch, None)
    eos = tf.fill([ids.nrows(), 1], tf.constant(tokenizer.eos_id, tf.int32))  # (batch, 1)
    if pooling == "first":
        # The start id (BERT's [CLS]; tfllm's end-of-text) holds the pooled summary.
        ids = prepend_start_id(ids, tokenizer.start_id, tokenizer.eos_id)[:, :seq_len]
    else:
        ids = tf.concat([ids[:, : seq_len - 1], eos], axis=1)
    token_ids, padding_mask = pad_ragged(ids, seq_len)
    return {"token_ids": token_ids, "padding_mask": padding_mask}


class Piece(collections.namedtuple("Piece", "text token_id weight continues", defaults=("", -1, 0.0, False))):
    """One part of an `sft` example: a text to tokenize, or one token id.

    Fields:
        text: str, tokenized with `Tokenizer.tokenize` (or `tokenize_continuations` when
            `continues`); "" for a token.
        token_id: int, the id of a token (a special token, the start or end-of-text id); -1 for
            a text.
        weight: float, the loss weight of predicting each of its tokens: 1.0 for what the model
            learns to write, 0.0 for context.
        continues: bool, the text continues the example's text before it (it follows a special
            token of a chat): no start-of-text treatment (`Tokenizer.tokenize_continuations`).
    """

    __slots__ = ()


def prompt_completion_pieces(prompt: str, completion: str, tokenizer) -> list:
    """The pieces of a prompt -> completion pair: the start id (as generation puts it in front),
    the prompt (weight 0), the completion and the end-of-text id (weight 1), prompt and
    completion tokenized apart, so no token spans the seam."""
    # `prepend_start_id`'s convention: without a start id, only a prompt with no token gets the
    # end-of-text id; the tokenizers without a start id (byte-level BPE, SentencePiece) give
    # every non-empty text a token.
    start = tokenizer.start_id if tokenizer.start_id is not None else (tokenizer.eos_id if not prompt else None)
    lead = [Piece(token_id=start)] if start is not None else []
    return lead + [Piece(prompt), Piece(completion, weight=1.0), Piece(token_id=tokenizer.eos_id, weight=1.0)]


def chat_pieces(segments, tokenizer) -> list:
    """The pieces of a rendered conversation, `[(text, learned), ...]` (`ChatTemplate.segments`):
    each text cut at the special tokens the template wrote (`Tokenizer.split_special_tokens`),
    as `transformers` tokenizes a chat. A learned turn weighs 1 up to and with its last special
    token (the template's end of turn); what follows it (a newline before the next turn) is the
    template's scaffolding and weighs 0, as in TRL's `assistant_only_loss`."""
    pieces = []
    for text, learned in segments:
        parts = tokenizer.split_special_tokens(text)
        specials = [i for i, part in enumerate(parts) if isinstance(part, int)]
        last = specials[-1] if learned and specials else (len(parts) if learned else -1)
        for i, part in enumerate(parts):
            weight = 1.0 if i <= last else 0.0
            if isinstance(part, int):
                pieces.append(Piece(token_id=part, weight=weight))
            else:
                pieces.append(Piece(part, weight=weight, continues=bool(pieces)))
    return pieces


def sft_pieces(examples, tokenizer, template) -> list:
    """The pieces of each `sft` example (`tfllm.data.labeled.read_prompt_completion`): a pair's
    (`prompt_completion_pieces`), a conversation's as `template` (a `ChatTemplate`) renders it
    (`chat_pieces`); `UserError` naming the line the template cannot render."""
    pieces = []
    for example in examples:
        first, second = example
        if isinstance(first, Conversation):
            pieces.append(chat_pieces(template.segments(first, example.source), tokenizer))
        else:
            pieces.append(prompt_completion_pieces(first, second, tokenizer))
    return pieces


def end_of_turn_id(template, tokenizer):
    """The special token that ends an assistant turn of `template` (the last one `chat_pieces`
    weighs 1 in a one-turn conversation), where a chat reply stops; None when the turn has none
    or the template cannot be cut into turns."""
    conversation = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    try:
        segments = template.segments(conversation, "a one-turn conversation")
    except UserError:
        return None
    ids = [piece.token_id for piece in chat_pieces(segments, tokenizer) if piece.weight and piece.token_id >= 0]
    return ids[-1] if ids else None


def encode_pieces(tokenizer, texts, token_ids, weights, continues):
    """The ids and weights of ragged `(batch, pieces)` pieces (the columns of `Piece`), in-graph.

    Texts are tokenized in one call per kind (`tokenize`, `tokenize_continuations`) and put back
    in place with the token pieces.

    Returns:
        `(ids, weights)`: int32 and float32 ragged `(batch, None)`, one weight per id.
    """
    text, token, continued = texts.flat_values, token_ids.flat_values, continues.flat_values  # (pieces,)
    is_token = token >= 0
    kinds = (~is_token & ~continued, ~is_token & continued, is_token)
    parts = [
        tokenize_ragged(tokenizer, tf.boolean_mask(text, kinds[0])),
        _ragged(tokenizer.tokenize_continuations(tf.boolean_mask(text, kinds[1]))),
        tf.RaggedTensor.from_tensor(tf.boolean_mask(token, kinds[2])[:, tf.newaxis]),
    ]
    order = tf.concat([tf.where(kind)[:, 0] for kind in kinds], axis=0)  # piece of each row of `parts`
    parts = tf.concat([part.with_row_splits_dtype(tf.int64) for part in parts], axis=0)
    piece_ids = tf.gather(parts, tf.math.invert_permutation(order))  # (pieces, None)
    piece_weights = piece_ids.with_flat_values(tf.repeat(weights.flat_values, piece_ids.row_lengths()))

    def per_example(values):  # (pieces, None) -> (batch, None)
        return tf.RaggedTensor.from_row_splits(values, texts.row_splits).merge_dims(1, 2)

    return per_example(piece_ids), per_example(piece_weights)


def encode_with_special_tokens(tokenizer, texts) -> list:
    """The ids of each text with the special tokens written in it as their ids, as
    `transformers` tokenizes a rendered chat (`chat_pieces`, `encode_pieces`); eager."""
    rows, columns = _piece_columns([chat_pieces([(text, False)], tokenizer) for text in texts])
    ids, _ = encode_pieces(tokenizer, *_gather_pieces(columns, *rows))
    return ids.to_list()


def pieces_dataset(
    examples: Sequence[list],
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """`(x, y, sample_weight)` batches that teach a causal LM to write the weighted pieces.

    Each example, a list of `Piece`s, is tokenized (`encode_pieces`), cut to `seq_len + 1`
    tokens and shifted: `x = seq[:-1]`, `y = seq[1:]`, and `y` weighs what its token's piece
    weighs; an example whose weighted tokens start past `seq_len` leaves a row with no weight.

    Args:
        examples: the examples, each a list of `Piece`s (`sft_pieces`).
        tokenizer, batch_size, shuffle, seed, repeat, drop_remainder: as in
            `classify_dataset`.
        seq_len: int >= 1, tokens per row.

    Returns:
        A dataset of `(x, y, sample_weight)`: `x` a dict of int32 `"token_ids"` and
        `"padding_mask"`, `y` the int32 next ids and `sample_weight` float32, the weight of each
        `y` (0.0 at padding); all `(batch_size, seq_len)`.
    """
    check_examples(len(examples), len(examples), seq_len, batch_size, minimum_seq_len=1)
    rows, columns = _piece_columns(examples)

    def encode(starts, limits):
        sequence, target = encode_pieces(tokenizer, *_gather_pieces(columns, starts, limits))
        sequence, target = sequence[:, : seq_len + 1], target[:, : seq_len + 1]
        token_ids, padding_mask = pad_ragged(sequence[:, :-1], seq_len)
        next_ids, _ = pad_ragged(sequence[:, 1:], seq_len)
        weights = target[:, 1:].to_tensor(0.0, shape=[None, seq_len])  # (batch, seq_len)
        return {"token_ids": token_ids, "padding_mask": padding_mask}, next_ids, weights

    return batch_examples(rows, encode, len(examples), batch_size, shuffle, seed, repeat, drop_remainder)


def sft_dataset(
    prompts: Sequence[str],
    completions: Sequence[str],
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """`(x, y, sample_weight)` batches that teach a causal LM to complete prompts.

    Each example is `start + prompt tokens + completion tokens + EOS` (`prompt_completion_pieces`:
    the start id as at generation; prompt and completion tokenized apart, so no token spans the
    seam), cut to `seq_len + 1` tokens and shifted as `pieces_dataset` does. The loss counts
    only predictions of the completion and its EOS; a prompt of `seq_len` tokens or more leaves
    a row with no weight.

    Args:
        prompts: the prompts.
        completions: the completion of each prompt.
        tokenizer, batch_size, shuffle, seed, repeat, drop_remainder: as in
            `classify_dataset`.
        seq_len: int >= 1, tokens per row.

    Returns:
        A dataset of `(x, y, sample_weight)`: `x` a dict of int32
        `"token_ids"` and `"padding_mask"`, `y` the int32 next ids and
        `sample_weight` float32, 1.0 where `y` is a completion token or the
        final EOS and 0.0 where it is a prompt token or padding; all
        `(batch_size, seq_len)`.
    """
    check_examples(len(prompts), len(completions), seq_len, batch_size, minimum_seq_len=1)
    examples = [prompt_completion_pieces(prompt, completion, tokenizer)
                for prompt, completion in zip(prompts, completions)]
    return pieces_dataset(examples, tokenizer, seq_len=seq_len, batch_size=batch_size, shuffle=shuffle, seed=seed,
                          repeat=repeat, drop_remainder=drop_remainder)


def _piece_columns(examples):
    """`((starts, limits), columns)` of lists of pieces: each example's range of rows in the
    columns, and the pieces of all of them as `Piece`'s four columns."""
    limits = np.cumsum([len(pieces) for pieces in examples], dtype=np.int64)
    starts = limits - [len(pieces) for pieces in examples]
    flat = [piece for pieces in examples for piece in pieces]
    columns = (tf.constant([piece.text for piece in flat], tf.string, shape=[len(flat)]),
               tf.constant([piece.token_id for piece in flat], tf.int32, shape=[len(flat)]),
               tf.constant([piece.weight for piece in flat], tf.float32, shape=[len(flat)]),
               tf.constant([piece.continues for piece in flat], tf.bool, shape=[len(flat)]))
    return (tf.constant(starts), tf.constant(limits)), columns


def _gather_pieces(columns, starts, limits):
    """The pieces of the examples whose rows of `columns` are `[starts, limits)`: four ragged
    `(batch, pieces)` columns."""
    rows = tf.ragged.range(starts, limits)  # (batch, pieces)
    return [tf.gather(column, rows) for column in columns]


def _ragged(ids):
    """int32 ragged ids of what a tokenizer returns (ragged, or dense when its rows are alike)."""
    return tf.cast(ids if isinstance(ids, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(ids), tf.int32)


def pad_ragged(ids: tf.RaggedTensor, seq_len=None):
    """Right-pads ragged `(batch, <= seq_len)` ids: int32 `(token_ids, padding_mask)`, `(batch, seq_len)`;
    with `seq_len` None, to the longest row."""
    token_ids = ids.to_tensor(PAD_ID, shape=[None, seq_len])
    padding_mask = tf.sequence_mask(ids.row_lengths(), tf.shape(token_ids)[1] if seq_len is None else seq_len,
                                    dtype=tf.int32)
    return token_ids, padding_mask


def batch_examples(columns, encode, size, batch_size, shuffle, seed, repeat, drop_remainder):
    """Batches of `encode(*columns)` over the in-memory example `columns` (tensors of `size` rows)."""
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)

    def epoch_order(epoch):
        # Each epoch's order is a function of (seed, epoch) alone, so every iterator of the
        # dataset yields the same stream (Keras makes several; a resumed run skips into it).
        order = tf.range(size, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order)

    examples = epochs.flat_map(epoch_order).map(lambda index: tuple(tf.gather(c, index) for c in columns))
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    return batches.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}. Received: pooling={pooling!r}")


def check_examples(size: int, other_size: int, seq_len: int, batch_size: int, *, minimum_seq_len: int) -> None:
    if size != other_size:
        raise ValueError(f"Every example needs one of each input. Received: {size} and {other_size}")
    if size == 0:
        raise ValueError("Received no examples.")
    if seq_len < minimum_seq_len:
        raise ValueError(f"seq_len must be at least {minimum_seq_len}. Received: seq_len={seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
