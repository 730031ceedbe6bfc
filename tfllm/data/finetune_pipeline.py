"""tf.data pipelines for fine-tuning: text classification and supervised prompt -> completion.

Both take in-memory examples (`tfllm.data.labeled`), tokenize a whole batch
at a time inside `Dataset.map`, and right-pad every row to `seq_len` with the
padding id 0, so shapes are static.
"""

from typing import Sequence

import tensorflow as tf

from tfllm.data.pipeline import tokenize_ragged
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

    Each example is `EOS + prompt tokens + completion tokens + EOS` (the
    leading EOS as at generation; prompt and completion tokenized apart, so no
    token spans the seam), cut to
    `seq_len + 1` tokens and shifted: `x = seq[:-1]`, `y = seq[1:]`. The loss
    counts only predictions of the completion and its EOS; a prompt of
    `seq_len` tokens or more leaves a row with no weight.

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
    columns = (tf.constant(list(prompts), tf.string), tf.constant(list(completions), tf.string))

    def encode(prompts, completions):
        prompt = tokenize_ragged(tokenizer, prompts)  # (batch, None)
        completion = tokenize_ragged(tokenizer, completions)  # (batch, None)
        eos = tf.fill([prompt.nrows(), 1], tf.constant(tokenizer.eos_id, tf.int32))  # (batch, 1)
        # The start id in front, as generation puts it (`Tokenizer.start_id`): the first prompt
        # token has the same context in training and at generation, and an empty prompt still predicts.
        prompt = prepend_start_id(prompt, tokenizer.start_id, tokenizer.eos_id)
        sequence = tf.concat([prompt, completion, eos], axis=1)[:, : seq_len + 1]
        # 1.0 for the tokens to be predicted; shifted like the ids, it weighs y.
        target = tf.concat(
            [tf.zeros_like(prompt, tf.float32), tf.ones_like(completion, tf.float32), tf.ones_like(eos, tf.float32)],
            axis=1,
        )[:, : seq_len + 1]
        token_ids, padding_mask = pad_ragged(sequence[:, :-1], seq_len)
        next_ids, _ = pad_ragged(sequence[:, 1:], seq_len)
        weights = target[:, 1:].to_tensor(0.0, shape=[None, seq_len])  # (batch, seq_len)
        return {"token_ids": token_ids, "padding_mask": padding_mask}, next_ids, weights

    return batch_examples(columns, encode, len(prompts), batch_size, shuffle, seed, repeat, drop_remainder)


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
