import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import (
    assert_config_round_trip,
    assert_runs_in_mixed_bfloat16,
    assert_weight_count,
    random_ids,
    reference_block,
    reference_layer_norm,
)
from tfllm.models.gpt_backbone import GPTBackbone, segment_positions

VOCAB, LAYERS, HEADS, HIDDEN, SEQ = 40, 2, 2, 16, 12


def make_backbone(position="learned", **kwargs):
    return GPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        position=position,
        **kwargs,
    )


def make_inputs(batch=2, seq=8, seed=0):
    padding_mask = np.ones((batch, seq), "int32")
    padding_mask[0, -3:] = 0
    return {"token_ids": random_ids((batch, seq), VOCAB, seed), "padding_mask": padding_mask}


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_matches_numpy_reference(position):
    backbone = make_backbone(position)
    inputs = make_inputs()
    hidden = backbone(inputs).numpy()
    assert hidden.shape == (2, 8, HIDDEN)

    x = backbone.token_embedding.get_weights()[0][inputs["token_ids"]].astype("float64")
    if position == "learned":
        x = x + backbone.position_embedding.get_weights()[0][:8]
    for block in backbone.transformer_layers:
        x = reference_block(x, block, inputs["padding_mask"], rotary=position == "rope")
    expected = reference_layer_norm(x, *backbone.layer_norm.get_weights())
    np.testing.assert_allclose(hidden, expected, atol=1e-4, rtol=1e-4)


def test_layer_names_and_weight_count():
    backbone = make_backbone()
    names = [layer.name for layer in backbone.transformer_layers]
    assert names == ["transformer_layer_0", "transformer_layer_1"]
    # token + position embeddings, 12 per block, final LayerNorm.
    assert_weight_count(backbone, trainable=2 + 12 * LAYERS + 2)
    assert_weight_count(make_backbone("rope"), trainable=1 + 12 * LAYERS + 2)


def test_padded_positions_do_not_change_real_positions():
    backbone = make_backbone()
    inputs = make_inputs()
    changed = {key: value.copy() for key, value in inputs.items()}
    changed["token_ids"][0, -3:] = [1, 2, 3]
    np.testing.assert_allclose(
        backbone(changed).numpy()[0, :-3], backbone(inputs).numpy()[0, :-3], atol=1e-6
    )


def test_config_round_trip_and_keras_file(tmp_path):
    backbone = make_backbone("rope", dropout=0.1, name="gpt")
    rebuilt = assert_config_round_trip(backbone)
    assert rebuilt.position == "rope" and rebuilt.dropout == 0.1

    inputs = make_inputs()
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, GPTBackbone)
    np.testing.assert_array_equal(loaded(inputs).numpy(), backbone(inputs).numpy())


def test_mixed_bfloat16():
    assert_runs_in_mixed_bfloat16(make_backbone, make_inputs())
    backbone = make_backbone(dtype="mixed_bfloat16")
    assert backbone.transformer_layers[0].compute_dtype == "bfloat16"
    assert backbone.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 3}, "num_heads must divide hidden_dim. Received: num_heads=3, hidden_dim=16"),
        ({"position": "sinusoid"}, "position='sinusoid'"),
        ({"num_layers": 0}, "num_layers=0"),
        ({"vocabulary_size": -1}, "vocabulary_size=-1"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"num_heads": 16, "position": "rope"}, "even head_dim"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    arguments = dict(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=32, max_sequence_length=SEQ,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GPTBackbone(**arguments)


def test_segment_positions_restart_at_each_document():
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2, 0, 0], [5, 5, 5, 5, 5, 5, 6, 6, 6]], "int32")
    expected = np.zeros_like(segment_ids)
    for row, ids in enumerate(segment_ids):
        for i in range(1, len(ids)):
            expected[row, i] = expected[row, i - 1] + 1 if ids[i] == ids[i - 1] else 0
    np.testing.assert_array_equal(segment_positions(segment_ids).numpy(), expected)
    compiled = tf.function(segment_positions, jit_compile=True)
    np.testing.assert_array_equal(compiled(segment_ids).numpy(), expected)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_segment_ids_absent_none_or_one_document_agree(position):
    backbone = make_backbone(position)
    inputs = make_inputs()
    absent = backbone(inputs).numpy()
    one_document = {**inputs, "segment_ids": np.ones((2, 8), "int32")}
    np.testing.assert_allclose(backbone(one_document).numpy(), absent, atol=1e-6)
    np.testing.assert_array_equal(backbone({**inputs, "segment_ids": None}).numpy(), absent)
    traced = tf.function(backbone)
    np.testing.assert_allclose(traced(inputs).numpy(), absent, atol=1e-6)
    np.testing.assert_allclose(traced(one_document).numpy(), absent, atol=1e-6)


def test_encoder_has_the_decoder_variables_and_sees_later_tokens():
    encoder, decoder = make_backbone(causal=False), make_backbone()
    # Same variables in the same order: checkpoints restore by position.
    assert [w.path for w in encoder.weights] == [w.path for w in decoder.weights]
    encoder.set_weights(decoder.get_weights())
    inputs = make_inputs()
    changed = {key: value.copy() for key, value in inputs.items()}
    changed["token_ids"][:, 4] = (changed["token_ids"][:, 4] + 1) % VOCAB
    np.testing.assert_array_equal(decoder(changed).numpy()[:, :4], decoder(inputs).numpy()[:, :4])
    assert np.abs(encoder(changed).numpy()[:, :4] - encoder(inputs).numpy()[:, :4]).max() > 1e-3
    assert all(not block.self_attention.causal for block in encoder.transformer_layers)


def test_encoder_config_round_trip_and_no_cache():
    encoder = make_backbone(causal=False)
    assert assert_config_round_trip(encoder).causal is False
    assert make_backbone().get_config()["causal"] is True
    cache = make_backbone().build_cache(1, SEQ)
    with pytest.raises(ValueError, match="causal=False"):
        encoder.call_with_cache(np.array([[5]], "int32"), cache, 0)
