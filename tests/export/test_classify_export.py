"""`tfllm export` and `tfllm serve` of a classify run: a fresh process and the REST API answer
what the in-process `Classifier` answers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfllm.manifest import read_manifest, verify_manifest
from tfllm.export.server import ModelServer, load_servable
from tests.export.test_server import request
from tests.trainers.test_evaluate import labeled_records, masked_lm_run, train_classifier, write_jsonl
from tfllm import cli
from tfllm.data.finetune_pipeline import classify_dataset
from tfllm.run import Run

# Integer labels: the served names must be their strings, in sorted id order.
LABELS = [3, 10, 7]
NAMES = ["3", "7", "10"]
# A text of each class, an empty one, unknown characters, and one longer than the 16-token rows.
TEXTS = ["abcab", "01234", "+-*/", "", "é€ unknown", "a" * 30 + "0"]
BATCHES = [TEXTS[:1], TEXTS]
LIMITS = {"max_body_bytes": 4096, "max_batch_size": 4, "max_new_tokens": 8}

# Runs in a fresh interpreter that imports only what TF Serving has.
FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tensorflow-text ops the tokenizer uses

loaded = tf.saved_model.load(sys.argv[1])

def call(signature, texts):
    out = loaded.signatures[signature](texts=tf.constant(texts, tf.string))
    return {name: tensor.numpy().astype(str if tensor.dtype == tf.string else None).tolist()
            for name, tensor in out.items()}

batches = json.loads(sys.argv[2])
results = {"classify": [call("classify", texts) for texts in batches],
           "serving_default": call("serving_default", batches[-1]),
           "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tfllm", "keras_hub", "export"))}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("classify_export")
    return train_classifier(str(directory / "run"), write_jsonl(directory / "train.jsonl", labeled_records(LABELS)))


@pytest.fixture(scope="module")
def export_dir(classify_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("classify_exports") / "classifier")
    assert cli.main(["export", "--run-dir", classify_run, "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def launched(export_dir):
    """The fresh process, started before the in-process reference so that the two overlap."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-c", FRESH_PROCESS, os.path.join(export_dir, "1"),
                                json.dumps(BATCHES)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=os.path.dirname(export_dir))
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def in_process(classify_run, launched):
    """Class probabilities of each batch from the loaded `Classifier` on the training encoding."""
    run = Run.open(classify_run)
    config, tokenizer = run.config, run.tokenizer
    model, _ = run.load_model()
    # Trained from scratch, the backbone is causal: training put the end-of-text id last.
    assert run.backbone_causal and model.pooled_position == "last"
    probabilities = []
    for texts in BATCHES:
        dataset = classify_dataset(texts, [0] * len(texts), tokenizer, seq_len=config.model.seq_len,
                                   batch_size=len(texts), pooling="last", shuffle=False, seed=0, repeat=False)
        (x, _), = list(dataset)
        probabilities.append(tf.nn.softmax(model(x, training=False), axis=-1).numpy())
    return probabilities


@pytest.fixture(scope="module")
def fresh(launched):
    stdout, stderr = launched.communicate(timeout=300)
    assert launched.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("batch", [0, 1])
def test_a_fresh_process_gets_the_in_process_probabilities_and_labels_at_two_batch_sizes(fresh, in_process, batch):
    served, expected = fresh["classify"][batch], in_process[batch]
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(np.sum(served["probabilities"], axis=1), np.ones(len(expected)), atol=1e-6)
    assert served["label_id"] == expected.argmax(axis=1).tolist()
    assert served["label"] == [NAMES[i] for i in expected.argmax(axis=1)]
    assert served["labels"] == [NAMES] * len(expected)


@pytest.mark.slow
def test_the_trained_classifier_tells_the_classes_apart_so_the_comparison_means_something(in_process):
    assert in_process[1][:3].argmax(axis=1).tolist() == [0, 2, 1]  # labels 3, 10, 7 in id order 0, 2, 1
    assert in_process[1][:3].max(axis=1).min() > 0.5


