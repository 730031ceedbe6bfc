"""Text in, text out: tokenization, KV-cached decoding with a sampler, detokenization."""

import json
import logging

import numpy as np
import tensorflow as tf

from tfllm.samplers import BeamSampler, Sampler
from tfllm.tokenizers import EOS_ID

logger = logging.getLogger(__name__)

MIN_BUCKET = 16
# Logit of every token but the stop token once the host has ended a streamed row; finite, as
# the samplers' own masks, so that a softmax over it never gives NaN.
_EXCLUDED = -1e9


def bucket_length(length):
    """The smallest power of two, at least `MIN_BUCKET`, that holds `length`."""
    bucket = MIN_BUCKET
    while bucket < length:
        bucket *= 2
    return bucket


def buffer_lengths(longest_prompt, max_new_tokens, max_length):
    """`(prompt_length, buffer_length)` of a batch, both bucketed.

    The cache is filled over the first `prompt_length` columns (the longest prompt rounded up to
    a power of two) and decoding runs in a buffer of `prompt_length` plus `max_new_tokens`
    rounded up to a power of two, at most `max_length`. Bucketing the two parts separately
    keeps the number of distinct shapes small while the buffer, whose length every decoding
    step pays for in attention and cache traffic, stays close to what the batch needs.
    """
    prompt_length = min(bucket_length(longest_prompt), max_length)
    return prompt_length, min(prompt_length + bucket_length(max_new_tokens), max_length)


