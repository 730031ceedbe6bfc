import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_ids
from tfllm.models.classifier import Classifier
from tfllm.models.gpt_backbone import GPTBackbone

VOCAB, SEQ, HIDDEN, CLASSES = 30, 8, 16, 3


def make_backbone(causal=True):
    return GPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        causal=causal,
    )


def make_inputs():
    # Right-padded rows of 8, 5 and 1 real tokens.
    padding_mask = (np.arange(SEQ)[None, :] < np.array([[8], [5], [1]])).astype("int32")
    token_ids = random_ids((3, SEQ), VOCAB, low=4) * padding_mask
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def dense_logits(model, pooled):
    kernel, bias = model.output_dense.get_weights()
    return pooled.astype("float64") @ kernel + bias


@pytest.mark.parametrize("causal", [True, False])
def test_last_pooling_reads_the_last_real_token(causal):
    model = Classifier(make_backbone(causal), num_classes=CLASSES, pooling="last")
    inputs = make_inputs()
    logits = model(inputs)
    assert logits.dtype == "float32" and tuple(logits.shape) == (3, CLASSES)
    hidden = model.backbone(inputs).numpy()
    pooled = hidden[np.arange(3), [7, 4, 0]]
    np.testing.assert_allclose(logits.numpy(), dense_logits(model, pooled), atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_first_pooling_reads_position_0(causal):
    model = Classifier(make_backbone(causal), num_classes=CLASSES, pooling="first")
    inputs = make_inputs()
    hidden = model.backbone(inputs).numpy()
    np.testing.assert_allclose(model(inputs).numpy(), dense_logits(model, hidden[:, 0]), atol=1e-5)


def test_auto_pooling_is_first_for_an_encoder_and_last_for_a_decoder():
    assert Classifier(make_backbone(causal=False), num_classes=CLASSES).pooled_position == "first"
    assert Classifier(make_backbone(causal=True), num_classes=CLASSES).pooled_position == "last"


def test_backbone_variables_come_first():
    model = Classifier(make_backbone(), num_classes=CLASSES)
    backbone_weights = model.backbone.weights
    assert [id(w) for w in model.weights[: len(backbone_weights)]] == [id(w) for w in backbone_weights]
    assert [w.path for w in model.weights[len(backbone_weights) :]] == [
        "output_dense/kernel",
        "output_dense/bias",
    ]


@pytest.mark.parametrize("causal", [True, False])
def test_fit_separates_two_token_ranges(causal):
    keras.utils.set_random_seed(0)
    model = Classifier(make_backbone(causal), num_classes=2)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-2))
    # Class 0: every token in 4..9; class 1: every token in 10..15; right-padded rows.
    labels = np.array([0, 1] * 4, "int32")
    token_ids = random_ids((8, SEQ), 10, seed=1, low=4) + 6 * labels[:, None]
    lengths = np.array([8, 6, 5, 8, 3, 7, 8, 4])
    padding_mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype("int32")
    x = {"token_ids": token_ids * padding_mask, "padding_mask": padding_mask}
    dataset = tf.data.Dataset.from_tensors((x, labels)).repeat(12)
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    result = model.evaluate(x, labels, verbose=0, return_dict=True)
    assert result["accuracy"] == 1.0
    assert result["loss"] < 0.2


def test_config_round_trip_and_keras_file(tmp_path):
    model = Classifier(make_backbone(causal=False), num_classes=CLASSES, pooling="first", dropout=0.1)
    model.compile()
    inputs = make_inputs()
    history = model.fit(inputs, np.array([0, 1, 2]), epochs=1, verbose=0)
    # One accuracy, over sequences (class weights weigh only the loss).
    assert sorted(history.history) == ["accuracy", "loss"]

    rebuilt = Classifier.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    assert (rebuilt.num_classes, rebuilt.pooling, rebuilt.dropout) == (CLASSES, "first", 0.1)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Classifier)
    np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
    assert loaded.optimizer.iterations.numpy() == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes=1"),
        ({"pooling": "mean"}, "pooling='mean'"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    arguments = {"num_classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        Classifier(make_backbone(), **arguments)
