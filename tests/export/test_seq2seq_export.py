"""The export of a seq2seq run: the same `generate` inputs as a causal LM's, sources in and
targets out, and `score(sources, targets)`, in a process with only TensorFlow and
tensorflow-text; `tfllm serve` answers it and refuses a causal-LM-only field."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from werkzeug.test import Client

from tfllm import cli
from tfllm.export.rest_api import RestApi
from tfllm.export.server import load_servable
from tfllm.generator import Generator
from tfllm.run import Run
from tfllm.samplers import GreedySampler

# A source longer than the encoder's 12-token context is cut to its first tokens on both paths.
SOURCES = ["a b c", "h g f e", "a", "b c d e f g h a"]
GREEDY = {"max_new_tokens": 11, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
SCORED = {"sources": ["a b c", "h g f e"], "targets": ["c b a", "e f g"]}

FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tensorflow-text ops

loaded = tf.saved_model.load(sys.argv[1])
calls, settings, scored = json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
types = {"max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32,
         "seed": tf.int32}
results = {"generate": [], "modules": None}
for prompts in calls:
    out = loaded.signatures["generate"](prompts=tf.constant(prompts),
                                        **{key: tf.constant(value, types[key]) for key, value in settings.items()})
    results["generate"].append([t.decode("utf-8") for t in out["text"].numpy()])
score = loaded.signatures["score"](sources=tf.constant(scored["sources"]), targets=tf.constant(scored["targets"]))
results["score"] = {key: value.numpy().tolist() for key, value in score.items()}
results["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tfllm", "keras_hub"))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def exported(seq2seq_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("seq2seq_export") / "reverse")
    assert cli.main(["export", "--run-dir", seq2seq_run, "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def fresh(exported):
    calls = [SOURCES[:1], SOURCES]
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, os.path.join(exported, "1"), json.dumps(calls),
                           json.dumps(GREEDY), json.dumps(SCORED)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(seq2seq_run):
    run = Run.open(seq2seq_run)
    return run, run.load_model()[0]


def test_the_fresh_process_gives_the_in_process_targets_at_two_batch_sizes(fresh, model):
    run, seq2seq = model
    generator = Generator(seq2seq, run.tokenizer, max_length=run.config.max_seq_len)
    for prompts, got in zip([SOURCES[:1], SOURCES], fresh["generate"]):
        assert got == generator.generate(prompts, GREEDY["max_new_tokens"], GreedySampler())
    assert fresh["generate"][1][:2] == ["c b a", "e f g h"]
    assert fresh["modules"] == []


def test_score_is_the_log_probability_of_each_target_given_its_source(fresh, model):
    run, seq2seq = model
    tokenizer = run.tokenizer
    for row, (source, target) in enumerate(zip(SCORED["sources"], SCORED["targets"])):
        source_ids = tokenizer.tokenize(tf.constant([source])).to_list()[0] + [tokenizer.eos_id]
        target_ids = tokenizer.tokenize(tf.constant([target])).to_list()[0] + [tokenizer.eos_id]
        decoder_ids = [tokenizer.start_id] + target_ids[:-1]
        logits = seq2seq({"encoder_token_ids": tf.constant([source_ids]),
                          "encoder_padding_mask": tf.ones((1, len(source_ids)), tf.int32),
                          "decoder_token_ids": tf.constant([decoder_ids]),
                          "decoder_padding_mask": tf.ones((1, len(decoder_ids)), tf.int32)}).numpy()[0]
        log_probabilities = logits - np.log(np.exp(logits.astype("float64")).sum(-1, keepdims=True))
        expected = sum(log_probabilities[i, token] for i, token in enumerate(target_ids))
        assert fresh["score"]["num_tokens"][row] == len(target_ids)
        assert fresh["score"]["log_probability"][row] == pytest.approx(expected, abs=1e-4)
    # The wrong target ("e f g" for "h g f e") is less probable than the right one.
    assert fresh["score"]["log_probability"][1] < fresh["score"]["log_probability"][0] - 1


def test_the_server_answers_targets_and_refuses_a_causal_lm_only_field(exported):
    client = Client(RestApi(load_servable(exported), max_body_bytes=1 << 20, max_batch_size=8, max_new_tokens=16))
    path = "/v1/models/reverse:predict"
    answer = client.post(path, json={"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a b c"]}})
    assert answer.status_code == 200 and answer.get_json()["outputs"]["text"] == ["c b a"]
    # A causal LM's `score` takes "texts"; a seq2seq export's takes sources and targets.
    refused = client.post(path, json={"signature_name": "score", "inputs": {"texts": ["a b c"]}})
    assert refused.status_code == 400 and "sources" in refused.get_json()["error"]
    refused = client.post(path, json={"signature_name": "generate",
                                      "inputs": {**GREEDY, "prompts": ["a b c"], "texts": ["a"]}})
    assert refused.status_code == 400
    assert refused.get_json()["error"].startswith("'inputs' holds ['texts'], which the signature does not take")