@pytest.mark.slow
def test_serving_default_is_classify_and_the_fresh_process_needs_no_tfllm(fresh):
    assert fresh["serving_default"] == fresh["classify"][1]
    assert fresh["modules"] == []


def test_the_manifest_records_the_task_labels_and_signatures(export_dir, classify_run):
    version_dir = os.path.join(export_dir, "1")
    manifest = read_manifest(version_dir)
    assert verify_manifest(version_dir) == []
    assert manifest["task"] == "classify" and manifest["labels"] == [3, 7, 10]
    assert manifest["seq_len"] == 16 and manifest["pooling"] == "last"
    assert manifest["run_dir"] == os.path.abspath(classify_run)
    assert set(manifest["signatures"]) == {"classify", "serving_default"}
    assert manifest["signatures"]["classify"]["outputs"] == {
        "label": {"dtype": "string", "shape": [None]}, "label_id": {"dtype": "int32", "shape": [None]},
        "probabilities": {"dtype": "float32", "shape": [None, 3]}, "labels": {"dtype": "string", "shape": [None, 3]},
    }


@pytest.fixture(scope="module")
def server(export_dir):
    with ModelServer(load_servable(export_dir), "127.0.0.1", 0, **LIMITS) as server:
        yield server


def predict_url(server, suffix=":predict"):
    return f"{server.url}/v1/models/classifier{suffix}"


def test_the_rest_api_answers_rows_and_columns_with_the_in_process_labels(server, in_process):
    texts, expected = TEXTS[:3], in_process[1][:3]
    status, rows = request(predict_url(server), {"signature_name": "classify", "instances": texts})
    assert status == 200 and [row["label"] for row in rows["predictions"]] == [NAMES[i] for i in
                                                                               expected.argmax(axis=1)]
    np.testing.assert_allclose([row["probabilities"] for row in rows["predictions"]], expected, atol=1e-5)
    assert [row["labels"] for row in rows["predictions"]] == [NAMES] * 3
    status, columns = request(predict_url(server), {"inputs": {"texts": texts}})  # serving_default
    assert status == 200 and columns["outputs"]["label"] == [row["label"] for row in rows["predictions"]]
    assert columns["outputs"]["label_id"] == expected.argmax(axis=1).tolist()


def test_the_rest_api_applies_the_batch_limit_and_shows_the_signature(server):
    status, body = request(predict_url(server), {"signature_name": "classify", "inputs": {"texts": ["a"] * 5}})
    assert status == 400 and "holds 5 rows, more than this server's limit of 4 (--max-batch-size)" in body["error"]
    status, body = request(predict_url(server, ":classify"), {"instances": ["a"]})
    assert status == 400 and body["error"].endswith('use :predict with "signature_name": "classify"')
    status, body = request(predict_url(server, "/metadata"))
    signature = body["metadata"]["signature_def"]["signature_def"]["classify"]
    assert status == 200 and set(signature["outputs"]) == {"label", "label_id", "probabilities", "labels"}
    assert signature["inputs"]["texts"]["dtype"] == "DT_STRING"


def test_export_names_the_classify_signature(classify_run, tmp_path, capsys):
    out = str(tmp_path / "again")
    assert cli.main(["export", "--run-dir", classify_run, "--out", out]) == 0
    assert "(signatures: classify = serving_default); serve it with: tfllm serve --model" in capsys.readouterr().out


def test_a_masked_lm_run_is_not_exported_and_nothing_is_written(tmp_path, capsys):
    masked = masked_lm_run(str(tmp_path / "masked"))
    out = tmp_path / "exports"
    assert cli.main(["export", "--run-dir", masked, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tfllm export: error: {masked} is a masked_lm run, and ")
    assert "masked_lm runs cannot be exported yet; try: tfllm train --config classify-tiny train.init_from=" in err
    assert not out.exists()
