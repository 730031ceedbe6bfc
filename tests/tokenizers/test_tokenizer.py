"""Behaviour every tokenizer kind shares (tfllm/tokenizers/tokenizer.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tests.tokenizers.tokenizer_testing import CORPUS
from tests.tokenizers.tokenizer_testing import UNICODE_TEXTS
from tests.tokenizers.tokenizer_testing import ids_of
from tests.tokenizers.tokenizer_testing import strings_of

from tfllm.errors import UserError
from tfllm.tokenizers import KINDS
from tfllm.tokenizers import SPECIAL_TOKENS
from tfllm.tokenizers import load_tokenizer
from tfllm.tokenizers.tokenizer import take_chars

SPACES = ["a  b   c    d", "   leading", "trailing   ", "  ", "\t \t  \n  x"]


@pytest.mark.parametrize("kind", KINDS)
def test_reserved_ids_are_the_special_tokens(trained, kind):
    tokenizer = trained[kind]
    assert [tokenizer.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
def test_text_never_maps_to_reserved_ids(trained, kind):
    # The special tokens' spellings are ordinary text; every character here
    # was in the training text, so no kind needs <unk> either.
    tokenizer = trained[kind]
    ids = np.concatenate(ids_of(tokenizer, CORPUS + UNICODE_TEXTS + SPACES + ["<pad><eos><unk><mask> <mask>"]))
    assert ids.min() >= 4
    assert ids.max() < tokenizer.vocabulary_size


@pytest.mark.parametrize("kind", KINDS)
def test_tf_function_and_dataset_match_eager(trained, kind):
    tokenizer = trained[kind]
    texts = UNICODE_TEXTS + SPACES
    eager = ids_of(tokenizer, texts)

    graph = tf.function(lambda strings: tokenizer.tokenize(strings).to_tensor())(tf.constant(texts))
    assert [row[row != 0].tolist() for row in graph.numpy()] == eager

    one_by_one = tf.data.Dataset.from_tensor_slices(texts).map(tokenizer.tokenize)
    assert [ids.numpy().tolist() for ids in one_by_one] == eager

    batched = tf.data.Dataset.from_tensor_slices(texts).batch(4).map(tokenizer.tokenize)
    assert [row for ids in batched for row in ids.to_list()] == eager


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes(trained, kind):
    tokenizer = trained[kind]
    single = tokenizer.tokenize("runs  of   spaces")
    assert isinstance(single, tf.Tensor) and single.dtype == tf.int32 and single.shape.rank == 1
    batch = tokenizer.tokenize(["runs  of   spaces", "", "x"])
    assert isinstance(batch, tf.RaggedTensor) and batch.dtype == tf.int32 and batch.shape.as_list() == [3, None]
    assert batch[0].numpy().tolist() == single.numpy().tolist()
    assert batch[1].shape == [0]
    assert tokenizer.detokenize(single).shape == []
    assert tokenizer.detokenize(batch).shape == [3]
    with pytest.raises(ValueError, match="shape"):
        tokenizer.tokenize([["a"]])


@pytest.mark.parametrize("kind", KINDS)
def test_detokenize_drops_reserved_ids_and_accepts_padded_ids(trained, kind):
    tokenizer = trained[kind]
    texts = ["def f(x):\n    return x", "naïve café"]
    ids = ids_of(tokenizer, texts)
    expected = strings_of(tokenizer, tf.ragged.constant(ids))
    rng = np.random.default_rng(0)
    noisy = [list(np.insert(row, rng.integers(0, len(row) + 1, size=4), [0, 1, 2, 3])) for row in ids]
    assert strings_of(tokenizer, noisy) == expected
    # Padded with 0 as KerasHub's generation pads, int64 as Keras returns.
    padded = tf.constant(tf.ragged.constant(ids).to_tensor().numpy(), tf.int64)
    assert strings_of(tokenizer, padded) == expected
    assert tokenizer.detokenize(ids[1]).numpy().decode() == expected[1]


@pytest.mark.parametrize("kind", KINDS)
def test_detokenize_drops_ids_past_the_vocabulary(trained, kind):
    tokenizer = trained[kind]
    ids = ids_of(tokenizer, ["naïve café"])[0]
    noisy = [tokenizer.vocabulary_size] + ids + [tokenizer.vocabulary_size + 60, -1]
    assert strings_of(tokenizer, [noisy]) == strings_of(tokenizer, [ids])


def test_save_refuses_a_directory_that_is_not_a_tokenizer(trained, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=str(tmp_path)):
        trained["char"].save(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_gives_identical_ids(trained, kind, tmp_path):
    tokenizer = trained[kind]
    directory = tmp_path / "tokenizer"
    tokenizer.save(str(directory))
    tokenizer.save(str(directory))  # Saving over a saved tokenizer replaces it.
    assert os.listdir(tmp_path) == ["tokenizer"]  # No staging directories left.
    with open(directory / "tokenizer.json", encoding="utf-8") as file:
        config = json.load(file)
    assert config["kind"] == kind and config["vocabulary_size"] == tokenizer.vocabulary_size

    loaded = load_tokenizer(str(directory))
    assert type(loaded) is type(tokenizer) and loaded.vocabulary_size == tokenizer.vocabulary_size
    texts = CORPUS[:3] + UNICODE_TEXTS + SPACES
    assert ids_of(loaded, texts) == ids_of(tokenizer, texts)
    ids = [tokenizer.vocabulary_size - 1, 4, 5]
    assert [loaded.id_to_token(i) for i in ids] == [tokenizer.id_to_token(i) for i in ids]


def test_take_chars_stops_reading_at_max_chars():
    def documents():
        yield "abc"
        yield "defgh"
        raise AssertionError("read past max_chars")

    assert list(take_chars(documents(), 6)) == ["abc", "def"]
    assert list(take_chars(["ab", "cd"], 100)) == ["ab", "cd"]
    with pytest.raises(ValueError, match="max_chars"):
        list(take_chars(["ab"], 0))


class Serving(tf.Module):
    """What an exported model does with its tokenizer."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, strings):
        return self.tokenizer.tokenize(strings).to_tensor()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)


