"""Tokenized prompts into the fixed-shape buffer that KV-cached decoding fills."""

import collections

import tensorflow as tf

from tfllm.data.seq2seq_pipeline import decoder_start_id, encode_sources
from tfllm.tokenizers import EOS_ID
from tfllm.tokenizers.tokenizer import prepend_start_id

# Buffers are powers of two from here: few shapes for XLA to compile, and still short buffers
# for short prompts.
MIN_BUCKET = 16


class PackedPrompts(
    collections.namedtuple("PackedPrompts", ["buffer", "mask", "prompt_columns", "lengths", "index", "end_index",
                                             "dropped"])
):
    """A batch of prompts packed for decoding; every field is a tensor.

    Fields:
        buffer: int32 (batch, buffer_length), each prompt right-padded with 0.
        mask: bool (batch, buffer_length), True at prompt tokens.
        prompt_columns: int32 (batch, prompt_length), the buffer's first columns, which hold
            every prompt: one pass over them fills the KV cache.
        lengths: int32 (batch,), the tokens of each packed prompt.
        index: int32 scalar, the first position to generate (the shortest prompt's length).
        end_index: int32 scalar, where generation stops: the longest prompt plus
            `max_new_tokens`.
        dropped: int32 (batch,), the tokens cut from the front of each prompt.
    """

    __slots__ = ()

    @classmethod
    def signature(cls):
        """The `tf.TensorSpec`s of the fields, for a `tf.function` traced once for every shape."""
        ids = tf.TensorSpec([None, None], tf.int32)
        row = tf.TensorSpec([None], tf.int32)
        scalar = tf.TensorSpec([], tf.int32)
        return cls(ids, tf.TensorSpec([None, None], tf.bool), ids, row, scalar, scalar, row)


class PromptPacker:
    """Packs tokenized prompts into the buffer of KV-cached decoding.

    Each prompt gets `start_id` in front, the context a document has in training, so an empty
    prompt generates a document from scratch (a checkpoint's tokenizer may put nothing in front:
    then only an empty prompt gets `empty_id`). A prompt that leaves no room for
    `max_new_tokens` in the `max_length`-token context is cut from the left: its last
    `max_length - max_new_tokens` tokens are kept. Prompts are right-padded with 0 into a
    buffer of the longest prompt rounded up to a power of two (at least `MIN_BUCKET`), plus
    `max_new_tokens` rounded up likewise, at most `max_length`. Bucketing the two parts
    separately keeps the number of distinct shapes small while the buffer, whose length every
    decoding step pays for in attention and cache traffic, stays close to what the batch needs.

    Only TensorFlow ops: the packer runs eagerly for `tfllm.generator.Generator` and is traced
    into the serving graph of `tfllm.export.generation_module.GenerationModule`, whose
    SavedModel then runs without tfllm. Sharing it is what makes both decode the same buffers.

    Args:
        max_length: int >= 2. The model's context in tokens.
        start_id: int or None. The id put in front of every prompt (`Tokenizer.start_id`).
            Defaults to the end-of-text id of tfllm's tokenizers.
        empty_id: int. With `start_id` None, the id an empty prompt starts from
            (`Tokenizer.eos_id`).
        min_bucket: int. The smallest bucket. Defaults to `MIN_BUCKET`.

    Call arguments:
        token_ids: int ragged (batch, None), at least one prompt.
        max_new_tokens: int or int32 scalar tensor in [1, max_length - 1].
        add_start_id: bool. False packs `token_ids` as given, for prompts that already start
            with `start_id`. Defaults to `True`.

    Returns a `PackedPrompts`.

    Example:

    ```python
    packer = PromptPacker(max_length=64)
    packed = packer(tokenizer.tokenize(["def f(", "x ="]), max_new_tokens=20)
    packed.buffer.shape  # (2, 32): a 16-column prompt part and 16 columns for 20 tokens
    ```
    """

    @classmethod
    def for_tokenizer(cls, max_length, tokenizer, min_bucket=MIN_BUCKET):
        """The packer of `tokenizer`'s prompt convention (tfllm's when there is no tokenizer:
        prompts given as ids)."""
        if tokenizer is None:
            return cls(max_length, min_bucket=min_bucket)
        return cls(max_length, start_id=tokenizer.start_id, empty_id=tokenizer.eos_id, min_bucket=min_bucket)

    def __init__(self, max_length, start_id=EOS_ID, empty_id=EOS_ID, min_bucket=MIN_BUCKET):
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2. Received: max_length={max_length!r}")
        self.max_length = max_length
        self.start_id = start_id
        self.empty_id = empty_id
        # Powers of two from `min_bucket` up to the first that holds the whole context.
        self.buckets = [min_bucket]
        while self.buckets[-1] < max_length:
            self.buckets.append(2 * self.buckets[-1])

    def __call__(self, token_ids, max_new_tokens, add_start_id=True):
        token_ids = tf.cast(token_ids, tf.int32)
        if add_start_id:
            token_ids = self.add_start_id(token_ids)
        max_new_tokens = tf.cast(max_new_tokens, tf.int32)
        given = tf.cast(token_ids.row_lengths(), tf.int32)
        token_ids = self.keep_last(token_ids, self.max_length - max_new_tokens)
        lengths = tf.cast(token_ids.row_lengths(), tf.int32)
        longest = tf.reduce_max(lengths)
        prompt_length, buffer_length = self.buffer_lengths(longest, max_new_tokens)
        buffer = token_ids.to_tensor(0, shape=tf.stack([tf.size(lengths), buffer_length]))
        return PackedPrompts(
            buffer=buffer,
            mask=tf.sequence_mask(lengths, buffer_length),
            prompt_columns=buffer[:, :prompt_length],
            lengths=lengths,
            index=tf.reduce_min(lengths),
            end_index=longest + max_new_tokens,
            dropped=given - lengths,
        )

    def add_start_id(self, token_ids):
        """int32 ragged (batch, None): `start_id` (see the class), then each row of `token_ids`."""
        return prepend_start_id(token_ids, self.start_id, self.empty_id)

    @staticmethod
    def keep_last(token_ids, room):
        """Each row of ragged `token_ids` cut from the left to its last `room` tokens."""
        lengths = token_ids.row_lengths()
        dropped = tf.maximum(lengths - tf.cast(room, lengths.dtype), 0)
        # Indices into the flat values, row by row: the most recent tokens are kept.
        indices = tf.ragged.range(token_ids.row_starts() + dropped, token_ids.row_limits())
        return tf.gather(token_ids.flat_values, indices)

    def bucket(self, length):
        """int32 scalar: the smallest bucket that holds `length`, the largest if none does."""
        buckets = tf.constant(self.buckets, tf.int32)
        return tf.reduce_min(tf.where(buckets >= tf.cast(length, tf.int32), buckets, buckets[-1]))

    def buffer_lengths(self, longest_prompt, max_new_tokens):
        """int32 scalars `(prompt_length, buffer_length)` of a batch, both bucketed.

        The cache is filled over the first `prompt_length` columns and decoding runs in a
        buffer of `buffer_length` columns, both at most `max_length`.
        """
        prompt_length = tf.minimum(self.bucket(longest_prompt), self.max_length)
        return prompt_length, tf.minimum(prompt_length + self.bucket(max_new_tokens), self.max_length)


