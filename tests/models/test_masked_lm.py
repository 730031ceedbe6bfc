import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_floats, random_ids, reference_layer_norm
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.models.masked_lm import MaskedLM
from tfllm.tokenizers import MASK_ID

VOCAB, SEQ, HIDDEN = 30, 12, 16


def make_backbone(causal=False):
    return GPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        causal=causal,
    )


def make_inputs(batch=2, seq=8):
    padding_mask = np.ones((batch, seq), "int32")
    padding_mask[0, -2:] = 0
    return {"token_ids": random_ids((batch, seq), VOCAB, low=4), "padding_mask": padding_mask}


def reference_head(hidden, model):
    """Dense -> exact GELU -> LayerNorm -> tied embedding + bias, in float64."""
    as64 = lambda layer: [np.asarray(w, "float64") for w in layer.get_weights()]  # noqa: E731
    kernel, bias = as64(model.head.intermediate_dense)
    erf = np.vectorize(math.erf)
    x = hidden.astype("float64") @ kernel + bias
    x = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    x = reference_layer_norm(x, *as64(model.head.layer_norm))
    embeddings = np.asarray(model.backbone.token_embedding.embeddings, "float64")
    return x @ embeddings.T + np.asarray(model.head.output_bias, "float64")


def test_logits_shape_and_backbone_variables_first():
    model = MaskedLM(make_backbone())
    logits = model(make_inputs())
    assert logits.dtype == "float32" and tuple(logits.shape) == (2, 8, VOCAB)
    backbone_weights = model.backbone.weights
    # Backbone prefix, then Dense (2), LayerNorm (2) and the output bias: the embedding is not repeated.
    assert [id(w) for w in model.weights[: len(backbone_weights)]] == [id(w) for w in backbone_weights]
    assert len(model.weights) == len(backbone_weights) + 5


def test_head_is_tied_to_the_token_embedding():
    model = MaskedLM(make_backbone())
    # Non-trivial biases and LayerNorm parameters, so the reference checks them too.
    for layer in (model.head.intermediate_dense, model.head.layer_norm):
        layer.set_weights([w + 0.1 * random_floats(w.shape, seed=3) for w in layer.get_weights()])
    model.head.output_bias.assign(random_floats((VOCAB,), seed=3))
    inputs = make_inputs()
    before = model(inputs).numpy()
    hidden = model.backbone(inputs).numpy()
    np.testing.assert_allclose(before, reference_head(hidden, model), atol=1e-4)

    embedding = model.backbone.token_embedding.embeddings
    embedding.assign(random_floats(tuple(embedding.shape), seed=4))
    after = model(inputs).numpy()
    hidden = model.backbone(inputs).numpy()
    np.testing.assert_allclose(after, reference_head(hidden, model), atol=1e-4)
    assert np.abs(after - before).max() > 1e-2


def test_loss_counts_only_the_masked_positions():
    model = MaskedLM(make_backbone())
    model.compile()
    inputs = make_inputs()
    labels = random_ids((2, 8), VOCAB, seed=1, low=4)
    weights = np.zeros((2, 8), "float32")
    weights[:, [1, 4]] = 1.0

    def loss_of(y):
        return model.evaluate(inputs, y, sample_weight=weights, verbose=0, return_dict=True)["loss"]

    loss = loss_of(labels)
    changed = labels.copy()
    changed[weights == 0] = random_ids((int((weights == 0).sum()),), VOCAB, seed=2, low=4)
    assert (changed != labels).any()
    assert loss_of(changed) == pytest.approx(loss, rel=1e-6)

    logits = model(inputs).numpy().astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert loss == pytest.approx(nll[weights == 1].mean(), rel=1e-4)


def test_rejects_a_causal_backbone():
    with pytest.raises(ValueError, match="causal=False"):
        MaskedLM(make_backbone(causal=True))


def test_fit_on_a_repeated_pattern_predicts_the_masked_tokens():
    keras.utils.set_random_seed(0)
    model = MaskedLM(make_backbone())
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=3e-2))
    # Row r repeats token 4 + 2r. Position 0 is masked in every row, so only the tokens after
    # it tell what it was: a causal model could not learn it.
    rows = 8
    labels = np.repeat(4 + 2 * np.arange(rows)[:, None], SEQ, axis=1).astype("int32")
    weights = np.zeros((rows, SEQ), "float32")
    weights[:, 0] = 1.0
    weights[np.arange(rows), 3 + np.arange(rows)] = 1.0
    x = {
        "token_ids": np.where(weights == 1, MASK_ID, labels).astype("int32"),
        "padding_mask": np.ones((rows, SEQ), "int32"),
    }
    dataset = tf.data.Dataset.from_tensors((x, labels, weights)).repeat(60)
    before = model.evaluate(x, labels, sample_weight=weights, verbose=0, return_dict=True)
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    after = model.evaluate(x, labels, sample_weight=weights, verbose=0, return_dict=True)
    # Untrained: about log(30) = 3.4.
    assert before["loss"] > 3.0
    assert after["loss"] < 0.5
    assert after["accuracy"] == 1.0


def test_config_round_trip_and_keras_file(tmp_path):
    model = MaskedLM(make_backbone(), name="mlm")
    model.compile()
    inputs = make_inputs()
    weights = np.ones((2, 8), "float32")
    model.fit(inputs, inputs["token_ids"], sample_weight=weights, epochs=1, verbose=0)

    rebuilt = MaskedLM.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.backbone.causal is False

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MaskedLM)
    np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
    assert loaded.optimizer.iterations.numpy() == 1
