import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import random_ids
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.precision import global_policy

VOCAB, SEQ = 30, 12


def make_model(position="learned", **kwargs):
    backbone = GPTBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        position=position,
        **kwargs,
    )
    return CausalLM(backbone)


def test_logits_are_float32_and_a_plain_tensor_means_all_real():
    model = make_model()
    token_ids = random_ids((2, 8), VOCAB)
    logits = model(token_ids)
    assert logits.dtype == "float32"
    assert tuple(logits.shape) == (2, 8, VOCAB)
    explicit = model({"token_ids": token_ids, "padding_mask": np.ones((2, 8), "int32")})
    np.testing.assert_array_equal(logits.numpy(), explicit.numpy())


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_changing_later_tokens_leaves_earlier_logits_unchanged(position):
    model = make_model(position)
    token_ids = random_ids((2, 10), VOCAB)
    changed = token_ids.copy()
    t = 4
    changed[:, t + 1 :] = random_ids((2, 10 - t - 1), VOCAB, seed=5)
    before, after = model(token_ids).numpy(), model(changed).numpy()
    np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], atol=1e-6)
    assert not np.allclose(after[:, t + 1 :], before[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_cached_decoding_equals_the_full_pass(position):
    model = make_model(position)
    token_ids = random_ids((2, 10), VOCAB)
    full = model(token_ids).numpy()
    cache = model.build_cache(batch_size=2, max_length=SEQ)
    assert [tuple(entries.shape) for entries in tf.nest.flatten(cache)] == [(2, 2, SEQ, 8)] * 4
    logits, hidden, cache = model.call_with_cache(token_ids[:, :4], cache, 0)
    assert tuple(hidden.shape) == (2, 4, 16)
    np.testing.assert_allclose(logits.numpy(), full[:, :4], atol=1e-5)
    step = tf.function(model.call_with_cache)
    for index in range(4, 10):
        logits, _, cache = step(token_ids[:, index : index + 1], cache, tf.constant(index))
        assert logits.dtype == "float32"
        np.testing.assert_allclose(logits.numpy()[:, 0], full[:, index], atol=1e-5)


def test_build_cache_rejects_a_cache_longer_than_the_positions():
    with pytest.raises(ValueError, match="max_length=13, max_sequence_length=12"):
        make_model().build_cache(batch_size=1, max_length=13)


def test_config_round_trip_and_keras_file(tmp_path):
    model = make_model("rope")
    model.compile()
    token_ids = random_ids((2, 8), VOCAB)
    model.fit(token_ids, random_ids((2, 8), VOCAB, seed=1), epochs=1, verbose=0)

    rebuilt = CausalLM.from_config(model.get_config())
    assert rebuilt.backbone.get_config() == model.backbone.get_config()

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CausalLM)
    np.testing.assert_array_equal(loaded(token_ids).numpy(), model(token_ids).numpy())
    # Optimizer state comes back too, so training resumes where it stopped.
    assert loaded.optimizer.iterations.numpy() == 1


def test_default_compile_is_adamw_with_sparse_crossentropy():
    model = make_model()
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.optimizer.weight_decay == pytest.approx(0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    assert isinstance(model.optimizer, keras.optimizers.SGD)


def test_fit_on_a_repeated_sequence_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-2))
    sequence = np.tile(np.arange(1, 7), 3)[: SEQ + 1]  # 1 2 3 4 5 6 1 2 ...
    tokens = np.tile(sequence, (4, 1)).astype("int32")
    dataset = tf.data.Dataset.from_tensors((tokens[:, :-1], tokens[:, 1:])).repeat(30)
    before = model.evaluate(tokens[:, :-1], tokens[:, 1:], verbose=0, return_dict=True)
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    after = model.evaluate(tokens[:, :-1], tokens[:, 1:], verbose=0, return_dict=True)
    # Untrained: about log(30) = 3.4. Every token after the first is predictable.
    assert before["loss"] > 3.0
    assert after["loss"] < 0.5
    assert after["accuracy"] > 0.9


def test_sample_weight_removes_positions_from_the_loss():
    model = make_model()
    model.compile()
    token_ids, labels = random_ids((2, 8), VOCAB), random_ids((2, 8), VOCAB, seed=1)
    weights = np.zeros((2, 8), "float32")
    weights[:, :3] = 1.0
    weighted = model.evaluate(token_ids, labels, sample_weight=weights, verbose=0, return_dict=True)
    logits = model(token_ids).numpy().astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert weighted["loss"] == pytest.approx(nll[:, :3].mean(), rel=1e-4)


def test_mixed_bfloat16_trains_with_float32_logits():
    with global_policy("mixed_bfloat16"):
        model = make_model()
        model.compile()
        token_ids = random_ids((2, 8), VOCAB)
        logits = model(token_ids)
        assert logits.dtype == "float32"
        history = model.fit(token_ids, random_ids((2, 8), VOCAB, seed=1), epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        logits = model(token_ids)
        cache = model.build_cache(batch_size=2, max_length=SEQ)
        assert {entries.dtype for entries in tf.nest.flatten(cache)} == {tf.bfloat16}
        step_logits, _, _ = model.call_with_cache(token_ids[:, :3], cache, 0)
        np.testing.assert_allclose(step_logits.numpy(), logits.numpy()[:, :3], atol=0.1)
