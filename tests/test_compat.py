"""Each test reproduces an upstream bug with Keras alone and asserts it is still there.

When one of these fails, Keras (or tensorflow-text) has fixed the bug: delete the matching workaround in
tfllm/compat.py (and this test).
"""

import io

import keras
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text

from tfllm import compat


def adam_step(gradient):
    variable = keras.Variable(np.zeros((3, 2), "float32"))
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.apply_gradients([(gradient, variable)])
    return variable.numpy()


def test_keras_adam_miscounts_repeated_sparse_rows_and_the_workaround_fixes_it():
    sparse = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, -1.0]]), tf.constant([1, 1]), tf.constant([3, 2]))
    dense = adam_step(tf.convert_to_tensor(sparse))
    assert not np.allclose(adam_step(sparse), dense, atol=1e-4)  # the upstream bug
    np.testing.assert_allclose(adam_step(compat.sum_repeated_slices([sparse])[0]), dense, atol=1e-6)


def fit_clipped(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.SGD(0.1, global_clipnorm=0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.fit(x, x[:, :3] * 5, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return model.layers[0].kernel.numpy()


def test_keras_clips_per_replica_under_mirrored_strategy(one_device_strategy, mirrored_strategy):
    one = fit_clipped(one_device_strategy)
    two = fit_clipped(mirrored_strategy)
    assert not np.allclose(one, two, atol=1e-5)  # the upstream bug: clipping depends on replicas


def test_keras_gradient_accumulation_fails_under_mirrored_strategy(mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss="mse")
    x = np.ones((8, 4), "float32")
    with pytest.raises(Exception, match="merge_call"):
        model.fit(x, x[:, :1], batch_size=4, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def sentencepiece_model():
    texts = ["the quick brown fox jumps over the lazy dog", "a lazy dog sleeps", "quick foxes run"] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=30, model_type="unigram", minloglevel=2
    )
    return model.getvalue()


def test_tf_text_sentencepiece_dies_at_set_seed_and_the_workaround_survives(sentencepiece_model, tmp_path):
    upstream = tf_text.SentencepieceTokenizer(model=sentencepiece_model, out_type=tf.int32)
    fixed = compat.sentencepiece_tokenizer(sentencepiece_model)
    expected = upstream.tokenize(["the lazy fox"]).to_list()
    tf.random.set_seed(0)
    with pytest.raises(tf.errors.NotFoundError, match="SentencepieceOp"):
        upstream.tokenize(["the lazy fox"])  # the upstream bug: the kernel's resource is gone
    assert fixed.tokenize(["the lazy fox"]).to_list() == expected

    module = tf.Module()
    module.tokenizer = fixed
    module.tokenize = tf.function(lambda s: fixed.tokenize(s).flat_values, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    tf.random.set_seed(1)
    assert loaded.tokenize(tf.constant(["the lazy fox"])).numpy().tolist() == expected[0]


def collections_while(monkeypatch, action):
    """How many times `action()` runs `gc.collect`."""
    import gc

    calls = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: calls.append(args) or collect(*args))
    action()
    monkeypatch.undo()
    return len(calls)


def built_dense():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    return layer


def test_keras_collects_garbage_for_every_deleted_variable_and_the_workaround_does_not(monkeypatch):
    def delete(layer, delete_attribute):
        layer._tracker.unlock()
        delete_attribute(layer, "_kernel")
        layer._tracker.lock()

    keras_layer, our_layer = built_dense(), built_dense()
    assert collections_while(monkeypatch, lambda: delete(keras_layer, delattr)) == 1
    assert collections_while(monkeypatch, lambda: delete(our_layer, compat.delete_variable)) == 0
    # The same result: the variable is neither a weight nor a checkpoint dependency any more.
    for layer in (keras_layer, our_layer):
        assert len(layer.weights) == 1 and layer.weights[0] is layer.bias
        assert "_kernel" not in dict(layer._trackable_children()) and not hasattr(layer, "_kernel")
