"""Loss, perplexity and bits per byte of a causal language model over every token of some text."""

import math

import numpy as np
import tensorflow as tf


# Documents tokenized per call of the tokenizer.
_DOCS_PER_CALL = 64


class TextScorer:
    """Scores a `CausalLM` on a sequence of documents, every token counted exactly once.

    The documents are laid out as in training, each followed by the end-of-text id, with one
    more end-of-text id in front so that the first token of the first document is predicted
    from the context every document starts with (the one generation uses too). The stream
    `EOS d1 EOS d2 EOS ... dn EOS` is cut into consecutive blocks of `seq_len + 1` tokens that
    overlap by one token; each block predicts its last `seq_len` tokens from the ones before
    them, within the block. The last, shorter block is padded with id 0 and the padded
    positions get weight 0, so every token after the leading EOS is predicted once: the
    tokens of every document and the EOS after each.

    Bits per byte divide the total negative log-likelihood, in bits, by the number of UTF-8
    bytes of the documents' text plus one byte per document for the EOS that ends it (the
    separator a newline would be in a plain text file); being per byte rather than per token,
    it compares models with different tokenizers. Text is scored as given: no cleaning.

    Args:
        model: a `CausalLM`, called on int32 `(batch, seq_len)` token ids.
        tokenizer: a `tfllm.tokenizers.Tokenizer`.
        seq_len: int >= 1. Tokens predicted per block; the model sees at most this many.
        batch_size: int >= 1. Blocks per model call. Defaults to `16`.

    Call arguments:
        texts: an iterable of str, the documents (streamed, so it may be a generator).

    Returns a dict: `loss` (mean negative log-likelihood per token, nats), `perplexity`
    (`exp(loss)`), `bits_per_byte`, `nll` (total, nats), `tokens` (predicted tokens),
    `bytes` and `documents`.

    Example:

    ```python
    scorer = TextScorer(model, tokenizer, seq_len=128, batch_size=16)
    scorer(["First document.", "Second one."])["perplexity"]
    ```
    """

    def __init__(self, model, tokenizer, seq_len, batch_size=16):
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        ids = tf.TensorSpec([None, seq_len], tf.int32)
        self._score = tf.function(
            self._batch_nll, input_signature=[ids, ids, tf.TensorSpec([None, seq_len], tf.float32)]
        )

    def _batch_nll(self, x, y, weights):
        """float64 scalar: the total weighted negative log-likelihood of one batch."""
        logits = self.model(x, training=False)  # (batch, seq_len, vocab) float32
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        return tf.reduce_sum(tf.cast(nll, tf.float64) * tf.cast(weights, tf.float64))

    def __call__(self, texts):
        counts = {"bytes": 0, "documents": 0}
        nll, tokens = 0.0, 0
        for x, y, weights in self._batches(self._blocks(texts, counts)):
            nll += float(self._score(x, y, weights))
            tokens += int(weights.sum())
        if tokens == 0:
            raise ValueError("TextScorer needs at least one document. Received: no texts")
        loss = nll / tokens
        return {
            "loss": loss,
            "perplexity": math.exp(loss),
            "bits_per_byte": nll / math.log(2) / counts["bytes"],
            "nll": nll,
            "tokens": tokens,
            "bytes": counts["bytes"],
            "documents": counts["documents"],
        }

    def _blocks(self, texts, counts):
        """Yields lists of at most `seq_len + 1` ids; see the class docstring."""
        eos = self.tokenizer.eos_id
        stream = [eos]
        for chunk in _chunks(texts, _DOCS_PER_CALL):
            rows = self.tokenizer.tokenize(tf.constant(chunk, tf.string)).to_list()
            for text, row in zip(chunk, rows):
                counts["bytes"] += len(text.encode("utf-8")) + 1
                counts["documents"] += 1
                stream.extend(row)
                stream.append(eos)
            start = 0
            while len(stream) - start >= self.seq_len + 1:
                yield stream[start : start + self.seq_len + 1]
                start += self.seq_len
            # The last token of a block is the first input of the next one.
            stream = stream[start:]
        if len(stream) > 1:
            yield stream

    def _batches(self, blocks):
        """`(x, y, weights)` NumPy batches of `batch_size` rows (the last may have fewer)."""
        shape = (self.batch_size, self.seq_len)
        x, y, weights = np.zeros(shape, np.int32), np.zeros(shape, np.int32), np.zeros(shape, np.float32)
        rows = 0
        for block in blocks:
            n = len(block) - 1
            x[rows, :n], y[rows, :n], weights[rows, :n] = block[:-1], block[1:], 1.0
            rows += 1
            if rows == self.batch_size:
                yield x, y, weights
                x, y, weights = np.zeros(shape, np.int32), np.zeros(shape, np.int32), np.zeros(shape, np.float32)
                rows = 0
        if rows:
            yield x[:rows], y[:rows], weights[:rows]


def _chunks(items, size):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
