"""tf.data pipeline of source -> target pairs for an encoder-decoder (`model.task: seq2seq`).

Training and generation encode sources with the same function (`encode_sources`), so the
encoder sees the same rows in both; the decoder starts every target with `decoder_start_id`.
"""

from typing import Sequence

import tensorflow as tf

from tfllm.data.finetune_pipeline import batch_examples, check_examples, pad_ragged
from tfllm.data.pipeline import tokenize_ragged


def decoder_start_id(tokenizer):
    """The id every target starts from: the tokenizer's start id, else its end-of-text id
    (a checkpoint whose decoder starts from `</s>`, as BART's)."""
    return tokenizer.eos_id if tokenizer.start_id is None else tokenizer.start_id


def encode_sources(tokenizer, texts: tf.Tensor, source_len: int, pad_to=None) -> dict:
    """The encoder inputs of a batch of source strings, in-graph.

    Each source is its first `source_len - 1` tokens and the end-of-text id (the encoder's
    last token marks the end, and an empty source still has one token to attend), right-padded
    with 0: to `pad_to` when given (training's static shapes), else to the longest row.

    Returns:
        dict of int32 `"encoder_token_ids"`, `"encoder_padding_mask"` `(batch, length)` and
        `"cut"`, the tokens dropped from each source `(batch,)`.
    """
    if source_len < 1:
        raise ValueError(f"source_len must be at least 1. Received: source_len={source_len}")
    ids = tokenize_ragged(tokenizer, texts)  # (batch, None)
    cut = tf.maximum(tf.cast(ids.row_lengths(), tf.int32) - (source_len - 1), 0)
    eos = tf.fill([ids.nrows(), 1], tf.constant(tokenizer.eos_id, tf.int32))
    ids = tf.concat([ids[:, : source_len - 1], eos], axis=1)
    token_ids, padding_mask = pad_ragged(ids, pad_to)
    return {"encoder_token_ids": token_ids, "encoder_padding_mask": padding_mask, "cut": cut}


def encode_targets(tokenizer, texts: tf.Tensor, seq_len: int):
    """Teacher-forcing decoder inputs, next ids and weights of a batch of target strings.

    The decoder reads `[start, target...]` and predicts `[target..., EOS]`, both cut to
    `seq_len`; the weights are 1 at every predicted token (the target and its EOS), 0 at padding.

    Returns:
        `(inputs, next_ids, weights, cut)`: `inputs` a dict of int32 `"decoder_token_ids"` and
        `"decoder_padding_mask"`, `next_ids` int32 and `weights` float32, all `(batch, seq_len)`;
        `cut` the target tokens (EOS included) beyond `seq_len` `(batch,)`.
    """
    ids = tokenize_ragged(tokenizer, texts)  # (batch, None)
    rows = ids.nrows()
    start = tf.fill([rows, 1], tf.constant(decoder_start_id(tokenizer), tf.int32))
    eos = tf.fill([rows, 1], tf.constant(tokenizer.eos_id, tf.int32))
    cut = tf.maximum(tf.cast(ids.row_lengths(), tf.int32) + 1 - seq_len, 0)
    token_ids, padding_mask = pad_ragged(tf.concat([start, ids], axis=1)[:, :seq_len], seq_len)
    next_ids, weights = pad_ragged(tf.concat([ids, eos], axis=1)[:, :seq_len], seq_len)
    inputs = {"decoder_token_ids": token_ids, "decoder_padding_mask": padding_mask}
    return inputs, next_ids, tf.cast(weights, tf.float32), cut


def seq2seq_dataset(
    sources: Sequence[str],
    targets: Sequence[str],
    tokenizer,
    *,
    source_len: int,
    seq_len: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """`(x, y, sample_weight)` batches that teach an encoder-decoder to turn sources into targets.

    `x` holds the encoder inputs (`encode_sources`, padded to `source_len`) and the decoder
    inputs (`encode_targets`); `y` the target's next ids; `sample_weight` 1 at target tokens
    and their EOS, so that the loss counts the target only. Arguments as `sft_dataset`.
    """
    check_examples(len(sources), len(targets), seq_len, batch_size, minimum_seq_len=1)
    columns = (tf.constant(list(sources), tf.string), tf.constant(list(targets), tf.string))

    def encode(sources, targets):
        encoder_inputs = encode_sources(tokenizer, sources, source_len, pad_to=source_len)
        del encoder_inputs["cut"]
        decoder_inputs, next_ids, weights, _ = encode_targets(tokenizer, targets, seq_len)
        return {**encoder_inputs, **decoder_inputs}, next_ids, weights

    return batch_examples(columns, encode, len(sources), batch_size, shuffle, seed, repeat, drop_remainder)


def target_log_probability(logits, next_ids, weights):
    """float32 (batch,): the summed log-probability of each row's weighted next ids under `logits`
    (batch, length, vocabulary), in float32: the score of the targets `encode_targets` encodes,
    which `tfllm.evaluation.score_targets` and the exported `score` of an encoder-decoder sum."""
    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    token_log_probabilities = tf.gather(log_probabilities, next_ids, batch_dims=2)
    return tf.reduce_sum(token_log_probabilities * tf.cast(weights, tf.float32), axis=1)
