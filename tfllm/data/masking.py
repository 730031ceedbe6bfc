"""Masked-language-model data: BERT-style dynamic masking of the pretraining token stream.

`mask_tokens` is a pure graph op: given a stateless seed it always masks the
same positions, so `masked_lm_dataset` draws fresh masks for every batch (each
batch's seed folds in a batch counter) and still yields the same batches for
the same `seed`, also after an iterator checkpoint is restored.
"""

from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfllm.data.pipeline import segment_ids, token_blocks
from tfllm.errors import UserError
from tfllm.tokenizers import MASK_ID, WordPieceTokenizer
from tfllm.tokenizers.tokenizer import NUM_SPECIAL_TOKENS
from tfllm.tokenizers.word_piece_tokenizer import SUFFIX_INDICATOR

# Of the chosen positions: this share becomes the mask id, the next
# _RANDOM_SHARE a random regular id, and the rest keeps its token (BERT).
_MASK_SHARE = 0.8
_RANDOM_SHARE = 0.1


def mask_tokens(
    token_ids: tf.Tensor,
    *,
    seed: tf.Tensor,
    mask_rate: float,
    vocabulary_size: int,
    mask_id: int = MASK_ID,
    num_special: int = NUM_SPECIAL_TOKENS,
    word_starts: Optional[tf.Tensor] = None,
):
    """Chooses about `mask_rate` of the regular tokens and corrupts them for a masked LM.

    Each regular token (id >= `num_special`; padding and the other reserved
    ids never are) is chosen independently with probability `mask_rate`. A
    chosen token becomes `mask_id` with probability 0.8, a uniformly random
    regular id in `[num_special, vocabulary_size)` with probability 0.1, and
    stays itself otherwise. With `word_starts`, whole words are chosen with
    probability `mask_rate` instead, so every token still is chosen with that
    probability, and all the pieces of a chosen word are chosen together.

    Args:
        token_ids: int tensor of shape `(batch, seq)`.
        seed: int tensor of shape `(2,)`, the stateless seed; the same seed
            gives the same output.
        mask_rate: float in (0, 1), the expected share of regular tokens chosen.
        vocabulary_size: int, ids of random replacements stay below it.
        mask_id: int, the id of the mask token.
        num_special: int, ids below it are reserved and never chosen.
        word_starts: optional bool tensor of shape `(batch, seq)`, True where
            a token begins a word (`wordpiece_word_starts`). Tokens before the
            first start of a row form one word.

    Returns:
        `(masked_ids, labels, weights)`, each of shape `(batch, seq)`: the
        corrupted int32 ids, the original int32 ids, and float32 1.0 at chosen
        positions and 0.0 elsewhere.
    """
    if not 0.0 < mask_rate < 1.0:
        raise ValueError(f"mask_rate must be in (0, 1). Received: mask_rate={mask_rate}")
    if vocabulary_size <= num_special:
        raise ValueError(
            f"vocabulary_size must exceed num_special. Received: vocabulary_size={vocabulary_size}, "
            f"num_special={num_special}"
        )
    token_ids = tf.cast(token_ids, tf.int32)
    shape = tf.shape(token_ids)
    choose_seed, action_seed, replace_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    if word_starts is None:
        draw = tf.random.stateless_uniform(shape, choose_seed)  # (batch, seq)
    else:
        # Word w of a row is the w-th start; tokens before the first start are word 0.
        word_index = tf.cumsum(tf.cast(word_starts, tf.int32), axis=1)  # (batch, seq)
        word_draw = tf.random.stateless_uniform([shape[0], shape[1] + 1], choose_seed)  # (batch, words + 1)
        draw = tf.gather(word_draw, word_index, batch_dims=1)  # (batch, seq)
    chosen = (token_ids >= num_special) & (draw < mask_rate)
    action = tf.random.stateless_uniform(shape, action_seed)
    random_ids = tf.random.stateless_uniform(
        shape, replace_seed, minval=num_special, maxval=vocabulary_size, dtype=tf.int32
    )
    masked_ids = tf.where(chosen & (action < _MASK_SHARE), tf.constant(mask_id, tf.int32), token_ids)
    replace = chosen & (action >= _MASK_SHARE) & (action < _MASK_SHARE + _RANDOM_SHARE)
    masked_ids = tf.where(replace, random_ids, masked_ids)
    return masked_ids, token_ids, tf.cast(chosen, tf.float32)


