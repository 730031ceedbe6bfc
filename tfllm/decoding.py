"""KV-cached decoding of packed prompts: fill the cache, then let a sampler call `next`.

`tfllm.generator.Generator` and the serving graph of
`tfllm.export.generation_module.GenerationModule` both decode through `decode` and read the
completions with `completions`, so served and in-process generation agree token for token.
Only TensorFlow ops: the functions are traced into the SavedModel, which runs without tfllm.
"""

import tensorflow as tf


def fill_cache(build_cache, call_with_cache, prompt_columns, cache_length):
    """A KV cache of `cache_length` positions filled by one pass over `prompt_columns`.

    Positions past a shorter prompt hold padding then; `next` rewrites each of them before any
    later position reads it.

    Args:
        build_cache: the model's `build_cache(batch_size, cache_length)`.
        call_with_cache: the model's `call_with_cache(token_ids, cache, cache_index)`.
        prompt_columns: int32 (batch, prompt_length).
        cache_length: int or int32 scalar tensor.
    """
    cache = build_cache(tf.shape(prompt_columns)[0], cache_length)
    _, _, cache = call_with_cache(prompt_columns, cache, 0)
    return cache


def cache_builder(build_cache, sources=None):
    """The `build_cache(batch_size, cache_length)` that `fill_cache` and `decode` call: the
    model's own, or an encoder-decoder's for `sources` (`SOURCES_SIGNATURE` of
    `tfllm.prompt_packer`), which runs the encoder once, here."""
    if sources is None:
        return build_cache
    return lambda batch_size, cache_length: build_cache(
        batch_size, cache_length, sources["encoder_token_ids"], sources["encoder_padding_mask"])


def cached_next(call_with_cache):
    """The sampler's `next(prompt, cache, index)` callback of a KV-cached model.

    It runs the model on the token at `index - 1` of every row against the cache, writes the
    cache there, and returns `(logits (batch, vocab), hidden (batch, hidden), cache)`: the
    prediction of the token at `index`.
    """

    def next(prompt, cache, index):
        token = tf.gather(prompt, index - 1, axis=1)[:, None]  # (batch, 1)
        logits, hidden, cache = call_with_cache(token, cache, index - 1)
        return logits[:, 0, :], hidden[:, 0, :], cache

    return next


def decode(build_cache, call_with_cache, sampler, packed, stop_token_ids, wrap_next=None):
    """The buffer of `packed` filled by `sampler` from `packed.index` to `packed.end_index`.

    Args:
        build_cache: the model's `build_cache(batch_size, cache_length)`.
        call_with_cache: the model's `call_with_cache(token_ids, cache, cache_index)`.
        sampler: a `tfllm.samplers.Sampler`.
        packed: a `tfllm.prompt_packer.PackedPrompts`.
        stop_token_ids: ids that end a row (the tokenizer's end-of-text id); empty fills every row
            to `end_index`.
        wrap_next: None, or a callable that takes `next` and returns the callback the sampler
            calls instead (streaming watches and steers the tokens this way).

    Returns the int32 buffer (batch, buffer_length).
    """
    cache = fill_cache(build_cache, call_with_cache, packed.prompt_columns, tf.shape(packed.buffer)[1])
    next = cached_next(call_with_cache)
    if wrap_next is not None:
        next = wrap_next(next)
    return sampler(next, packed.buffer, cache=cache, index=packed.index, mask=packed.mask,
                   stop_token_ids=tuple(stop_token_ids) or None, end_index=packed.end_index)


def completions(tokens, lengths, max_new_tokens, stop_token_ids):
    """int32 ragged (batch, None): each row's new tokens, before its first stop id.

    Args:
        tokens: int32 (batch, buffer_length), a decoded buffer.
        lengths: int32 (batch,), the prompt lengths: generated tokens start there.
        max_new_tokens: int or int32 scalar; a row holds at most this many tokens.
        stop_token_ids: ids that end a row (not part of its completion).
    """
    positions = tf.range(tf.shape(tokens)[1])[None, :]  # (1, length)
    start = tf.cast(lengths, tf.int32)[:, None]  # (batch, 1)
    stop = start + tf.cast(max_new_tokens, tf.int32)
    generated = tf.logical_and(positions >= start, positions < stop)
    is_stop = tf.zeros_like(generated)
    for stop_id in stop_token_ids:
        is_stop = tf.logical_or(is_stop, tf.equal(tokens, stop_id))
    first_stop = tf.reduce_min(tf.where(tf.logical_and(generated, is_stop), positions, stop), axis=1, keepdims=True)
    kept = tf.logical_and(positions >= start, positions < first_stop)
    return tf.ragged.boolean_mask(tokens, kept)
