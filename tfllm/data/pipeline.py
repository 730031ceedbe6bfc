"""The language-model input pipeline: TFRecord documents to packed `(x, y)` batches.

Documents are tokenized in-graph `docs_per_batch` at a time, each followed by
the end-of-sequence id, and the resulting token stream is cut into contiguous
blocks of `seq_len + 1` tokens with `Dataset.rebatch`, so a block may span
document boundaries and no token is padded or lost except the incomplete
block at the very end of a non-repeated pass.
"""

from typing import Optional, Sequence, Union

import tensorflow as tf

from tfllm.errors import UserError

# Files read at once when shuffling; their documents interleave.
_SHUFFLE_CYCLE_LENGTH = 8


def lm_dataset(
    files: Union[str, Sequence[str]],
    tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    shuffle_buffer: int = 10_000,
    docs_per_batch: int = 64,
    num_shards: int = 1,
    shard_index: int = 0,
    eos_id: Optional[int] = None,
) -> tf.data.Dataset:
    """A dataset of `(x, y)` int32 batches of static shape `(batch_size, seq_len)`.

    `y` is `x` shifted left by one token: each block of `seq_len + 1` tokens
    gives `x = block[:-1]` and `y = block[1:]`.

    Args:
        files: TFRecord shards of one document per record (`CorpusStats.files`).
        tokenizer: any object whose `tokenize(strings)` maps a string tensor of
            shape `(batch,)` to int token ids, ragged `(batch, None)`, in-graph.
        seq_len: tokens per example.
        batch_size: examples per batch; an incomplete last batch is dropped.
        shuffle: shuffle the file order and the blocks; off, documents are read
            file by file in order (validation).
        seed: seed of every shuffle; the same seed gives the same batches.
        repeat: cycle over the documents forever (training) or go once.
        shuffle_buffer: blocks held by the block shuffle.
        docs_per_batch: documents tokenized per call of the tokenizer.
        num_shards: split the documents between this many input pipelines
            (one per worker); each keeps every `num_shards`-th document.
        shard_index: which of the `num_shards` parts this pipeline reads.
        eos_id: the id appended after every document; `None` means
            `tfllm.tokenizers.EOS_ID`.

    Example:

    >>> stats = CorpusStats.load("runs/corpus")  # doctest: +SKIP
    >>> train = lm_dataset(stats.files["train"], tokenizer, seq_len=128,
    ...                    batch_size=32, shuffle=True, seed=0, repeat=True)  # doctest: +SKIP
    """
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("shuffle_buffer", shuffle_buffer)):
        if value < 1:
            raise ValueError(f"{name} must be positive. Received: {name}={value}")
    tokens = _token_chunks(
        files, tokenizer, docs_per_batch=docs_per_batch, shuffle=shuffle, seed=seed, repeat=repeat,
        num_shards=num_shards, shard_index=shard_index, eos_id=eos_id,
    )
    # Same result as unbatch().batch(seq_len + 1), without one dataset element per token.
    blocks = tokens.rebatch(seq_len + 1, drop_remainder=True)  # (seq_len + 1,)
    if shuffle:
        blocks = blocks.shuffle(shuffle_buffer, seed=seed)
    batches = blocks.batch(batch_size, drop_remainder=True)  # (batch_size, seq_len + 1)
    return batches.map(_shift, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def count_tokens(
    files: Union[str, Sequence[str]], tokenizer, *, docs_per_batch: int = 64, eos_id: Optional[int] = None
) -> int:
    """The number of token ids in `files`, one end-of-sequence id per document included."""
    tokens = _token_chunks(
        files, tokenizer, docs_per_batch=docs_per_batch, shuffle=False, seed=0, repeat=False,
        num_shards=1, shard_index=0, eos_id=eos_id,
    )
    total = tokens.reduce(tf.constant(0, tf.int64), lambda total, chunk: total + tf.size(chunk, out_type=tf.int64))
    return int(total)


def _token_chunks(files, tokenizer, *, docs_per_batch, shuffle, seed, repeat, num_shards, shard_index, eos_id):
    """The token stream as a dataset of 1-D int32 chunks, one per `docs_per_batch` documents."""
    files = _check_files(files)
    if docs_per_batch < 1:
        raise ValueError(f"docs_per_batch must be positive. Received: docs_per_batch={docs_per_batch}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must be in [0, num_shards). Received: shard_index={shard_index}, num_shards={num_shards}"
        )
    if eos_id is None:
        # Imported here so that the data package does not need the tokenizer package to load.
        from tfllm.tokenizers import EOS_ID as eos_id
    documents = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        documents = documents.shuffle(len(files), seed=seed)
    documents = documents.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), _SHUFFLE_CYCLE_LENGTH) if shuffle else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if num_shards > 1:
        documents = documents.shard(num_shards, shard_index)
    if repeat:
        # Repeating documents, not blocks, lets blocks span epochs and re-runs the file shuffle.
        documents = documents.repeat()

    def tokenize(texts):
        ids = tokenizer.tokenize(texts)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.cast(ids, tf.int32)
        eos = tf.fill([ids.nrows(), 1], tf.constant(eos_id, tf.int32))  # (docs, 1)
        return tf.concat([ids, eos], axis=1).flat_values  # (tokens,)

    return documents.batch(docs_per_batch).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _shift(blocks):
    return blocks[:, :-1], blocks[:, 1:]  # (batch_size, seq_len) each


def _check_files(files) -> list:
    files = [files] if isinstance(files, str) else list(files)
    if not files:
        raise UserError("No TFRecord files given to the input pipeline; prepare the corpus first.")
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise UserError(
            f"TFRecord file {missing[0]!r} does not exist ({len(missing)} missing); prepare the corpus again."
        )
    return files