SERVE_TEXTS = UNICODE_TEXTS[:4] + SPACES[:2]

# Runs in a fresh interpreter that imports only what TF Serving has.
SERVER_PROGRAM = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tensorflow-text ops

texts = json.loads(sys.argv[1])
results = {}
for kind, path in json.loads(sys.argv[2]).items():
    served = tf.saved_model.load(path)
    ids = [served.tokenize(tf.constant(batch)) for batch in (texts, texts[:1])]
    results[kind] = {
        "ids": [batch.numpy().tolist() for batch in ids],
        "texts": [t.decode("utf-8") for t in served.detokenize(ids[0]).numpy().tolist()],
    }
# TensorFlow imports keras itself; neither KerasHub nor tfllm may be needed.
results["modules"] = sorted(m for m in ("keras_hub", "tfllm") if m in sys.modules)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """Every kind saved as a SavedModel and run in one fresh process."""
    paths = {}
    for kind in KINDS:
        paths[kind] = str(tmp_path_factory.mktemp("saved") / kind)
        tf.saved_model.save(Serving(trained[kind]), paths[kind])
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run(
        [sys.executable, "-c", SERVER_PROGRAM, json.dumps(SERVE_TEXTS), json.dumps(paths)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=str(tmp_path_factory.getbasetemp()),
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_serves_same_ids_with_only_tensorflow_text(trained, served, kind):
    tokenizer = trained[kind]
    assert served["modules"] == []
    expected = [tokenizer.tokenize(texts).to_tensor().numpy().tolist() for texts in (SERVE_TEXTS, SERVE_TEXTS[:1])]
    assert served[kind]["ids"] == expected
    assert served[kind]["texts"] == strings_of(tokenizer, tf.constant(expected[0]))