def wordpiece_continuation_table(tokenizer) -> np.ndarray:
    """Bool `(vocabulary_size,)`: True for the ids whose token continues a word (starts with "##")."""
    return np.array(
        [tokenizer.id_to_token(i).startswith(SUFFIX_INDICATOR) for i in range(tokenizer.vocabulary_size)],
        dtype=bool,
    )


def wordpiece_word_starts(token_ids: tf.Tensor, continuation_table) -> tf.Tensor:
    """Bool `(batch, seq)`: True where a WordPiece token begins a word.

    Args:
        token_ids: int tensor of shape `(batch, seq)` with ids below the
            length of `continuation_table`.
        continuation_table: bool `(vocabulary_size,)`, True for "##" pieces
            (`wordpiece_continuation_table`).

    Returns:
        bool tensor of shape `(batch, seq)`; reserved ids count as word starts.
    """
    return tf.logical_not(tf.gather(tf.convert_to_tensor(continuation_table, tf.bool), token_ids))


def masked_lm_dataset(
    files: Union[str, Sequence[str]],
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    mask_rate: float,
    shuffle: bool,
    seed: int,
    repeat: bool,
    whole_word: bool = False,
    pack: bool = False,
    shuffle_buffer: int = 10_000,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """`(x, y, sample_weight)` batches for a masked LM, from the stream `lm_dataset` reads.

    Blocks are `seq_len` consecutive tokens of the documents, each document
    followed by the end-of-sequence id, with no shift. The `j`-th block of the
    pipeline is masked with a seed folded from `(seed, shard_index)` and `j`,
    so masks differ from block to block and epoch to epoch, differ between
    input pipelines, repeat exactly for the same `seed`, and do not depend on
    `batch_size`: one global batch or its halves on two replicas, or its
    micro-batches, get the same masks.

    Args:
        files: TFRecord shards of one document per record.
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        seq_len: tokens per example.
        batch_size: examples per batch; an incomplete last batch is dropped.
        mask_rate: expected share of regular tokens to predict (`data.mask_rate`).
        shuffle, seed, repeat, shuffle_buffer, num_shards, shard_index: as in
            `lm_dataset`; `seed` also seeds the masks.
        whole_word: mask every piece of a chosen word; WordPiece tokenizers
            only (`data.whole_word_masking`).
        pack: add `"segment_ids"` to `x` (`tfllm.data.pipeline.segment_ids`).

    Returns:
        A dataset of `(x, y, sample_weight)`: `x` a dict of int32 `"token_ids"`
        (masked), `"padding_mask"` (all ones) and, with `pack`,
        `"segment_ids"`, each `(batch_size, seq_len)`; `y` the original int32
        ids; `sample_weight` float32, 1.0 at the positions to predict.
    """
    table = _continuation_table(tokenizer) if whole_word else None
    blocks = token_blocks(
        files, tokenizer, block_len=seq_len, batch_size=batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
        shuffle_buffer=shuffle_buffer, num_shards=num_shards, shard_index=shard_index, eos_id=tokenizer.eos_id,
    )
    base_seed = tf.constant([seed, shard_index], tf.int64)

    def mask(index, token_ids):
        block_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        token_ids = token_ids[None, :]  # (1, seq_len): one block, masked on its own
        word_starts = None if table is None else wordpiece_word_starts(token_ids, table)
        masked_ids, labels, weights = mask_tokens(
            token_ids, seed=block_seed, mask_rate=mask_rate, vocabulary_size=tokenizer.vocabulary_size,
            word_starts=word_starts,
        )
        x = {"token_ids": masked_ids[0], "padding_mask": tf.ones_like(labels[0])}
        if pack:
            x["segment_ids"] = segment_ids(labels, tokenizer.eos_id)[0]
        return x, labels[0], weights[0]

    # The block counter is part of the pipeline's state, so an iterator checkpoint resumes the masks.
    counted = tf.data.Dataset.zip(tf.data.Dataset.counter(), blocks.unbatch())
    masked = counted.map(mask, num_parallel_calls=tf.data.AUTOTUNE)
    return masked.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _continuation_table(tokenizer) -> np.ndarray:
    if not isinstance(tokenizer, WordPieceTokenizer):
        kind = getattr(tokenizer, "kind", type(tokenizer).__name__)
        raise UserError(
            f"data.whole_word_masking=true needs WordPiece tokens, but data.tokenizer={kind}; "
            "set data.tokenizer=wordpiece or data.whole_word_masking=false."
        )
    return wordpiece_continuation_table(tokenizer)