# The encoder inputs of a batch of sources, as `SourcePacker` packs them.
SOURCES_SIGNATURE = {"encoder_token_ids": tf.TensorSpec([None, None], tf.int32),
                     "encoder_padding_mask": tf.TensorSpec([None, None], tf.int32)}


class SourcePacker:
    """Packs the sources of an encoder-decoder for generation, and its decoder prompts.

    A source is encoded as in training (`tfllm.data.seq2seq_pipeline.encode_sources`: its
    first `source_len - 1` tokens and the end-of-text id) and right-padded with 0 to the longest
    source rounded up to a power of two (at most `source_len`), so that XLA sees few shapes.
    Every decoder prompt is the decoder's start id alone, packed into the buffer that decoding
    fills by a `PromptPacker` whose buckets start at 1: one prompt column, then the bucketed new
    tokens, so that no step attends over padding a causal prompt would need.

    Only TensorFlow ops, like `PromptPacker`: `Generator` and the serving graph share it.

    Args:
        tokenizer: the run's tokenizer.
        source_len: int >= 1. The encoder's context in tokens.
        max_length: int >= 2. The decoder's context in tokens.

    Call arguments:
        texts: string (batch,).
        max_new_tokens: int or int32 scalar tensor.

    Returns `(packed, sources, cut)`: the decoder's `PackedPrompts`, the encoder inputs
    (`SOURCES_SIGNATURE`) and the tokens cut from each source int32 (batch,).
    """

    def __init__(self, tokenizer, source_len, max_length):
        self.tokenizer = tokenizer
        self.source_len = source_len
        self.prompt_packer = PromptPacker(max_length, min_bucket=1)
        self.buckets = PromptPacker(max(source_len, 2)).buckets

    def __call__(self, texts, max_new_tokens):
        encoded = encode_sources(self.tokenizer, texts, self.source_len)
        token_ids, padding_mask = encoded["encoder_token_ids"], encoded["encoder_padding_mask"]
        width = tf.shape(token_ids)[1]
        buckets = tf.constant(self.buckets, tf.int32)
        bucket = tf.reduce_min(tf.where(buckets >= width, buckets, buckets[-1]))
        padding = [[0, 0], [0, tf.maximum(tf.minimum(bucket, self.source_len) - width, 0)]]
        sources = {"encoder_token_ids": tf.pad(token_ids, padding), "encoder_padding_mask": tf.pad(padding_mask, padding)}
        # Every decoder prompt is the start id that training puts in front of each target.
        rows = tf.shape(texts, out_type=tf.int64)[0]
        starts = tf.RaggedTensor.from_row_lengths(tf.fill([rows], decoder_start_id(self.tokenizer)),
                                                  tf.ones([rows], tf.int64))
        return self.prompt_packer(starts, max_new_tokens, add_start_id=False), sources, encoded["cut"]
