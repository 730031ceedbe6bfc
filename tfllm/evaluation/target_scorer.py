"""Loss and perplexity of an encoder-decoder's reference targets given their sources."""

import math

import tensorflow as tf

from tfllm.data.seq2seq_pipeline import seq2seq_dataset, target_log_probability


def score_targets(model, tokenizer, sources, targets, source_len, seq_len, batch_size=16):
    """The mean negative log-likelihood of each target's tokens (and its end-of-text id) given
    its source, teacher-forced, as the training loss counts them.

    Sources and targets are encoded as in training (`seq2seq_dataset`): a target longer than
    `seq_len` is scored on its first `seq_len` predictions.

    Returns:
        `{"loss": nats per target token, "perplexity": exp(loss), "tokens": tokens scored}`.

    Example:

    ```python
    score_targets(model, tokenizer, ["def f(): pass"], ["Do nothing."], 256, 32)["perplexity"]
    ```
    """
    dataset = seq2seq_dataset(sources, targets, tokenizer, source_len=source_len, seq_len=seq_len,
                              batch_size=batch_size, shuffle=False, seed=0, repeat=False, drop_remainder=False)

    @tf.function
    def batch_nll(x, y, weights):
        log_probability = target_log_probability(model(x, training=False), y, weights)
        return -tf.reduce_sum(tf.cast(log_probability, tf.float64)), tf.reduce_sum(weights)

    total, tokens = 0.0, 0.0
    for x, y, weights in dataset:
        nll, count = batch_nll(x, y, weights)
        total, tokens = total + float(nll), tokens + float(count)
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": int(tokens)}