class Generator:
    """Generates completions of text prompts with a `CausalLM` and a sampler.

    Every prompt starts with the end-of-text id, the context a document has in training, so an
    empty prompt generates a document from scratch. A prompt that leaves no room for
    `max_new_tokens` inside the model's context is cut from the left (its most recent tokens
    are kept, the leading end-of-text id first), with a logged warning.

    Decoding is one compiled `tf.function`: one pass over the prompt columns fills the KV
    cache, then the sampler's `tf.while_loop` calls `next`, which runs the model on one token
    per row against the cache. The function takes shape-free inputs, so it is traced once per
    sampler configuration whatever the prompt lengths and batch sizes (`traces` counts the
    traces); buffers are bucketed (`buffer_lengths`) so that XLA, which compiles per shape,
    sees few shapes too. The loop stops when every row has written a stop token or
    `max_new_tokens` tokens past the longest prompt.

    `on_text` streams the completions: the loop reports each token to the host as the next
    step starts, and `on_text(row, piece)` receives the new text. Streaming runs without XLA
    (the host callback cannot be compiled) and not with beam search, whose beams are reordered
    until the end. Stop strings end a streamed row at once (the next token is forced to the
    first stop id); without streaming the completion is cut at the first stop string after
    decoding.

    Args:
        model: a `CausalLM` (with `call_with_cache` and `build_cache`).
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        max_length: int >= 2. The model's longest context.
        jit_compile: bool or "auto". Compile the decoding function with XLA; "auto" does so
            when a GPU is visible (XLA decoding is slower than graph mode on CPU).

    Example:

    ```python
    generator = Generator(model, tokenizer, max_length=128)
    generator.generate(["def main("], max_new_tokens=20, sampler=GreedySampler())
    generator.generate(["x ="], 20, TopKSampler(k=5, seed=1), on_text=lambda row, s: print(s, end=""))
    ```
    """

    def __init__(self, model, tokenizer, max_length, jit_compile="auto"):
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2. Received: max_length={max_length!r}")
        if jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile must be True, False or 'auto'. Received: jit_compile={jit_compile!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.jit_compile = jit_compile
        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        self.uses_xla = jit_compile
        self._compiled = {}
        self._stream = None
        self.traces = 0

    def build_cache(self, prompt_ids, cache_length):
        """A cache of `cache_length` positions filled by one pass over `prompt_ids` (batch, len)."""
        cache = self.model.build_cache(tf.shape(prompt_ids)[0], cache_length)
        _, _, cache = self.model.call_with_cache(prompt_ids, cache, 0)
        return cache

    def next(self, prompt, cache, index):
        """The sampler callback: the logits of position `index`, from the token at `index - 1`.

        Writes the cache at `index - 1` and returns `(logits (batch, vocab), hidden, cache)`.
        """
        token = tf.gather(prompt, index - 1, axis=1)[:, None]  # (batch, 1)
        logits, hidden, cache = self.model.call_with_cache(token, cache, index - 1)
        return logits[:, 0, :], hidden[:, 0, :], cache

    def _streaming_next(self, stop_token_ids):
        def next(prompt, cache, index):
            written = tf.gather(prompt, index - 1, axis=1)  # (batch,), the last step's tokens
            ended = tf.py_function(self._report, [written, index - 1], Tout=tf.bool)
            ended = tf.ensure_shape(ended, written.shape)
            logits, hidden, cache = self.next(prompt, cache, index)
            if stop_token_ids:
                only_stop = tf.one_hot(stop_token_ids[0], tf.shape(logits)[-1], on_value=0.0, off_value=_EXCLUDED)
                logits = tf.where(ended[:, None], only_stop[None, :], logits)
            return logits, hidden, cache

        return next

    def _decode_fn(self, sampler, stop_token_ids, streaming):
        key = (type(sampler).__name__, json.dumps(sampler.get_config(), sort_keys=True), stop_token_ids, streaming)
        if key not in self._compiled:
            next = self._streaming_next(stop_token_ids) if streaming else self.next

            def decode(prompt_part, buffer, mask, index, end_index):
                self.traces += 1
                cache = self.build_cache(prompt_part, tf.shape(buffer)[1])
                return sampler(next, buffer, cache=cache, index=index, mask=mask,
                               stop_token_ids=stop_token_ids or None, end_index=end_index)

            ids = tf.TensorSpec([None, None], tf.int32)
            signature = [ids, ids, tf.TensorSpec([None, None], tf.bool), tf.TensorSpec([], tf.int32),
                         tf.TensorSpec([], tf.int32)]
            jit = self.uses_xla and not streaming
            self._compiled[key] = tf.function(decode, input_signature=signature, jit_compile=jit)
        return self._compiled[key]

    def encode_prompts(self, prompts, max_new_tokens):
        """Token ids of each prompt, with EOS in front, cut to leave room for the new tokens."""
        if not prompts:
            return []
        rows = self.tokenizer.tokenize(tf.constant(list(prompts), tf.string)).to_list()
        return self._fit_prompts([[EOS_ID] + row for row in rows], max_new_tokens, prompts)

    def _fit_prompts(self, rows, max_new_tokens, texts=None):
        room = self.max_length - max_new_tokens
        fitted = []
        for i, row in enumerate(rows):
            row = [int(token) for token in row]
            if len(row) > room:
                shown = repr(texts[i][:40]) if texts is not None else f"{i}"
                logger.warning(
                    "prompt %s has %d tokens; keeping its last %d to leave room for %d new tokens "
                    "in the %d-token context", shown, len(row), room, max_new_tokens, self.max_length,
                )
                row = row[len(row) - room :]
            fitted.append(row)
        return fitted

    def _check(self, max_new_tokens, sampler, streaming):
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < self.max_length:
            raise ValueError(
                f"max_new_tokens must be an integer in [1, {self.max_length - 1}] for a {self.max_length}-token "
                f"context. Received: max_new_tokens={max_new_tokens!r}"
            )
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a tfllm.samplers.Sampler. Received: sampler={sampler!r}")
        if isinstance(sampler, BeamSampler) and (sampler.return_all_beams or streaming):
            raise ValueError(
                "beam search decodes with return_all_beams=False and without streaming. Received: "
                f"return_all_beams={sampler.return_all_beams}, streaming={streaming}"
            )

    def generate_from_ids(self, prompt_ids, max_new_tokens, sampler, stop_token_ids=(EOS_ID,)):
        """Generated ids after each prompt of token ids (used as given, no EOS added).

        Each row is cut at its first stop id (excluded) and holds at most `max_new_tokens` ids.
        """
        self._check(max_new_tokens, sampler, streaming=False)
        if any(len(row) == 0 for row in prompt_ids):
            raise ValueError("every prompt needs at least one token id; start it with the end-of-text id")
        return self._decode(self._fit_prompts(prompt_ids, max_new_tokens), max_new_tokens, sampler,
                            tuple(stop_token_ids or ()))

    def generate_ids(self, prompts, max_new_tokens, sampler, stop_token_ids=(EOS_ID,)):
        """Generated token ids of each prompt string (without the prompt), cut at the first stop id."""
        self._check(max_new_tokens, sampler, streaming=False)
        return self._decode(self.encode_prompts(prompts, max_new_tokens), max_new_tokens, sampler,
                            tuple(stop_token_ids or ()))

    def generate(self, prompts, max_new_tokens, sampler, stop_token_ids=(EOS_ID,), stop_strings=(), on_text=None):
        """Completions (the text after each prompt) of a list of prompt strings.

        Args:
            prompts: list of str.
            max_new_tokens: int in [1, max_length - 1].
            sampler: a `tfllm.samplers.Sampler`.
            stop_token_ids: ids that end a row (not part of its completion).
            stop_strings: strings that end a row; the completion stops before the first one.
            on_text: callable `(row, piece)` to stream the completions, or None.
        """
        stop_token_ids = tuple(stop_token_ids or ())
        self._check(max_new_tokens, sampler, streaming=on_text is not None)
        encoded = self.encode_prompts(prompts, max_new_tokens)
        if on_text is None:
            ids = self._decode(encoded, max_new_tokens, sampler, stop_token_ids)
            return [cut_at_stop_strings(text, stop_strings) for text in self.detokenize(ids)]
        streams = [_TextStream(self, stop_strings, lambda piece, row=row: on_text(row, piece))
                   for row in range(len(encoded))]
        self._stream = _BatchStream(streams, [len(row) for row in encoded], max_new_tokens, stop_token_ids)
        try:
            ids = self._decode(encoded, max_new_tokens, sampler, stop_token_ids, streaming=True)
            for stream, row in zip(streams, ids):
                stream.finish(row)
        finally:
            self._stream = None
        return [stream.text() for stream in streams]

    def detokenize(self, ids):
        """Text of each list of generated ids."""
        if not ids:
            return []
        ragged = tf.ragged.constant(ids, dtype=tf.int32)
        return [t.decode("utf-8", errors="replace") for t in self.tokenizer.detokenize(ragged).numpy()]

    def _decode(self, encoded, max_new_tokens, sampler, stop_token_ids, streaming=False):
        if not encoded:
            return []
        longest = max(len(row) for row in encoded)
        prompt_length, length = buffer_lengths(longest, max_new_tokens, self.max_length)
        buffer = np.zeros((len(encoded), length), np.int32)
        mask = np.zeros((len(encoded), length), bool)
        for i, row in enumerate(encoded):
            buffer[i, : len(row)] = row
            mask[i, : len(row)] = True
        decode = self._decode_fn(sampler, stop_token_ids, streaming)
        index = min(len(row) for row in encoded)
        out = decode(buffer[:, :prompt_length], buffer, mask, np.int32(index), np.int32(longest + max_new_tokens))
        results = []
        for row, tokens in zip(encoded, out.numpy().tolist()):
            new = tokens[len(row) : len(row) + max_new_tokens]
            for i, token in enumerate(new):
                if token in stop_token_ids:
                    new = new[:i]
                    break
            results.append(new)
        return results

    def _report(self, tokens, position):
        return self._stream.report(tokens.numpy(), int(position))


def cut_at_stop_strings(text, stop_strings):
    """`text` up to (without) the earliest occurrence of any of `stop_strings`."""
    cut = len(text)
    for stop in stop_strings:
        found = text.find(stop) if stop else -1
        if 0 <= found < cut:
            cut = found
    return text[:cut]


def _held_back(text, stop_strings):
    """How many trailing characters of `text` might still become a stop string or a character."""
    held = len(text) - len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence so far
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


class _TextStream:
    """The streamed completion of one row: ids in, new text out through `emit`."""

    def __init__(self, generator, stop_strings, emit):
        self.generator = generator
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.emit = emit
        self.ids = []
        self.sent = 0
        self.ended = False

    def add(self, token):
        """Adds one generated id; True when the row has reached a stop string."""
        self.ids.append(token)
        text = self.generator.detokenize([self.ids])[0]
        cut = cut_at_stop_strings(text, self.stop_strings)
        if len(cut) < len(text):
            self.ended = True
            self._send(cut)
        else:
            self._send(text[: len(text) - _held_back(text, self.stop_strings)])
        return self.ended

    def finish(self, ids):
        """Sends what was held back once `ids`, the row's final completion, is known."""
        if not self.ended:
            self.ids = list(ids)
            self._send(self.text())
        self.ended = True

    def text(self):
        return cut_at_stop_strings(self.generator.detokenize([self.ids])[0], self.stop_strings)

    def _send(self, text):
        if len(text) > self.sent:
            self.emit(text[self.sent :])
            self.sent = len(text)


class _BatchStream:
    """Host side of a streamed batch: routes each reported column to the rows' text streams."""

    def __init__(self, streams, prompt_lengths, max_new_tokens, stop_token_ids):
        self.streams = streams
        self.prompt_lengths = prompt_lengths
        self.max_new_tokens = max_new_tokens
        self.stop_token_ids = stop_token_ids
        self.stopped = np.zeros(len(streams), bool)

    def report(self, tokens, position):
        for row, (stream, token) in enumerate(zip(self.streams, tokens.tolist())):
            generated = position - self.prompt_lengths[row]
            if self.stopped[row] or not 0 <= generated < self.max_new_tokens:
                continue
            if token in self.stop_token_ids:
                self.stopped[row] = True
            elif stream.add(token):
                self.stopped[row] = True
        return self.stopped.copy()
