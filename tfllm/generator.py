"""Text in, text out: tokenization, KV-cached decoding with a sampler, detokenization."""

import logging

import tensorflow as tf

from tfllm.tokenizers import EOS_ID

logger = logging.getLogger(__name__)

MIN_BUCKET = 16


def bucket_length(length, limit):
    """The smallest power of two (at least MIN_BUCKET) that holds `length`, capped at `limit`."""
    bucket = MIN_BUCKET
    while bucket < length:
        bucket *= 2
    return min(bucket, limit)


class Generator:
    """Generates completions of text prompts with a `CausalLM` and a sampler.

    Every prompt starts with the end-of-text id, the context a document has in training, so an
    empty prompt generates a document from scratch. Prompts are padded into a buffer whose
    length is rounded up to a power of two, so prompts of new lengths reuse a compiled decoding
    loop instead of tracing a new one. A prompt that leaves no room for `max_new_tokens` inside
    the model's context is cut from the left (its most recent tokens are kept), with a warning.

    Args:
        model: a `CausalLM` (with `call_with_cache` and `build_cache`).
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        max_length: int. The model's longest context.

    Example:
    >>> generator = Generator(model, tokenizer, max_length=128)
    >>> generator.generate(["def main("], max_new_tokens=20, sampler=GreedySampler())
    """

    def __init__(self, model, tokenizer, max_length):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._compiled = {}
        self.traces = 0

    def _decode_fn(self, sampler, stop_token_ids):
        key = (id(sampler), stop_token_ids)
        if key not in self._compiled:

            def decode(buffer, mask, index, end_index):
                self.traces += 1
                batch, length = tf.shape(buffer)[0], tf.shape(buffer)[1]
                cache = self.model.build_cache(batch, length)
                # Fill the cache over the whole buffer once; positions past each prompt hold
                # padding now and are rewritten by `next` before any later position reads them.
                _, _, cache = self.model.call_with_cache(buffer, cache, 0)

                def next(prompt, cache, index):
                    token = prompt[:, index - 1 : index]  # (batch, 1)
                    logits, hidden, cache = self.model.call_with_cache(token, cache, index - 1)
                    return logits[:, 0, :], hidden, cache

                return sampler(next, buffer, cache=cache, index=index, mask=mask,
                               stop_token_ids=stop_token_ids, end_index=end_index)

            self._compiled[key] = tf.function(decode)
        return self._compiled[key]

    def encode_prompts(self, prompts, max_new_tokens):
        """Token ids of each prompt, with EOS in front, cut to leave room for the new tokens."""
        room = self.max_length - max_new_tokens
        ids = self.tokenizer.tokenize(tf.constant(prompts)).to_list()
        encoded = []
        for text, row in zip(prompts, ids):
            row = [EOS_ID] + row
            if len(row) > room:
                logger.warning(
                    "prompt %r has %d tokens; keeping its last %d to leave room for %d new tokens "
                    "in the %d-token context", text[:40], len(row), room, max_new_tokens, self.max_length,
                )
                row = row[len(row) - room :]
            encoded.append(row)
        return encoded

    def generate_ids(self, prompts, max_new_tokens, sampler, stop_token_ids=(EOS_ID,)):
        """Generated token ids of each prompt (without the prompt), cut at the first stop id."""
        if max_new_tokens < 1 or max_new_tokens >= self.max_length:
            raise ValueError(
                f"max_new_tokens must be in [1, {self.max_length - 1}] for a {self.max_length}-token "
                f"context. Received: max_new_tokens={max_new_tokens}"
            )
        encoded = self.encode_prompts(prompts, max_new_tokens)
        longest = max(len(row) for row in encoded)
        length = bucket_length(longest + max_new_tokens, self.max_length)
        buffer = [row + [0] * (length - len(row)) for row in encoded]
        mask = [[True] * len(row) + [False] * (length - len(row)) for row in encoded]
        index = min(len(row) for row in encoded)
        decode = self._decode_fn(sampler, tuple(stop_token_ids or ()))
        end_index = tf.constant(longest + max_new_tokens, tf.int32)
        out = decode(tf.constant(buffer, tf.int32), tf.constant(mask), tf.constant(index, tf.int32), end_index)
        results = []
        for row, tokens in zip(encoded, out.numpy().tolist()):
            new = tokens[len(row) : len(row) + max_new_tokens]
            for i, token in enumerate(new):
                if token in (stop_token_ids or ()):
                    new = new[:i]
                    break
            results.append(new)
        return results

    def generate(self, prompts, max_new_tokens, sampler, stop_token_ids=(EOS_ID,)):
        """Completions (text after each prompt) of a list of prompt strings."""
        ids = self.generate_ids(prompts, max_new_tokens, sampler, stop_token_ids)
        ragged = tf.ragged.constant(ids, dtype=tf.int32)
        return [t.decode("utf-8", errors="replace") for t in self.tokenizer.detokenize(ragged).numpy()]

