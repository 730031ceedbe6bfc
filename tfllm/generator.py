"""Text in, text out: tokenization, KV-cached decoding with a sampler, detokenization."""

import json
import logging

import numpy as np
import tensorflow as tf

from tfllm import decoding
from tfllm.prompt_packer import SOURCES_SIGNATURE, PackedPrompts, PromptPacker, SourcePacker
from tfllm.samplers import BeamSampler, Sampler
from tfllm.samplers.validation import check_setting

logger = logging.getLogger(__name__)

# Logit of every token but the stop token once the host has ended a streamed row; finite, as
# the samplers' own masks, so that a softmax over it never gives NaN.
_EXCLUDED = -1e9


class Generator:
    """Generates completions of text prompts with a `CausalLM` and a sampler.

    Prompts are packed by `tfllm.prompt_packer.PromptPacker`: every prompt starts with the
    end-of-text id, the context a document has in training, so an empty prompt generates a
    document from scratch, and a prompt that leaves no room for `max_new_tokens` inside the
    model's context is cut from the left (its most recent tokens are kept), with a logged
    warning. The exported serving graph packs and decodes with the same code.

    Decoding (`tfllm.decoding.decode`) is one compiled `tf.function`: one pass over the prompt
    columns fills the KV cache, then the sampler's `tf.while_loop` calls `next`, which runs the
    model on one token per row against the cache. The function takes shape-free inputs, so it
    is traced once per sampler configuration whatever the prompt lengths and batch sizes
    (`traces` counts the traces); buffers are bucketed so that XLA, which compiles per shape,
    sees few shapes too. The loop stops when every row has written a stop token or
    `max_new_tokens` tokens past the longest prompt.

    `on_text` streams the completions: the loop reports each token to the host as the next
    step starts, and `on_text(row, piece)` receives the new text. Streaming runs without XLA
    (the host callback cannot be compiled) and not with beam search, whose beams are reordered
    until the end. Stop strings end a streamed row at once (the next token is forced to the
    first stop id); without streaming the completion is cut at the first stop string after
    decoding.

    An encoder-decoder (`model.is_encoder_decoder`, a `Seq2SeqLM`) takes each prompt as its
    source: `SourcePacker` encodes the sources (a source longer than the encoder's context is
    cut to its first tokens, with a warning), the encoder runs once per call when the cache is
    built, and the decoder generates from its start id; the completion is the target.

    Args:
        model: a `CausalLM` or `Seq2SeqLM` (with `call_with_cache` and `build_cache`).
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        max_length: int >= 2. The model's longest context.
        jit_compile: bool or "auto". Compile the decoding function with XLA; "auto" does so
            wherever it was measured to pay (`xla_pays_for_decoding`): on CPUs and GPUs, at
            every model size measured. Streaming decodes in graph mode either way.

    Example:

    ```python
    generator = Generator(model, tokenizer, max_length=128)
    generator.generate(["def main("], max_new_tokens=20, sampler=GreedySampler())
    generator.generate(["x ="], 20, TopKSampler(k=5, seed=1), on_text=lambda row, s: print(s, end=""))
    ```
    """

    def __init__(self, model, tokenizer, max_length, jit_compile="auto"):
        self.packer = PromptPacker.for_tokenizer(max_length, tokenizer)
        self.source_packer = None
        if getattr(model, "is_encoder_decoder", False):
            self.source_packer = SourcePacker(tokenizer, model.backbone.max_source_length, max_length)
            # Traced once: eagerly, its few dozen small ops cost more than a short generation.
            self._pack_sources = tf.function(self.source_packer, input_signature=[
                tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])
        if jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile must be True, False or 'auto'. Received: jit_compile={jit_compile!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.jit_compile = jit_compile
        self.uses_xla = xla_pays_for_decoding() if jit_compile == "auto" else jit_compile
        self._compiled = {}
        self._stream = None
        self.traces = 0

    def build_cache(self, prompt_ids, cache_length, sources=None):
        """A cache of `cache_length` positions filled by one pass over `prompt_ids` (batch, len);
        an encoder-decoder's holds the encoded `sources` (`SOURCES_SIGNATURE`)."""
        build_cache = decoding.cache_builder(self.model.build_cache, sources)
        return decoding.fill_cache(build_cache, self.model.call_with_cache, prompt_ids, cache_length)

    def next(self, prompt, cache, index):
        """The sampler callback: the logits of position `index`, from the token at `index - 1`.

        Writes the cache at `index - 1` and returns `(logits (batch, vocab), hidden, cache)`.
        """
        return decoding.cached_next(self.model.call_with_cache)(prompt, cache, index)

    def _streaming(self, stop_token_ids):
        """Wraps `next` to report each step's tokens to the host and end the rows it stopped."""

        def wrap(next):
            def streaming_next(prompt, cache, index):
                written = tf.gather(prompt, index - 1, axis=1)  # (batch,), the last step's tokens
                ended = tf.py_function(self._report, [written, index - 1], Tout=tf.bool)
                ended = tf.ensure_shape(ended, written.shape)
                logits, hidden, cache = next(prompt, cache, index)
                if stop_token_ids:
                    only_stop = tf.one_hot(stop_token_ids[0], tf.shape(logits)[-1], on_value=0.0,
                                           off_value=_EXCLUDED)
                    logits = tf.where(ended[:, None], only_stop[None, :], logits)
                return logits, hidden, cache

            return streaming_next

        return wrap

    def _decode_fn(self, sampler, stop_token_ids, streaming):
        key = (type(sampler).__name__, json.dumps(sampler.get_config(), sort_keys=True), stop_token_ids, streaming)
        if key not in self._compiled:
            wrap_next = self._streaming(stop_token_ids) if streaming else None

            def decode(packed, sources=None):
                self.traces += 1
                build_cache = decoding.cache_builder(self.model.build_cache, sources)
                return decoding.decode(build_cache, self.model.call_with_cache, sampler, packed, stop_token_ids,
                                       wrap_next)

            signature = [PackedPrompts.signature()] + ([SOURCES_SIGNATURE] if self.source_packer else [])
            jit = self.uses_xla and not streaming
            self._compiled[key] = tf.function(decode, input_signature=signature, jit_compile=jit)
        return self._compiled[key]

    def pack(self, prompts, max_new_tokens):
        """The `PackedPrompts` of a list of prompt strings (an encoder-decoder's: its start ids);
        logs a warning for each prompt cut."""
        return self._inputs(prompts, max_new_tokens)[0]

    def _inputs(self, prompts, max_new_tokens):
        """`(packed, sources)` of a list of prompt strings: their `PackedPrompts` and None, or an
        encoder-decoder's start ids and the encoder inputs of the prompts (`SourcePacker`)."""
        texts = tf.constant(list(prompts), tf.string)
        if self.source_packer is None:
            return self._pack(self.tokenizer.tokenize(texts), max_new_tokens, add_start_id=True, texts=prompts), None
        packed, sources, cut = self._pack_sources(texts, tf.constant(max_new_tokens, tf.int32))
        cut_rows = np.flatnonzero(cut.numpy())
        if len(cut_rows) == 1:
            logger.warning("source %r has %d tokens more than the encoder's %d-token context; they are cut",
                           prompts[cut_rows[0]][:40], int(cut[cut_rows[0]]), self.source_packer.source_len)
        elif len(cut_rows):
            # One line for a batch: an evaluation would otherwise print one per source.
            logger.warning("%d of %d sources are longer than the encoder's %d-token context; their ends are cut",
                           len(cut_rows), len(prompts), self.source_packer.source_len)
        return packed, sources

    def _pack(self, token_ids, max_new_tokens, add_start_id, texts=None):
        packed = self.packer(token_ids, max_new_tokens, add_start_id=add_start_id)
        kept, dropped = packed.lengths.numpy(), packed.dropped.numpy()
        for i in np.flatnonzero(dropped):
            shown = repr(texts[i][:40]) if texts is not None else f"{i}"
            logger.warning(
                "prompt %s has %d tokens; keeping its last %d to leave room for %d new tokens "
                "in the %d-token context", shown, kept[i] + dropped[i], kept[i], max_new_tokens, self.max_length,
            )
        return packed

    def _check(self, max_new_tokens, sampler, streaming):
        check_setting("max_new_tokens", max_new_tokens, max_length=self.max_length)
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a tfllm.samplers.Sampler. Received: sampler={sampler!r}")
        if isinstance(sampler, BeamSampler) and (sampler.return_all_beams or streaming):
            raise ValueError(
                "beam search decodes with return_all_beams=False and without streaming. Received: "
                f"return_all_beams={sampler.return_all_beams}, streaming={streaming}"
            )

    def generate_from_ids(self, prompt_ids, max_new_tokens, sampler, stop_token_ids=None):
        """Generated ids after each prompt of token ids (used as given, no EOS added).

        Each row is cut at its first stop id (excluded) and holds at most `max_new_tokens` ids.
        """
        self._check(max_new_tokens, sampler, streaming=False)
        if any(len(row) == 0 for row in prompt_ids):
            raise ValueError("every prompt needs at least one token id; start it with the end-of-text id")
        if not prompt_ids:
            return []
        token_ids = tf.ragged.constant([[int(token) for token in row] for row in prompt_ids], tf.int32)
        if self.source_packer is not None:
            raise ValueError("an encoder-decoder generates from source texts; use generate or generate_ids")
        return self._decode((self._pack(token_ids, max_new_tokens, add_start_id=False), None), max_new_tokens, sampler,
                            self._stops(stop_token_ids))

    def generate_ids(self, prompts, max_new_tokens, sampler, stop_token_ids=None):
        """Generated token ids of each prompt string (without the prompt), cut at the first stop id."""
        self._check(max_new_tokens, sampler, streaming=False)
        if not prompts:
            return []
        return self._decode(self._inputs(prompts, max_new_tokens), max_new_tokens, sampler,
                            self._stops(stop_token_ids))

    def generate(self, prompts, max_new_tokens, sampler, stop_token_ids=None, stop_strings=(), on_text=None):
        """Completions (the text after each prompt) of a list of prompt strings.

        Args:
            prompts: list of str.
            max_new_tokens: int in [1, max_length - 1].
            sampler: a `tfllm.samplers.Sampler`.
            stop_token_ids: ids that end a row (not part of its completion); None: the
                tokenizer's end-of-text id, () none.
            stop_strings: strings that end a row; the completion stops before the first one.
            on_text: callable `(row, piece)` to stream the completions, or None.
        """
        stop_token_ids = self._stops(stop_token_ids)
        self._check(max_new_tokens, sampler, streaming=on_text is not None)
        if not prompts:
            return []
        inputs = self._inputs(prompts, max_new_tokens)
        if on_text is None:
            ids = self._decode(inputs, max_new_tokens, sampler, stop_token_ids)
            return [cut_at_stop_strings(text, stop_strings) for text in self.detokenize(ids)]
        streams = [_TextStream(self, stop_strings, lambda piece, row=row: on_text(row, piece))
                   for row in range(len(prompts))]
        self._stream = _BatchStream(streams, inputs[0].lengths.numpy().tolist(), max_new_tokens, stop_token_ids)
        try:
            ids = self._decode(inputs, max_new_tokens, sampler, stop_token_ids, streaming=True)
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

    def _stops(self, stop_token_ids):
        """The stop ids as a tuple: None means the tokenizer's end-of-text id."""
        return (self.tokenizer.eos_id,) if stop_token_ids is None else tuple(stop_token_ids)

    def _decode(self, inputs, max_new_tokens, sampler, stop_token_ids, streaming=False):
        """Generated ids of `inputs`, `(packed, sources)` as `_inputs` gives them."""
        packed, sources = inputs
        decode = self._decode_fn(sampler, stop_token_ids, streaming)
        tokens = decode(packed) if sources is None else decode(packed, sources)
        return decoding.completions(tokens, packed.lengths, max_new_tokens, stop_token_ids).to_list()

    def _report(self, tokens, position):
        return self._stream.report(tokens.numpy(), int(position))


def xla_pays_for_decoding():
    """Whether `jit_compile="auto"` compiles decoding with XLA on this machine.

    Measured (bench/RESULTS.md, "Generation"), XLA decoding beats graph mode on CPUs at every
    size tried, once compiled: 1.4-1.8x at 6 layers and hidden 384, 1.3x at GPT-2 124M
    shapes, 2.3-9x for gpt-tiny, because a step's few hundred small ops run as a few fused
    kernels instead of paying TensorFlow's per-op dispatch. GPUs compiled decoding with XLA
    before (not re-measured here: no GPU was at hand). The cost is a compilation per batch size
    and buffer bucket (seconds, reused by later calls of the same bucket), so every device
    answers yes; a device where graph mode is measured faster belongs here.
    """
    return True


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
