"""`ClassifyModule` in process: the training encoding, the model's softmax, and the label names."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.export.classify_module import ClassifyModule
from tfllm.data.finetune_pipeline import classify_dataset, encode_classification
from tfllm.models.classifier import Classifier
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.tokenizers import train_tokenizer

SEQ_LEN = 8
LABELS = [3, 10, 7]  # integer labels, in id order: the names must come out as "3", "10", "7"
# Short and long texts, an empty one and characters the tokenizer never saw.
TEXTS = ["abc", "xyz xyz xyz", "", "é€ unknown", "a much longer text that runs past the row"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", TEXTS, vocab_size=48)


def make_model(tokenizer, causal):
    keras.utils.set_random_seed(1)
    backbone = GPTBackbone(vocabulary_size=tokenizer.vocabulary_size, num_layers=1, num_heads=2, hidden_dim=16,
                           intermediate_dim=32, max_sequence_length=SEQ_LEN, causal=causal)
    return Classifier(backbone, num_classes=len(LABELS))


def training_batch(tokenizer, texts, pooling):
    """The inputs `classify_dataset` feeds the model in training, as one batch."""
    dataset = classify_dataset(texts, [0] * len(texts), tokenizer, seq_len=SEQ_LEN, batch_size=len(texts),
                               pooling=pooling, shuffle=False, seed=0, repeat=False)
    (x, _), = list(dataset.as_numpy_iterator())
    return x


def softmax(logits):
    logits = logits.astype(np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("pooling", ["first", "last"])
def test_encode_classification_gives_the_rows_classify_dataset_trains_on(tokenizer, pooling):
    encoded = encode_classification(tokenizer, tf.constant(TEXTS), SEQ_LEN, pooling)
    expected = training_batch(tokenizer, TEXTS, pooling)
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(encoded[key].numpy(), expected[key])
    # The empty text is the end-of-text id alone; the long one fills its row.
    assert encoded["padding_mask"].numpy().sum(axis=1).tolist()[2::2] == [1, SEQ_LEN]


@pytest.mark.parametrize("causal, pooling", [(True, "last"), (False, "first")])
def test_classify_equals_the_softmax_of_the_model_on_the_training_encoding(tokenizer, causal, pooling):
    model = make_model(tokenizer, causal)
    module = ClassifyModule(model, tokenizer, LABELS, seq_len=SEQ_LEN, pooling=pooling)
    out = {key: value.numpy() for key, value in module.classify(tf.constant(TEXTS)).items()}
    expected = softmax(model(training_batch(tokenizer, TEXTS, pooling), training=False).numpy())
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), np.ones(len(TEXTS)), atol=1e-6)
    np.testing.assert_array_equal(out["label_id"], expected.argmax(axis=1))
    names = [str(label).encode() for label in LABELS]
    assert out["label"].tolist() == [names[i] for i in expected.argmax(axis=1)]
    assert out["labels"].tolist() == [names] * len(TEXTS)
    assert out["probabilities"].dtype == np.float32 and out["label_id"].dtype == np.int32


def test_a_single_text_gets_the_answer_it_gets_in_a_batch(tokenizer):
    # Rows are padded to seq_len whatever the batch, so batching cannot change a row's answer.
    module = ClassifyModule(make_model(tokenizer, True), tokenizer, LABELS, seq_len=SEQ_LEN, pooling="last")
    batch = module.classify(tf.constant(TEXTS))["probabilities"].numpy()
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(module.classify(tf.constant([text]))["probabilities"].numpy()[0], batch[row],
                                   atol=1e-6)


def test_the_signatures_are_classify_and_serving_default_with_batch_major_outputs(tokenizer):
    module = ClassifyModule(make_model(tokenizer, True), tokenizer, LABELS, seq_len=SEQ_LEN, pooling="last")
    signatures = module.signatures()
    assert set(signatures) == {"classify", "serving_default"}
    outputs = signatures["classify"].structured_outputs
    assert {name: (t.dtype, t.shape.as_list()) for name, t in outputs.items()} == {
        "label": (tf.string, [None]), "label_id": (tf.int32, [None]),
        "probabilities": (tf.float32, [None, 3]), "labels": (tf.string, [None, 3]),
    }


def test_an_empty_batch_fails_with_the_message(tokenizer):
    module = ClassifyModule(make_model(tokenizer, True), tokenizer, LABELS, seq_len=SEQ_LEN, pooling="last")
    with pytest.raises(tf.errors.InvalidArgumentError, match="texts must hold at least one text"):
        module.classify(tf.constant([], tf.string))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": ["only"]}, "labels must hold at least 2 distinct labels"),
        ({"labels": ["a", "a"]}, "labels must hold at least 2 distinct labels"),
        ({"seq_len": 1}, "seq_len must be an integer >= 2"),
        ({"pooling": "mean"}, "pooling must be one of"),
    ],
)
def test_bad_arguments_are_value_errors(tokenizer, changes, message):
    arguments = {"labels": LABELS, "seq_len": SEQ_LEN, "pooling": "last", **changes}
    with pytest.raises(ValueError, match=message):
        ClassifyModule(make_model(tokenizer, True), tokenizer, **arguments)
