"""The language-model input pipeline: TFRecord documents to packed `(x, y)` batches.

Documents are tokenized in-graph `docs_per_batch` at a time, each followed by
the end-of-sequence id, and the resulting token stream is cut into contiguous
blocks of `seq_len + 1` tokens with `Dataset.rebatch`, so a block may span
document boundaries and no token is padded or lost except the incomplete
block at the very end of a non-repeated pass. With `pack=True` each block also
carries segment ids that number its documents, so that attention can stay
inside one document.
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
    pack: bool = False,
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
        eos_id: the id appended after every document; `None` means the
            tokenizer's `eos_id`.
        pack: make `x` a dict of `"token_ids"` and `"segment_ids"`, both
            `(batch_size, seq_len)`: the segment id is 1 for the first
            document of a row and grows by one after each end-of-sequence id
            (`segment_ids`). The model derives positions from them.

    Returns:
        `(x, y)` batches; `y` is always the `(batch_size, seq_len)` next ids.

    Example:

    >>> stats = CorpusStats.load("runs/corpus")  # doctest: +SKIP
    >>> train = lm_dataset(stats.files["train"], tokenizer, seq_len=128,
    ...                    batch_size=32, shuffle=True, seed=0, repeat=True)  # doctest: +SKIP
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive. Received: seq_len={seq_len}")
    eos_id = _default_eos(tokenizer, eos_id)
    batches = token_blocks(
        files, tokenizer, block_len=seq_len + 1, batch_size=batch_size, shuffle=shuffle, seed=seed,
        repeat=repeat, shuffle_buffer=shuffle_buffer, docs_per_batch=docs_per_batch, num_shards=num_shards,
        shard_index=shard_index, eos_id=eos_id,
    )

    def shift(blocks):
        x, y = blocks[:, :-1], blocks[:, 1:]  # (batch_size, seq_len) each
        if pack:
            x = {"token_ids": x, "segment_ids": segment_ids(x, eos_id)}
        return x, y

    return batches.map(shift, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def token_blocks(
    files: Union[str, Sequence[str]],
    tokenizer,
    *,
    block_len: int,
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
    """Batches of `block_len` consecutive ids of the token stream, int32 `(batch_size, block_len)`.

    The stream every pretraining pipeline cuts: `lm_dataset` takes blocks of
    `seq_len + 1` and shifts them, a masked LM takes blocks of `seq_len`. The
    arguments are those of `lm_dataset`.
    """
    for name, value in (("block_len", block_len), ("batch_size", batch_size), ("shuffle_buffer", shuffle_buffer)):
        if value < 1:
            raise ValueError(f"{name} must be positive. Received: {name}={value}")
    tokens = _token_chunks(
        files, tokenizer, docs_per_batch=docs_per_batch, shuffle=shuffle, seed=seed, repeat=repeat,
        num_shards=num_shards, shard_index=shard_index, eos_id=eos_id,
    )
    # Same result as unbatch().batch(block_len), without one dataset element per token.
    blocks = tokens.rebatch(block_len, drop_remainder=True)  # (block_len,)
    if shuffle:
        # One pass over an endless stream; the same order for every iterator (see above).
        blocks = blocks.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    options = tf.data.Options()
    # Tokenizer state is lookup tables fixed at construction (and caches that never change a
    # result), so an iterator checkpoint may leave it out: without this, saving the iterator
    # with tf.train.Checkpoint fails on the tokenizer's stateful ops.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return blocks.batch(batch_size, drop_remainder=True).with_options(options)  # (batch_size, block_len)


def segment_ids(token_ids: tf.Tensor, eos_id: int) -> tf.Tensor:
    """Numbers the documents of each row: 1 for the first, +1 at every `eos_id`.

    The end-of-sequence id between two documents begins the next one, so every
    packed document starts like a generation prompt (EOS, then its tokens) and
    its last token predicts the EOS that ends it. A row that starts inside a
    document starts at 1 all the same.

    Args:
        token_ids: int tensor of shape `(batch, seq)`.
        eos_id: the id that ends a document.

    Returns:
        int32 tensor of shape `(batch, seq)`.
    """
    ends = tf.cast(tf.equal(token_ids, tf.cast(eos_id, token_ids.dtype)), tf.int32)
    # Inclusive: an EOS counts itself, so it opens the next document.
    return tf.cumsum(ends, axis=1) + 1


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
    eos_id = _default_eos(tokenizer, eos_id)
    files = tf.constant(files)
    cycle_length = min(len(files), _SHUFFLE_CYCLE_LENGTH) if shuffle else 1

    def epoch_documents(epoch):
        # The file order of an epoch is a function of (seed, epoch) alone, not of how many
        # iterators the dataset made before: every iterator (Keras makes one to build the model,
        # a resumed run makes a new one) yields the same stream, which a resume can skip into.
        order = tf.random.experimental.stateless_shuffle(files, seed=[seed, epoch]) if shuffle else files
        documents = tf.data.Dataset.from_tensor_slices(order).interleave(
            tf.data.TFRecordDataset, cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return documents.shard(num_shards, shard_index) if num_shards > 1 else documents

    # Repeating documents, not blocks, lets blocks span epochs and reshuffles the files.
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    documents = epochs.flat_map(epoch_documents)

    def tokenize(texts):
        ids = tokenize_ragged(tokenizer, texts)  # (docs, None)
        eos = tf.fill([ids.nrows(), 1], tf.constant(eos_id, tf.int32))  # (docs, 1)
        return tf.concat([ids, eos], axis=1).flat_values  # (tokens,)

    return documents.batch(docs_per_batch).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def tokenize_ragged(tokenizer, strings: tf.Tensor) -> tf.RaggedTensor:
    """`tokenizer.tokenize(strings)` as int32 ragged ids `(batch, None)`, in-graph.

    A tokenizer may return a dense tensor (its rows all one length); every pipeline wants ragged
    rows of one dtype to append the end-of-sequence id to and to pad.
    """
    ids = tokenizer.tokenize(strings)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    return tf.cast(ids, tf.int32)


def _default_eos(tokenizer, eos_id: Optional[int]) -> int:
    """`eos_id`, else the tokenizer's end-of-text id (tfllm's reserved one for a bare tokenizer)."""
    if eos_id is not None:
        return eos_id
    # Imported here so that the data package does not need the tokenizer package to load.
    from tfllm.tokenizers import EOS_ID

    return getattr(tokenizer, "eos_id", EOS_ID)


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
