import math

import numpy as np
import pytest
import tensorflow as tf

from tfllm.evaluation import TextScorer
from tfllm.tokenizers import EOS_ID

# Non-ASCII characters (more bytes than characters) and an empty document.
TEXTS = ["the cat sat", "café ünïcode", "", "0123456789 the mat", "ü"]
SEQ_LEN = 8

# The reference runs the model on one-token contexts too, whose softmax Keras flags.
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")


def reference_nll(model, tokenizer, texts, seq_len):
    """NumPy: per-token NLL, each target predicted from its block's tokens before it, one model call each."""
    stream = [EOS_ID]
    for text in texts:
        stream += tokenizer.tokenize(tf.constant([text])).to_list()[0] + [EOS_ID]
    nll = []
    for target in range(1, len(stream)):
        start = (target - 1) // seq_len * seq_len
        logits = model(tf.constant([stream[start:target]]))[0, -1].numpy().astype(np.float64)
        log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        nll.append(-log_probs[stream[target]])
    return np.array(nll), len(stream)


def test_perplexity_and_bits_per_byte_match_numpy_over_every_token(tiny_model, char_tokenizer):
    scores = TextScorer(tiny_model, char_tokenizer, seq_len=SEQ_LEN, batch_size=3)(TEXTS)
    nll, stream_length = reference_nll(tiny_model, char_tokenizer, TEXTS, SEQ_LEN)
    assert (stream_length - 1) % SEQ_LEN != 0  # the last block is partial and must count
    assert scores["tokens"] == len(nll) == sum(len(t) for t in TEXTS) + len(TEXTS)  # characters + one EOS each
    assert scores["documents"] == 5
    assert scores["bytes"] == sum(len(t.encode("utf-8")) for t in TEXTS) + len(TEXTS) == 51  # 42 characters, 46 bytes
    assert scores["loss"] == pytest.approx(nll.mean(), rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert scores["bits_per_byte"] == pytest.approx(nll.sum() / math.log(2) / 51, rel=1e-5)
    assert scores["nll"] == pytest.approx(nll.sum(), rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_scores_do_not_depend_on_the_batch_size(tiny_model, char_tokenizer, batch_size):
    expected = TextScorer(tiny_model, char_tokenizer, seq_len=SEQ_LEN, batch_size=3)(TEXTS)
    scores = TextScorer(tiny_model, char_tokenizer, seq_len=SEQ_LEN, batch_size=batch_size)(iter(TEXTS))
    assert scores["tokens"] == expected["tokens"]
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_a_stream_shorter_than_one_block_is_scored(tiny_model, char_tokenizer):
    scores = TextScorer(tiny_model, char_tokenizer, seq_len=SEQ_LEN)(["ab"])
    nll, _ = reference_nll(tiny_model, char_tokenizer, ["ab"], SEQ_LEN)
    assert scores["tokens"] == 3 and scores["loss"] == pytest.approx(nll.mean(), rel=1e-5)


def test_bad_arguments(tiny_model, char_tokenizer):
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1. Received: seq_len=0"):
        TextScorer(tiny_model, char_tokenizer, seq_len=0)
    with pytest.raises(ValueError, match="at least one document"):
        TextScorer(tiny_model, char_tokenizer, seq_len=4)([])
