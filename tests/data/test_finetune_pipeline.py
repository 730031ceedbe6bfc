import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.finetune_pipeline import classify_dataset, sft_dataset
from tfllm.tokenizers import EOS_ID, train_tokenizer

TEXTS = ["good film", "bad", "", "a very long review that runs past the row", "ok then"]
LABELS = [1, 0, 2, 1, 0]
SEQ_LEN = 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", TEXTS + ["Q: A: 0123456789+=?"], vocab_size=64)


def ids_of(tokenizer, texts):
    """Each text's ids, tokenized on its own."""
    return [list(row) for row in tokenizer.tokenize(texts).numpy()]


def padded(rows, length=SEQ_LEN):
    return np.array([row + [0] * (length - len(row)) for row in rows])


def batches(dataset):
    return list(dataset.as_numpy_iterator())


def classify(tokenizer, pooling, **kwargs):
    options = dict(seq_len=SEQ_LEN, batch_size=5, pooling=pooling, shuffle=False, seed=0, repeat=False)
    return classify_dataset(TEXTS, LABELS, tokenizer, **{**options, **kwargs})


@pytest.mark.parametrize(
    "pooling, layout",
    [
        ("first", lambda ids: ([EOS_ID] + ids)[:SEQ_LEN]),
        ("last", lambda ids: ids[: SEQ_LEN - 1] + [EOS_ID]),
    ],
)
def test_classify_layouts(tokenizer, pooling, layout):
    (x, y), = batches(classify(tokenizer, pooling))
    rows = [layout(ids) for ids in ids_of(tokenizer, TEXTS)]
    np.testing.assert_array_equal(x["token_ids"], padded(rows))
    np.testing.assert_array_equal(x["padding_mask"], padded([[1] * len(row) for row in rows]))
    np.testing.assert_array_equal(y, LABELS)
    # The long review fills the row; the empty text is the EOS alone.
    assert x["padding_mask"][3].sum() == SEQ_LEN and x["padding_mask"][2].sum() == 1


def test_classify_shapes_and_remainder(tokenizer):
    dataset = classify(tokenizer, "last", batch_size=2)
    assert dataset.element_spec == (
        {"token_ids": tf.TensorSpec((2, SEQ_LEN), tf.int32), "padding_mask": tf.TensorSpec((2, SEQ_LEN), tf.int32)},
        tf.TensorSpec((2,), tf.int32),
    )
    assert len(batches(dataset)) == 2
    kept = batches(classify(tokenizer, "last", batch_size=2, drop_remainder=False))
    assert [len(y) for _, y in kept] == [2, 2, 1]


def test_classify_shuffle_keeps_texts_with_their_labels(tokenizer):
    rows = padded([([EOS_ID] + ids)[:SEQ_LEN] for ids in ids_of(tokenizer, TEXTS)])
    dataset = classify_dataset(
        TEXTS, list(range(len(TEXTS))), tokenizer, seq_len=SEQ_LEN, batch_size=5, pooling="first",
        shuffle=True, seed=3, repeat=True,
    )
    (x1, y1), (x2, y2) = batches(dataset.take(2))
    for x, y in ((x1, y1), (x2, y2)):
        assert sorted(y) == list(range(len(TEXTS)))
        np.testing.assert_array_equal(x["token_ids"], rows[y])  # each row still carries its own text
    assert not np.array_equal(y1, y2)  # reshuffled every epoch


PROMPTS = ["Q: 1+1=", "Q: 2+2=", "Q: 9+9+9=", ""]
COMPLETIONS = ["2", "4 ok", "27 is the answer", "A: 0"]


def sft(tokenizer, **kwargs):
    options = dict(seq_len=SEQ_LEN, batch_size=4, shuffle=False, seed=0, repeat=False)
    return sft_dataset(PROMPTS, COMPLETIONS, tokenizer, **{**options, **kwargs})


def test_sft_weights_only_completion_and_eos(tokenizer):
    (x, y, weights), = batches(sft(tokenizer, seq_len=12))
    prompts, completions = ids_of(tokenizer, PROMPTS), ids_of(tokenizer, COMPLETIONS)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        sequence = ([EOS_ID] + prompt + completion + [EOS_ID])[:13]
        # y[i] is sequence[i + 1]: the prompt tokens get weight 0, everything after weight 1.
        targets = len(sequence) - 1 - len(prompt)
        expected = [0.0] * len(prompt) + [1.0] * targets
        np.testing.assert_array_equal(weights[row], expected + [0.0] * (12 - len(expected)))
        np.testing.assert_array_equal(y[row], padded([sequence[1:]], 12)[0])
        np.testing.assert_array_equal(x["token_ids"][row], padded([sequence[:-1]], 12)[0])
        np.testing.assert_array_equal(x["padding_mask"][row], padded([[1] * (len(sequence) - 1)], 12)[0])
    # Decoding the weighted targets gives the completions back (row 2's is cut at the row's end);
    # with an empty prompt the leading EOS predicts the first completion token.
    decoded = [tokenizer.detokenize(y[row][weights[row] == 1.0]).numpy().decode() for row in range(4)]
    completions_text = [tokenizer.detokenize(c).numpy().decode() for c in completions]
    assert decoded[0] == completions_text[0] and decoded[1] == completions_text[1]
    assert completions_text[2].startswith(decoded[2]) and decoded[3] == completions_text[3]
    # Rows 0 and 1 end with the weighted EOS; row 2's completion is cut before its EOS.
    assert y[0][weights[0] == 1.0][-1] == EOS_ID and y[1][weights[1] == 1.0][-1] == EOS_ID
    assert EOS_ID not in y[2][weights[2] == 1.0] and weights[2].sum() == 12 - len(prompts[2])


def test_sft_shapes(tokenizer):
    dataset = sft(tokenizer, batch_size=3)
    spec = tf.TensorSpec((3, SEQ_LEN), tf.int32)
    assert dataset.element_spec == (
        {"token_ids": spec, "padding_mask": spec}, spec, tf.TensorSpec((3, SEQ_LEN), tf.float32)
    )
    (x, y, weights), = batches(dataset)
    # Padding is id 0 with weight 0 in y.
    assert (weights[y == 0] == 0).all()
    # x is y shifted right by one wherever x holds a token.
    real = x["padding_mask"][:, 1:]
    np.testing.assert_array_equal(x["token_ids"][:, 1:] * real, y[:, :-1] * real)


def test_every_iterator_yields_the_same_shuffled_stream(tokenizer):
    dataset = classify(tokenizer, "last", batch_size=2, shuffle=True, repeat=True)
    first, second = iter(dataset), iter(dataset)
    for _ in range(8):  # 3 passes over the 5 examples
        (xa, ya), (xb, yb) = next(first), next(second)
        np.testing.assert_array_equal(xa["token_ids"], xb["token_ids"])
        np.testing.assert_array_equal(ya, yb)
